"""The simulator's HTTP endpoints (aiohttp handlers): admission, faults, generation, streaming, metrics.

State lives in the `Simulator` on the app (``app[SIM_KEY]``); request rules are in `agent.sim_core`, the wire
shapes in `agent.sim_protocol`. See `agent.simulator` for the behaviour as a whole.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Final

import orjson
from aiohttp import web

from agent.sim_config import ConfigError, config_dict
from agent.sim_core import ApiError, GenerationRequest, Simulator, parse_chat, parse_completion, parse_embedding
from agent.sim_embeddings import embed_text, embed_tokens, encode_base64
from agent.sim_faults import Fault
from agent.sim_metrics import render_metrics
from agent.sim_protocol import (
    SSE_DONE,
    StreamChunks,
    chat_completion,
    embedding_list,
    error_body,
    model_list,
    now,
    request_id,
    text_completion,
    usage,
)
from agent.sim_tokens import generated_text

VLLM_VERSION: Final = "0.11.0"
SIM_KEY: Final = web.AppKey("simulator", Simulator)
_JSON: Final = "application/json"
_SSE_HEADERS: Final = {"Content-Type": "text/event-stream; charset=utf-8"}
_METRICS_HEADERS: Final = {"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}
_HANG_POLL_S: Final = 0.05

Handler = Callable[[Simulator, web.Request], Awaitable[web.StreamResponse]]


def _json(body: bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, content_type=_JSON)


def _abort(request: web.Request) -> web.Response:
    """A dead server: drop the connection without an answer."""
    if request.transport is not None:
        request.transport.abort()
    return web.Response(status=500)


async def _payload(request: web.Request) -> dict[str, Any]:
    try:
        payload = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise ApiError("JSON decode error: the request body is not valid JSON") from None
    if not isinstance(payload, dict):
        raise ApiError("The request body must be a JSON object")
    return payload


def _inference(handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """The admission steps every inference endpoint shares: dead, warming up, bad request, injected faults."""

    async def endpoint(request: web.Request) -> web.StreamResponse:
        sim = request.app[SIM_KEY]
        if sim.crashed:
            return _abort(request)
        sim.counters.requests_received += 1
        if not sim.ready():
            return _json(error_body("The server is starting up.", "ServiceUnavailableError", 503), 503)
        try:
            return await handler(sim, request)
        except ApiError as exc:
            return _json(exc.body, exc.code)

    return endpoint


async def _answered(sim: Simulator, request: web.Request, resp: web.StreamResponse) -> web.StreamResponse:
    """Count an answered request; when it is the one ``crash_after`` names, send it and then die."""
    if sim.answered():
        if not resp.prepared:
            await resp.prepare(request)
        await resp.write_eof()
        sim.crash()
    return resp


async def _hang(sim: Simulator, request: web.Request) -> web.StreamResponse:
    """Never answer: wait until the client goes away or the server stops, then drop the connection."""
    while not sim.closing:
        transport = request.transport
        if transport is None or transport.is_closing():
            break
        await asyncio.sleep(_HANG_POLL_S)
    return _abort(request)


async def _fault(sim: Simulator, request: web.Request) -> web.StreamResponse | None:
    fault = sim.roll_fault()
    if fault is Fault.NONE:
        return None
    if fault is Fault.ERROR:
        body = error_body("Internal server error", "InternalServerError", 500)
        return await _answered(sim, request, _json(body, 500))
    return await _hang(sim, request)


class _EventWriter:
    """Writes SSE events; with ``fail_stream_after`` set, aborts the connection once that many were sent."""

    def __init__(self, request: web.Request, resp: web.StreamResponse, limit: int | None) -> None:
        self.request = request
        self.resp = resp
        self.limit = limit
        self.sent = 0

    async def send(self, events: list[bytes]) -> bool:
        """False when the stream was cut (the injected failure)."""
        limit = self.limit
        if limit is not None and self.sent + len(events) > limit:
            keep = limit - self.sent
            if keep > 0:
                await self.resp.write(b"".join(events[:keep]))
            self.sent = limit
            if self.request.transport is not None:
                self.request.transport.abort()
            return False
        await self.resp.write(b"".join(events))
        self.sent += len(events)
        return True


async def _generate(sim: Simulator, request: web.Request, gen: GenerationRequest, *, chat: bool) -> web.StreamResponse:
    if (faulted := await _fault(sim, request)) is not None:
        return faulted
    loop = asyncio.get_running_loop()
    arrived = loop.time()
    ttft, itl = sim.latency(sim.lookup_prefixes(gen.seqs))
    rid, created = request_id(), now()
    reserved = sum(s.prompt_tokens + s.max_tokens for s in gen.seqs)
    await sim.gate.acquire()
    sim.kv_tokens += reserved
    try:
        if gen.stream:
            timing = (arrived, ttft, itl)
            return await _stream(sim, request, gen, chat=chat, rid=rid, created=created, timing=timing)
        body = await _complete(sim, gen, chat=chat, rid=rid, created=created, timing=(arrived, ttft, itl))
    finally:
        sim.gate.release()
        sim.kv_tokens -= reserved
    return await _answered(sim, request, _json(body))


async def _complete(
    sim: Simulator, gen: GenerationRequest, *, chat: bool, rid: str, created: int, timing: tuple[float, float, float]
) -> bytes:
    """A non-streamed answer: sleep the whole generation time at once, then build the body."""
    arrived, ttft, itl = timing
    loop = asyncio.get_running_loop()
    decode = itl * (max(s.max_tokens for s in gen.seqs) - 1)
    if ttft or decode:
        try:
            await asyncio.sleep(ttft + decode)
        except asyncio.CancelledError:
            for _ in gen.seqs:
                sim.finish(0, 0, "abort", None, loop.time() - arrived)
            raise
    e2e = loop.time() - arrived
    prompt = completion = 0
    cached: int | None = None
    for seq in gen.seqs:
        sim.finish(seq.prompt_tokens, seq.max_tokens, seq.finish_reason, e2e - decode, e2e)
        prompt += seq.prompt_tokens
        completion += seq.max_tokens
        if seq.cached_tokens is not None:
            cached = (cached or 0) + seq.cached_tokens
    use = usage(prompt, completion, cached)
    model = sim.config.model
    if chat:
        seq = gen.seqs[0]
        return chat_completion(rid, created, model, generated_text(seq.max_tokens), seq.finish_reason, use)
    return text_completion(rid, created, model, [(s.max_tokens, s.finish_reason) for s in gen.seqs], use)


async def _stream(
    sim: Simulator,
    request: web.Request,
    gen: GenerationRequest,
    *,
    chat: bool,
    rid: str,
    created: int,
    timing: tuple[float, float, float],
) -> web.StreamResponse:
    """A streamed answer: the role event, one event per token (the last with the finish reason), usage, [DONE]."""
    arrived, ttft, itl = timing
    config = sim.config
    seqs = gen.seqs
    chunks = StreamChunks(chat=chat, rid=rid, created=created, model=config.model, continuous=gen.continuous_usage)
    prompt = sum(s.prompt_tokens for s in seqs)
    cached = [s.cached_tokens for s in seqs if s.cached_tokens is not None]
    head = [chunks.role(prompt)] if chat else []
    tail = [chunks.usage(usage(prompt, sum(s.max_tokens for s in seqs), sum(cached) if cached else None))]
    tail = (tail if gen.include_usage else []) + [SSE_DONE]
    loop = asyncio.get_running_loop()
    timed = bool(ttft or itl)

    if not timed and config.fail_stream_after is None:  # the fast path: one body, no sleeping
        for index, seq in enumerate(seqs):
            head.extend(chunks.generation(seq.max_tokens, seq.finish_reason, index=index, prompt=seq.prompt_tokens))
        elapsed = loop.time() - arrived
        for seq in seqs:
            sim.finish(seq.prompt_tokens, seq.max_tokens, seq.finish_reason, elapsed, elapsed)
        return await _answered(sim, request, web.Response(body=b"".join(head + tail), headers=_SSE_HEADERS))

    resp = web.StreamResponse(headers=_SSE_HEADERS)
    await resp.prepare(request)
    writer = _EventWriter(request, resp, config.fail_stream_after)
    start = loop.time()
    pending = head
    produced = [0] * len(seqs)
    first: float | None = None
    completed = False
    try:
        k = 0
        for index, seq in enumerate(seqs):
            last = seq.max_tokens - 1
            for i in range(seq.max_tokens):
                if timed and (delay := start + ttft + k * itl - loop.time()) > 0:
                    await asyncio.sleep(delay)
                if first is None:
                    first = loop.time() - arrived
                finish = seq.finish_reason if i == last else None
                pending.append(chunks.token(i, index=index, prompt=seq.prompt_tokens, finish=finish))
                produced[index] = i + 1
                k += 1
                if timed:
                    if not await writer.send(pending):
                        return resp
                    pending = []
        if not await writer.send(pending + tail):
            return resp
        await resp.write_eof()
        completed = True
    except ConnectionResetError:  # the client went away
        return resp
    finally:
        elapsed = loop.time() - arrived
        for index, seq in enumerate(seqs):
            reason = seq.finish_reason if completed else "abort"
            sim.finish(seq.prompt_tokens if first is not None else 0, produced[index], reason, first, elapsed)
    return await _answered(sim, request, resp)


# -- endpoints ---------------------------------------------------------------------------------------------------


@_inference
async def chat_completions(sim: Simulator, request: web.Request) -> web.StreamResponse:
    return await _generate(sim, request, parse_chat(sim.config, await _payload(request)), chat=True)


@_inference
async def completions(sim: Simulator, request: web.Request) -> web.StreamResponse:
    return await _generate(sim, request, parse_completion(sim.config, await _payload(request)), chat=False)


@_inference
async def embeddings(sim: Simulator, request: web.Request) -> web.StreamResponse:
    config = sim.config
    req = parse_embedding(config, await _payload(request))
    if (faulted := await _fault(sim, request)) is not None:
        return faulted
    loop = asyncio.get_running_loop()
    arrived = loop.time()
    reserved = sum(req.prompt_tokens)
    await sim.gate.acquire()
    sim.kv_tokens += reserved
    try:
        ttft, _ = sim.latency()
        if ttft:
            await asyncio.sleep(ttft)
    finally:
        sim.gate.release()
        sim.kv_tokens -= reserved
    dim = config.embedding_dim
    vectors: list[Any] = [embed_text(x, dim) if isinstance(x, str) else embed_tokens(x, dim) for x in req.inputs]
    if req.base64:
        vectors = [encode_base64(v) for v in vectors]
    elapsed = loop.time() - arrived
    for n in req.prompt_tokens:
        sim.finish(n, 0, "stop", elapsed, elapsed)
    prompt = sum(req.prompt_tokens)
    body = embedding_list(request_id(), now(), config.model, vectors, usage(prompt, 0))
    return await _answered(sim, request, _json(body))


async def models(request: web.Request) -> web.StreamResponse:
    sim = request.app[SIM_KEY]
    return _json(model_list(sim.config.model, sim.config.max_model_len, sim.created))


async def health(request: web.Request) -> web.StreamResponse:
    sim = request.app[SIM_KEY]
    if sim.crashed:
        return _abort(request)
    return web.Response(status=200 if sim.ready() else 503)


async def version(request: web.Request) -> web.StreamResponse:
    return _json(orjson.dumps({"version": VLLM_VERSION}))


async def metrics(request: web.Request) -> web.StreamResponse:
    sim = request.app[SIM_KEY]
    text = render_metrics(sim.snapshot(), sim.config.model, legacy=sim.config.legacy_cache_metric)
    return web.Response(body=text.encode(), headers=_METRICS_HEADERS)


async def get_config(request: web.Request) -> web.StreamResponse:
    return _json(orjson.dumps(config_dict(request.app[SIM_KEY].config)))


async def patch_config(request: web.Request) -> web.StreamResponse:
    sim = request.app[SIM_KEY]
    try:
        config = sim.update(await _payload(request))
    except ApiError as exc:
        return _json(exc.body, exc.code)
    except ConfigError as exc:
        return _json(error_body(str(exc), param=exc.param), 400)
    return _json(orjson.dumps(config_dict(config)))


async def get_stats(request: web.Request) -> web.StreamResponse:
    stats = request.app[SIM_KEY].snapshot()
    fields = {k: v for k, v in vars(stats).items() if k not in ("ttft", "e2e")}
    return _json(orjson.dumps(fields))
