"""The data plane as a plain ASGI application.

Request path: authenticate (key cache) → parse and validate the body → model enabled? → context
fits? → pick a node → forward (our HTTP/1.1 client for OpenAI-native nodes, LiteLLM otherwise), retrying another
node on connect errors and 5xx before the first byte → relay (SSE chunk by chunk) → one usage record.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from redis.exceptions import RedisError

from api.gateway import metrics, tokens
from api.gateway.adapter import LiteLLMAdapter
from api.gateway.auth import KeyCache
from api.gateway.calls import Call
from api.gateway.catalog import CatalogSnapshot
from api.gateway.h1 import Response
from api.gateway.metering import UsageMeter
from api.gateway.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    OpenAIError,
    invalid,
    model_not_found,
    parse,
)
from api.gateway.ratelimit import Admission, Layer, Limiter, duration
from api.gateway.registry import NodeRegistry, NodeView
from api.gateway.upstream import SSEScanner, UpstreamFailure, UpstreamPool, prepare_body
from api.server import DISCONNECT_EXTENSION
from cic.limits import Limits
from cic.logs import request_id_var
from cic.services.keys import KeyIdentity

log = logging.getLogger("cic.gateway")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MAX_ATTEMPTS = 3
DEFAULT_RESERVED_OUTPUT = 256  # tokens reserved for a response of unstated length; settled to the real count
LEASE_RENEW_S = 20.0
NO_NODE_RETRY_AFTER_S = 5
LAYER_CACHE_MAX = 10_000  # identities whose limit layers are kept built
ROOMY_MAX = 100_000  # keys whose last admission's headroom is remembered

_ENDPOINTS: dict[str, tuple[str, type[Any], frozenset[str]]] = {
    # path tail: (endpoint name, request model, model kinds it serves)
    "chat/completions": ("chat.completions", ChatCompletionRequest, frozenset({"chat"})),
    "completions": ("completions", CompletionRequest, frozenset({"chat", "completion"})),
    "embeddings": ("embeddings", EmbeddingRequest, frozenset({"embedding"})),
}
_JSON = [(b"content-type", b"application/json")]


@dataclass(frozen=True)
class Shedding:
    """When every candidate node reports this many waiting requests, shared traffic waits up to
    ``queue_s`` for room, then is refused with 503 and ``retry-after``."""

    waiting_threshold: float = 16.0
    queue_s: float = 2.0
    retry_after_s: float = 2.0


class GatewayState:
    """Everything the data plane keeps in memory, built once per worker at start-up."""

    def __init__(
        self,
        keys: KeyCache,
        meter: UsageMeter,
        pool: UpstreamPool,
        adapter: LiteLLMAdapter,
        limiter: Limiter,
        *,
        global_limits: Limits | None = None,
        default_policy: str = "least_load",
        shed: Shedding | None = None,
        billing_grace_s: float = 7 * 86400,
        limits_overlap: bool = True,
    ) -> None:
        self.keys = keys
        self.meter = meter
        self.pool = pool
        self.adapter = adapter
        self.limiter = limiter
        self.global_limits = global_limits or Limits()
        self.registry = NodeRegistry(default_policy=default_policy)
        self.shed = shed or Shedding()
        self.billing_grace_s = billing_grace_s
        self.limits_overlap = limits_overlap
        self.catalog = CatalogSnapshot(models={}, prices={})


class Gateway:
    def __init__(self, state: GatewayState) -> None:
        self.s = state
        # id(identity) -> (identity, global limits, its layers): the key cache hands out one identity object
        # per key until the key is reloaded; holding it keeps its id from being reused meanwhile.
        self._layer_cache: dict[int, tuple[KeyIdentity, Limits, tuple[Layer, ...]]] = {}
        # key id -> whether its last admission in this worker left ample room (see _admit)
        self._roomy: dict[str, bool] = {}

    # --- entry ---------------------------------------------------------------------------------

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send, tail: str, tenant: tuple[str, str] | None
    ) -> None:
        rid = f"req_{os.urandom(12).hex()}"  # always ours: usage records are unique by it
        token = request_id_var.set(rid)
        try:
            try:
                ident = await self.s.keys.authenticate(_header(scope, b"authorization"))
                if tenant is not None:
                    _check_tenant(ident, tenant)
                await self._route(scope, receive, send, rid, ident, tail)
            except OpenAIError as err:
                await _send_error(send, err, rid)
            except ClientGone:
                return
        finally:
            request_id_var.reset(token)

    async def _route(self, scope: Scope, receive: Receive, send: Send, rid: str, ident: KeyIdentity, tail: str) -> None:
        method = scope["method"]
        if tail == "models" or tail.startswith("models/"):
            if method != "GET":
                raise OpenAIError(405, f"Method {method} is not allowed on /v1/{tail}.", "invalid_request_error")
            await self._models(send, rid, ident, tail[len("models/") :] if "/" in tail else None)
            return
        route = _ENDPOINTS.get(tail)
        if route is None:
            raise OpenAIError(
                404, f"Unknown request URL: {method} /v1/{tail}.", "invalid_request_error", code="unknown_url"
            )
        if method != "POST":
            raise OpenAIError(405, f"Method {method} is not allowed on /v1/{tail}; use POST.", "invalid_request_error")
        endpoint, model_cls, kinds = route
        body = await _read_body(receive)
        req = parse(model_cls, body)
        await self._infer(scope, receive, send, rid, ident, endpoint, kinds, tail, req, body)

    # --- /v1/models ----------------------------------------------------------------------------

    async def _models(self, send: Send, rid: str, ident: KeyIdentity, model_id: str | None) -> None:
        visible = [m for m in ident.models if ident.may_use(m) and m in self.s.catalog.models]

        def card(m: str) -> dict[str, Any]:
            return {"id": m, "object": "model", "created": self.s.catalog.models[m].created, "owned_by": "crosslogic"}

        if model_id is None:
            payload = {"object": "list", "data": [card(m) for m in visible]}
        elif model_id in visible:
            payload = card(model_id)
        else:
            raise model_not_found(model_id)
        await _send_json(send, 200, orjson.dumps(payload), rid)

    # --- inference -----------------------------------------------------------------------------

    async def _infer(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        rid: str,
        ident: KeyIdentity,
        endpoint: str,
        kinds: frozenset[str],
        tail: str,
        req: Any,
        body: bytes,
    ) -> None:
        stream = bool(getattr(req, "stream", False))
        opts = getattr(req, "stream_options", None)
        call = Call(
            rid,
            ident,
            endpoint,
            req.model,
            stream,
            client_wants_usage=bool(stream and opts is not None and opts.include_usage),
        )
        metrics.TALLY.in_flight += 1
        try:
            if (
                ident.past_due_since is not None
                and time.time() >= ident.past_due_since.timestamp() + self.s.billing_grace_s
            ):
                raise payment_overdue()
            if not ident.may_use(req.model) or req.model not in self.s.catalog.models:
                raise model_not_found(req.model)
            info = self.s.catalog.models[req.model]
            if info.kind not in kinds:
                raise invalid(
                    f"The model `{req.model}` is a {info.kind} model and cannot be used with /v1/{tail}.",
                    param="model",
                    code="model_not_supported",
                )
            call.prompt_text = req.prompt_text()
            call.messages = len(req.messages) if isinstance(req, ChatCompletionRequest) else 0
            tokens.check_context(call.prompt_text, call.messages, req.max_output_tokens(), info.context_length)
            await self._admit(call, req)
            await self._run_cancellable(scope, receive, send, call, tail, req, body)
        except OpenAIError as err:
            call.fail(err.status, err.code)
            if not call.response_started:
                await _send_error(send, err, rid, call.headers)
        finally:
            metrics.TALLY.in_flight -= 1
            if call.pending is not None or call.deferred is not None:
                self._abandon(call)
            self._meter(call)
            if call.admission is not None:
                await self._settle(call)

    # --- limits --------------------------------------------------------------------------------

    def _layers(self, ident: KeyIdentity) -> tuple[Layer, ...]:
        glob = self.s.global_limits
        cached = self._layer_cache.get(id(ident))
        if cached is not None and cached[0] is ident and cached[1] is glob:
            return cached[2]
        candidates = (
            Layer("global", "all", glob),
            Layer("organization", ident.org_id, ident.org_limits),
            Layer("environment", ident.environment_id, ident.env_limits),
            Layer("key", ident.key_id, ident.key_limits),
        )
        layers = tuple(layer for layer in candidates if not layer.limits.empty)
        if len(self._layer_cache) >= LAYER_CACHE_MAX:
            self._layer_cache.clear()
        self._layer_cache[id(ident)] = (ident, glob, layers)
        return layers

    async def _admit(self, call: Call, req: Any) -> None:
        """One round trip checks and charges every layer; refusal is OpenAI's 429 naming the layer.

        When every node that could serve the model is saturated, an org's reserved capacity admits its
        traffic up to the reservation; everything else (shared traffic, or reserved traffic above its
        rate) waits briefly for room and is then shed with 503 and ``retry-after``, before nodes time out.
        """
        ident = call.identity
        layers = self._layers(ident)
        saturated = self.s.registry.saturated(
            call.model,
            ident.region,
            cross_region=ident.allow_cross_region,
            waiting_threshold=self.s.shed.waiting_threshold,
        )
        if saturated:
            reserved = ident.reservations.get((call.model, ident.region))
            if reserved:
                layers += (
                    Layer("reservation", f"{ident.org_id}:{call.model}:{ident.region}", Limits(tpm=reserved * 60)),
                )
            else:
                await self._wait_for_room(call)
        if not layers:
            return
        out = req.max_output_tokens()
        cost = (
            len(call.prompt_text) // 4
            + call.messages * tokens.TEMPLATE_TOKENS_PER_MESSAGE
            + (out if out is not None else DEFAULT_RESERVED_OUTPUT)
        )
        if (
            self.s.limits_overlap
            and not saturated
            and self._roomy.get(ident.key_id, False)
            and not any(layer.limits.max_concurrency for layer in layers)
        ):
            # Written to Redis right after the node's request, its reply awaited before the node's (_confirm).
            call.deferred, call.pending_cost = layers, cost
            return
        started = time.perf_counter()
        adm = await self.s.limiter.admit(layers, cost, call.request_id)
        metrics.TALLY.observe(metrics.ADMISSION, time.perf_counter() - started)
        if not adm.allowed and adm.layer is not None and adm.layer.name == "reservation":
            # Above its reservation, reserved traffic is shared traffic: wait for room like the rest.
            await self._wait_for_room(call)
            layers = layers[:-1]
            if not layers:
                return
            adm = await self.s.limiter.admit(layers, cost, call.request_id)
        metrics.TALLY.observe(metrics.LIMITER_WAIT, time.perf_counter() - started)
        self._decide(call, adm, cost)

    def _decide(self, call: Call, adm: Admission, cost: int) -> None:
        """Act on an admission: 429 if refused, else the response's x-ratelimit headers.

        Also remembers whether the key has room to spare: only then is its next admission overlapped with
        forwarding. A key near or over a limit (or a new key) reaches a node only once admitted; a key with
        room reaches it while its admission runs, and is cut off there if other workers used up that room."""
        roomy = self._roomy
        if len(roomy) >= ROOMY_MAX:
            roomy.clear()
        roomy[call.identity.key_id] = adm.allowed and (
            (adm.limit_requests < 0 or adm.remaining_requests >= max(2, adm.limit_requests // 10))
            and (adm.limit_tokens < 0 or adm.remaining_tokens >= max(2 * cost, adm.limit_tokens // 10))
        )
        if not adm.allowed:
            call.node_id, call.region = None, ""  # an overlapped request was already given a node
            assert adm.layer is not None and adm.kind is not None
            metrics.RATE_LIMITED.labels(adm.layer.name, adm.kind).inc()
            raise rate_limited(adm, cost)
        call.admission = adm
        call.headers = adm.headers()

    async def _confirm(self, call: Call, *, overlapped: bool = False) -> None:
        """Send an overlapped admission (once the node has the request) and wait for it; refused, nothing
        the node did reaches the client."""
        if call.deferred is not None:
            layers, call.deferred = call.deferred, None
            pending = self.s.limiter.send(layers, call.pending_cost, call.request_id)
            if pending is None:  # Redis not connected (or known down): the plain admission, awaited below
                pending = asyncio.ensure_future(self.s.limiter.admit(layers, call.pending_cost, call.request_id))
            call.pending = pending
            pending.add_done_callback(_AdmissionTimer())
        pending = call.pending
        if pending is None:
            return
        started = time.perf_counter()
        if not pending.done():
            await pending  # cancelled (the client left), the limiter gives back what it admits
        call.pending = None
        if not overlapped:  # else the caller knows what the wait cost: see _forward_native
            metrics.TALLY.observe(metrics.LIMITER_WAIT, time.perf_counter() - started)
        self._decide(call, pending.result(), call.pending_cost)

    def _abandon(self, call: Call) -> None:
        """The request ended before its admission was confirmed: give back what the admission took."""
        pending, call.pending, call.deferred = call.pending, None, None
        call.node_id = None  # never admitted: no work of a node is billed
        if pending is None:  # never sent
            return
        if not pending.done():
            pending.cancel()  # an admission from the limiter's send is settled when Redis answers
        elif not pending.cancelled() and pending.exception() is None and pending.result().allowed:
            call.admission = pending.result()  # settled in _infer with what was used: nothing

    async def _wait_for_room(self, call: Call) -> None:
        ident, shed = call.identity, self.s.shed
        loop = asyncio.get_running_loop()
        deadline = loop.time() + shed.queue_s
        while self.s.registry.saturated(
            call.model, ident.region, cross_region=ident.allow_cross_region, waiting_threshold=shed.waiting_threshold
        ):
            if loop.time() >= deadline:
                metrics.SHED.labels(call.model if call.model in self.s.catalog.models else "unknown").inc()
                raise OpenAIError(
                    503,
                    f"`{call.model}` is at capacity right now; please retry shortly.",
                    "service_unavailable",
                    code="capacity_exhausted",
                    headers={"retry-after": str(max(1, math.ceil(shed.retry_after_s)))},
                )
            await asyncio.sleep(0.05)

    async def _settle(self, call: Call) -> None:
        """Give back what was reserved and not used; free the concurrency slot."""
        assert call.admission is not None
        try:
            await self.s.limiter.settle(
                call.admission, call.prompt_tokens + call.completion_tokens, call.cost_picousd, wait=False
            )
        except (RedisError, OSError) as exc:  # the lease expires by itself
            log.warning("could not settle rate-limit reservation: %s", exc)

    async def _run_cancellable(
        self, scope: Scope, receive: Receive, send: Send, call: Call, tail: str, req: Any, body: bytes
    ) -> None:
        """Forward, and cancel the upstream call the moment the client goes away.

        The forwarding runs in this task; a watcher task waits for the client's disconnect and cancels
        this one (only while forwarding is still under way, so the cancellation lands inside it)."""
        task = asyncio.current_task()
        assert task is not None
        watch = _DisconnectWatch(scope, receive, task, call)

        async def sending(message: Message) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                watch.running = False  # answered in full: the server's disconnect notice is not the client leaving

        try:
            await self._dispatch(sending, call, tail, req, body)
        except asyncio.CancelledError:
            watch.running = False
            if not watch.cancelled:
                raise  # the server is stopping, not the client leaving
            task.uncancel()
            call.fail(499, "client_disconnected", status="cancelled")
            log.info("client disconnected", extra={"model": call.model, "chunks": call.completion_tokens})
        except (OpenAIError, UpstreamFailure, OSError):
            watch.running = False
            if not (watch.gone and call.stream_done):
                raise
            # The client hung up after reading [DONE] (the SDK does): the request completed.
        finally:
            watch.running = False
            watch.stop()

    async def _dispatch(self, send: Send, call: Call, tail: str, req: Any, body: bytes) -> None:
        ident = call.identity
        registry = self.s.registry
        policy = getattr(ident, "routing_policy", None)
        prefix_key = call.prompt_text[:256]  # what prefix affinity keys on: requests sharing it share KV blocks
        user = getattr(req, "user", None)
        session_id = user if isinstance(user, str) and user else None
        tried: set[str] = set()
        last: UpstreamFailure | None = None
        for _ in range(MAX_ATTEMPTS):
            node = registry.pick(
                call.model,
                ident.region,
                cross_region=ident.allow_cross_region,
                exclude=frozenset(tried),
                policy=policy,
                prefix_key=prefix_key,
                session_id=session_id,
            )
            if node is None:
                break
            if not node.native:
                await self._confirm(call)  # LiteLLM's call is not split: admitted first, then forwarded
            tried.add(node.id)
            call.node_id, call.region = node.id, node.region
            registry.in_flight[node.id] += 1
            began = time.perf_counter()
            ok: bool | None = None  # stays None when the attempt is cancelled (client gone): no verdict on the node
            try:
                if node.native:
                    await self._forward_native(send, call, node, tail, req, body)
                else:
                    await self.s.adapter.forward(
                        send, call, node, tail, req, [*_response_headers(call.request_id), *call.headers]
                    )
                # A node's own 4xx is the request's fault; a 5xx or a stream that broke is the node's.
                ok = not (call.status == "error" and call.http_status >= 500)
                return
            except UpstreamFailure as failure:
                ok = False
                last = failure
                metrics.UPSTREAM_ERRORS.labels(call.model, failure.reason.split(":")[0][:40]).inc()
                log.warning(
                    "node failed before first byte, trying another", extra={"node": node.id, "reason": failure.reason}
                )
            finally:
                registry.in_flight[node.id] -= 1
                if ok is not None:
                    # TTFT of this attempt, for streams only (a whole JSON body is not a first token).
                    first = call.ttft_s - (began - call.started) if call.stream and call.ttft_s is not None else None
                    registry.observe(node.id, ok=ok, latency_s=time.perf_counter() - began, ttft_s=first)
        await self._confirm(call)  # over its limits, a request hears 429 rather than 503 / 502
        if not tried:
            raise OpenAIError(
                503,
                f"No capacity for `{call.model}` in {ident.region} right now; please retry.",
                "service_unavailable",
                code="no_healthy_node",
                headers={"retry-after": str(NO_NODE_RETRY_AFTER_S)},
            )
        call.node_id = None
        raise OpenAIError(
            502,
            "The model server failed to answer; please retry.",
            "api_error",
            code="upstream_error",
            headers={"retry-after": "1"},
        ) from last

    async def _forward_native(self, send: Send, call: Call, node: NodeView, tail: str, req: Any, body: bytes) -> None:
        upstream_body = prepare_body(body, None, stream=call.stream, served_model=node.served_model, model=call.model)
        overlapped = call.deferred is not None
        confirm = functools.partial(self._confirm, call, overlapped=True) if overlapped else None
        resp = await self.s.pool.open(node, f"/v1/{tail}", upstream_body, confirm)
        if overlapped:  # what the limiter cost this request: how long the node's answer waited for it
            metrics.TALLY.observe(metrics.LIMITER_WAIT, resp.held_s)
        try:
            if resp.status != 200:
                payload = await resp.read()
                call.fail(resp.status, "upstream_rejected")
                call.response_started = True
                await _send_json(
                    send, resp.status, _openai_error_body(payload, resp.status), call.request_id, raw=call.headers
                )
                return
            if call.stream:
                await self._relay_stream(send, call, node, resp)
            else:
                await self._relay_json(send, call, node, resp)
        except asyncio.CancelledError:
            resp.close()  # the client went away: closing the connection stops the node's generation
            raise
        finally:
            resp.release()

    async def _relay_json(self, send: Send, call: Call, node: NodeView, resp: Response) -> None:
        try:
            payload = await resp.read()
        except (OSError, TimeoutError) as exc:
            raise UpstreamFailure(f"{type(exc).__name__}: {exc}") from exc
        call.mark_first_byte()
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise UpstreamFailure("invalid JSON from node") from exc
        call.take_usage(data.get("usage"))
        if node.served_model != call.model:
            data["model"] = call.model
            payload = orjson.dumps(data)
        call.response_started = True
        await _send_json(send, 200, payload, call.request_id, raw=call.headers)

    async def _relay_stream(self, send: Send, call: Call, node: NodeView, resp: Response) -> None:
        rename = node.served_model != call.model
        scanner = SSEScanner(
            client_wants_usage=call.client_wants_usage,
            model_from=b'"model":"' + node.served_model.encode() + b'"' if rename else b"",
            model_to=b'"model":"' + call.model.encode() + b'"' if rename else b"",
        )
        last = b""  # the events that end the stream go out with the end of the response: one write
        try:
            while (data := await resp.next_chunk()) is not None:
                if not call.response_started:
                    call.mark_first_byte()
                    call.response_started = True
                    await send(
                        {
                            "type": "http.response.start",
                            "status": 200,
                            "headers": [*_response_headers(call.request_id, sse=True), *call.headers],
                        }
                    )
                out = scanner.feed(data)
                if scanner.done:
                    call.stream_done = True
                    last = out
                    break  # nothing follows [DONE]; clients hang up as soon as they read it
                if out:
                    await send({"type": "http.response.body", "body": out, "more_body": True})
                if call.admission is not None and time.monotonic() - call.lease_renewed > LEASE_RENEW_S:
                    call.lease_renewed = time.monotonic()  # a long stream keeps its concurrency slot
                    await self.s.limiter.renew(call.admission)
        except (OSError, TimeoutError) as exc:
            if not call.response_started:
                raise UpstreamFailure(f"{type(exc).__name__}: {exc}") from exc
            call.fail(502, "upstream_stream_broken")
            log.warning("stream from node broke mid-way", extra={"node": node.id, "error": str(exc)})
        finally:
            call.completion_tokens = scanner.chunks
            call.take_usage(scanner.usage)
        if not call.response_started:
            raise UpstreamFailure("empty response from node")
        rest = scanner.tail()
        if not scanner.done and call.status == "ok":
            call.fail(502, "upstream_stream_truncated")
        await send({"type": "http.response.body", "body": last + rest if rest else last, "more_body": False})

    # --- metering ------------------------------------------------------------------------------

    def _meter(self, call: Call) -> None:
        rejected = call.status == "error" and 400 <= call.http_status < 500  # the node refused it: no work done
        if not call.usage_exact and call.node_id is not None and call.prompt_text and not rejected:
            # The node reported no usage (client gone, stream broken): count the prompt ourselves;
            # the generated tokens are the content chunks that were relayed.
            call.prompt_tokens = tokens.estimate_prompt_tokens(call.prompt_text, call.messages)
        price = self.s.catalog.price(call.model, call.region, call.created_at.timestamp()) if call.region else None
        row = call.row(price)
        call.cost_picousd = row["cost_picousd"]
        self.s.meter.record(row)
        elapsed = time.perf_counter() - call.started
        # Label values come from the catalog only: a client's made-up model names must not grow the metrics.
        model = call.model if call.model in self.s.catalog.models else "unknown"
        metrics.TALLY.inc(metrics.REQUESTS, (call.endpoint, model, str(call.http_status)))
        metrics.TALLY.observe(metrics.LATENCY, elapsed, (call.endpoint, model))
        if call.ttft_s is not None and call.stream:
            metrics.TALLY.observe(metrics.TTFT, call.ttft_s, (model,))
        if call.prompt_tokens:
            metrics.TALLY.inc(metrics.TOKENS, (model, call.identity.org_id, "prompt"), call.prompt_tokens)
        if call.completion_tokens:
            metrics.TALLY.inc(metrics.TOKENS, (model, call.identity.org_id, "completion"), call.completion_tokens)


# --- helpers -----------------------------------------------------------------------------------


def _check_tenant(ident: KeyIdentity, tenant: tuple[str, str]) -> None:
    org, env = tenant
    if org not in (ident.org_slug, ident.org_id) or env not in (ident.environment, ident.environment_id):
        raise OpenAIError(
            401,
            f"This API key does not belong to {org}/{env}; use the base URL of the key's environment.",
            "invalid_request_error",
            code="invalid_api_key",
        )


def _header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope["headers"]:
        if k == name:
            return str(v.decode("latin-1"))
    return None


def payment_overdue() -> OpenAIError:
    """OpenAI's answer when an account cannot pay: 429 ``insufficient_quota``."""
    return OpenAIError(
        429,
        "You exceeded your current quota, please check your plan and billing details: the last payment for this "
        "organization failed and its grace period is over. Update the payment method on the billing page.",
        "insufficient_quota",
        code="insufficient_quota",
    )


def rate_limited(adm: Admission, cost: int) -> OpenAIError:
    """OpenAI's 429: ``type`` is ``requests`` or ``tokens`` and the message names the layer and the limit."""
    assert adm.layer is not None and adm.kind is not None
    where = "the platform" if adm.layer.name == "global" else f"{adm.layer.name} {adm.layer.id}"
    if adm.kind == "budget":
        return OpenAIError(
            429,
            f"You exceeded your current quota: the monthly budget of {where} "
            f"(${adm.limit / 10**12:,.2f}) is spent. Raise the budget, or wait for the next month.",
            "insufficient_quota",
            code="insufficient_quota",
        )
    what = {
        "requests": "requests per min (RPM)",
        "tokens": "tokens per min (TPM)",
        "tokens_per_day": "tokens per day (TPD)",
        "concurrency": "concurrent requests",
    }[adm.kind]
    kind = "tokens" if adm.kind in ("tokens", "tokens_per_day") else "requests"
    requested = cost if kind == "tokens" else 1
    if adm.retry_ms < 0:
        return OpenAIError(
            429,
            f"Request too large for {what} in {where}: Limit {adm.limit}, Requested {requested}. "
            "Reduce the prompt or max_tokens, or ask for a higher limit.",
            kind,
            code="rate_limit_exceeded",
        )
    retry = duration(adm.retry_ms)
    return OpenAIError(
        429,
        f"Rate limit reached for {what} in {where}: Limit {adm.limit}, Used {adm.used}, Requested {requested}. "
        f"Please try again in {retry}.",
        kind,
        code="rate_limit_exceeded",
        headers={
            "retry-after": str(max(1, math.ceil(adm.retry_ms / 1000))),
            "retry-after-ms": str(adm.retry_ms),
            f"x-ratelimit-limit-{kind}": str(adm.limit),
            f"x-ratelimit-remaining-{kind}": "0",
            f"x-ratelimit-reset-{kind}": retry,
        },
    )


class ClientGone(Exception):
    """The client disconnected before its request body arrived."""


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


class _AdmissionTimer:
    """Observes an overlapped admission's round trip when its outcome is in."""

    __slots__ = ("started",)

    def __init__(self) -> None:
        self.started = time.perf_counter()

    def __call__(self, _: asyncio.Future[Admission]) -> None:
        metrics.TALLY.observe(metrics.ADMISSION, time.perf_counter() - self.started)


class _DisconnectWatch:
    """Cancels ``task`` when the client goes away while it is still forwarding, unless the client had
    already read the whole stream (``[DONE]``).

    Under the API's own server protocol (api/server.py) the connection calls back when it is lost; under
    any other ASGI server a watcher task waits for ``http.disconnect`` from ``receive``."""

    __slots__ = ("call", "cancelled", "gone", "running", "task", "watcher")

    def __init__(self, scope: Scope, receive: Receive, task: asyncio.Task[Any], call: Call) -> None:
        self.task = task
        self.call = call
        self.running = True
        self.gone = False
        self.cancelled = False
        extensions = scope.get("extensions") or {}
        hook = extensions.get(DISCONNECT_EXTENSION)
        if hook is not None:
            self.watcher: asyncio.Future[None] | None = None
            hook(self._gone)
        else:
            self.watcher = asyncio.ensure_future(self._watch(receive))

    async def _watch(self, receive: Receive) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
        self._gone()

    def _gone(self) -> None:
        self.gone = True
        if self.running and not self.call.stream_done:
            self.cancelled = True
            self.task.cancel()

    def stop(self) -> None:
        if self.watcher is not None and not self.watcher.done():
            self.watcher.cancel()


def _response_headers(rid: str, *, sse: bool = False) -> list[tuple[bytes, bytes]]:
    if sse:
        return [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
            (b"x-request-id", rid.encode()),
        ]
    return [*_JSON, (b"x-request-id", rid.encode())]


async def _send_json(
    send: Send,
    status: int,
    body: bytes,
    rid: str,
    extra: dict[str, str] | None = None,
    raw: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    headers = [*_JSON, (b"content-length", str(len(body)).encode()), (b"x-request-id", rid.encode())]
    if extra:
        headers.extend((k.encode(), v.encode()) for k, v in extra.items())
    headers.extend(raw)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _send_error(send: Send, err: OpenAIError, rid: str, raw: Sequence[tuple[bytes, bytes]] = ()) -> None:
    await _send_json(send, err.status, err.body(), rid, err.headers, raw)


def _openai_error_body(payload: bytes, status: int) -> bytes:
    """A node's error in OpenAI's shape (older vLLM answers ``{"object": "error", "message": …}``)."""
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        data = data["error"]  # vLLM ≥ 0.9: OpenAI's envelope, but its own type names and an integer code
    message = str(
        (data.get("message") if isinstance(data, dict) else None)
        or payload[:500].decode(errors="replace")
        or "Upstream error."
    )
    param = data.get("param") if isinstance(data, dict) else None
    code = data.get("code") if isinstance(data, dict) else None
    if not isinstance(code, str):
        code = None
    if "maximum context length" in message:
        code, param = "context_length_exceeded", "messages"
    return OpenAIError(
        status,
        message,
        "invalid_request_error" if status < 500 else "api_error",
        param=param if isinstance(param, str) else None,
        code=code,
    ).body()
