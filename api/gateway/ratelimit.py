"""Rate limits at four layers — global, org, environment, key — checked and charged together.

Every request costs one Redis round trip at admission (``ratelimit.lua``): all layers are checked and
charged only if all admit, so a refusal never consumes anyone's budget. Requests and tokens per minute
use a sliding window (two fixed one-minute windows, the previous one weighted by how much of it still
overlaps), tokens per day the UTC day, concurrency a set of leases that expire, so a worker killed
mid-request cannot leak a slot (streams renew their lease while they last).

Tokens are reserved at admission (prompt estimate + ``max_tokens``) and settled with the real usage when
the response ends, so token limits track what was used, not what was feared.

Without Redis, ``LocalLimiter`` applies the same rules in-process (one process only). When Redis fails
in a Redis deployment, ``FailoverLimiter`` falls back to in-process limits divided by the number of
workers (or fails open / closed, as configured), counts it, and returns to Redis when it answers.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol, cast

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError

from api.gateway import metrics
from api.gateway.resp import LuaScript, RespClient, encode_args
from cic.limits import Limits

log = logging.getLogger("cic.ratelimit")

MIN_MS = 60_000
DAY_MS = 86_400_000
LEASE_TTL_MS = 60_000
SETTLE_BATCH_S = 0.005  # the longest a settlement waits for an admission to carry it
ENCODED_LAYERS_MAX = 10_000  # layers whose script arguments are kept encoded (a worker's recent tenants)
_SCRIPT = (Path(__file__).with_name("ratelimit.lua")).read_text()

Kind = Literal["requests", "tokens", "tokens_per_day", "concurrency", "budget"]
PICO_PER_CENT = 10**10


@dataclass(frozen=True, slots=True)
class Layer:
    """One layer's limits for one request: ``name`` is global / organization / environment / key."""

    name: str
    id: str
    limits: Limits

    @property
    def prefix(self) -> str:
        return f"cic:rl:{self.name}:{self.id}"


@dataclass(slots=True)
class Admission:
    allowed: bool
    lease_id: str
    reserved: int
    window: int
    day: int
    layers: tuple[Layer, ...]
    month: str = ""  # the spend counters' month (UTC)
    # admitted: the tightest layer's figures for OpenAI's headers (-1: no such limit)
    remaining_requests: int = -1
    limit_requests: int = -1
    reset_requests_ms: int = 0
    remaining_tokens: int = -1
    limit_tokens: int = -1
    reset_tokens_ms: int = 0
    # refused: which layer, which limit
    layer: Layer | None = None
    kind: Kind | None = None
    limit: int = 0
    used: int = 0
    retry_ms: int = 0
    settled: bool = field(default=False)
    local: bool = False  # admitted by the in-process fallback: settle it there

    def headers(self) -> list[tuple[bytes, bytes]]:
        out: list[tuple[bytes, bytes]] = []
        if self.limit_requests >= 0:
            out += [
                (b"x-ratelimit-limit-requests", b"%d" % self.limit_requests),
                (b"x-ratelimit-remaining-requests", b"%d" % max(0, self.remaining_requests)),
                (b"x-ratelimit-reset-requests", duration(self.reset_requests_ms).encode()),
            ]
        if self.limit_tokens >= 0:
            out += [
                (b"x-ratelimit-limit-tokens", b"%d" % self.limit_tokens),
                (b"x-ratelimit-remaining-tokens", b"%d" % max(0, self.remaining_tokens)),
                (b"x-ratelimit-reset-tokens", duration(self.reset_tokens_ms).encode()),
            ]
        return out


def duration(ms: float) -> str:
    """OpenAI's reset format: ``"1s"``, ``"6m0s"``, ``"120ms"``."""
    if ms <= 0:
        return "0s"
    if ms < 1000:
        return f"{math.ceil(ms)}ms"
    s = ms / 1000
    if s < 60:
        return f"{s:.3g}s" if s < 10 and s != int(s) else f"{math.ceil(s)}s"
    m, sec = divmod(math.ceil(s), 60)
    if m < 60:
        return f"{m}m{sec}s"
    h, m = divmod(m, 60)
    return f"{h}h{m}m{sec}s"


class Limiter(Protocol):
    async def admit(
        self, layers: tuple[Layer, ...], cost: int, lease_id: str, now_ms: int | None = None
    ) -> Admission: ...

    def send(
        self, layers: tuple[Layer, ...], cost: int, lease_id: str, now_ms: int | None = None
    ) -> asyncio.Future[Admission] | None:
        """Start the admission now and return its outcome to await later; ``None``: not possible, use ``admit``."""
        ...

    async def settle(self, adm: Admission, actual: int, cost_picousd: int = 0, *, wait: bool = True) -> None: ...

    async def renew(self, adm: Admission) -> None: ...

    async def close(self) -> None: ...


def _encode_layer(layer: Layer) -> tuple[bytes, bytes]:
    """A layer's arguments to the admission script and to the settlement script, RESP-encoded."""
    lim = layer.limits
    budget = (lim.monthly_budget_cents or 0) * PICO_PER_CENT
    prefix = layer.prefix
    admit = encode_args([prefix, lim.rpm or 0, lim.tpm or 0, lim.tpd or 0, lim.max_concurrency or 0, budget])
    settle = encode_args(
        [
            prefix,
            int(bool(lim.tpm)),
            int(bool(lim.tpd)),
            int(bool(lim.max_concurrency)),
            int(bool(lim.monthly_budget_cents)),
        ]
    )
    return admit, settle


def month_of(now_ms: int) -> str:
    """The calendar month (UTC) a spend counter belongs to, e.g. ``202611``."""
    return _month_of_day(now_ms // DAY_MS)


@functools.lru_cache(maxsize=64)
def _month_of_day(day: int) -> str:
    return datetime.fromtimestamp(day * 86_400, UTC).strftime("%Y%m")


def _now_ms() -> int:
    return int(time.time() * 1000)


def _result(raw: list[object], layers: tuple[Layer, ...], cost: int, lease: str, now: int, month: str) -> Admission:
    if raw[0] == 1:  # admitted: the tightest layer's figures for the headers (integer replies)
        v = cast(list[int], raw)
        return Admission(
            True,
            lease,
            cost,
            now // MIN_MS,
            now // DAY_MS,
            layers,
            month,
            remaining_requests=v[1],
            limit_requests=v[2],
            reset_requests_ms=v[3],
            remaining_tokens=v[4],
            limit_tokens=v[5],
            reset_tokens_ms=v[6],
        )
    vals = [v.decode() if isinstance(v, bytes) else v for v in raw]
    adm = Admission(
        allowed=False,
        lease_id=lease,
        reserved=cost,
        window=now // MIN_MS,
        day=now // DAY_MS,
        layers=layers,
        month=month,
    )
    adm.layer = layers[int(vals[1]) - 1]  # type: ignore[call-overload]
    adm.kind = str(vals[2])  # type: ignore[assignment]
    adm.limit, adm.used, adm.retry_ms = (int(v) for v in vals[3:6])  # type: ignore[call-overload]
    adm.settled = True
    return adm


_SETTLE = """
local lease, win, day, delta, n = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local month, spend = ARGV[6], tonumber(ARGV[7])
for i = 0, n - 1 do
  local b = 8 + i * 5
  local p = ARGV[b]
  if spend > 0 and ARGV[b + 4] == '1' then
    local k = p .. ':$:' .. month
    redis.call('INCRBY', k, spend)
    redis.call('EXPIRE', k, 3456000)
  end
  if delta ~= 0 and ARGV[b + 1] == '1' then
    local k = p .. ':t:' .. win
    if redis.call('EXISTS', k) == 1 then redis.call('INCRBY', k, delta) end
  end
  if delta ~= 0 and ARGV[b + 2] == '1' then
    local k = p .. ':d:' .. day
    if redis.call('EXISTS', k) == 1 then redis.call('INCRBY', k, delta) end
  end
  if ARGV[b + 3] == '1' then redis.call('ZREM', p .. ':c', lease) end
end
return 1
"""

_RENEW = """
local lease, expiry, n = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
for i = 1, n do redis.call('ZADD', ARGV[3 + i], 'XX', expiry, lease) end
return 1
"""


@dataclass(slots=True)
class _Sent:
    """An admission written to Redis (with the settlements that rode along), its replies to come."""

    reply: asyncio.Future[Any]
    settling: list[asyncio.Future[Any]]
    pending: list[tuple[int, bytes]]
    argc: int
    argv: bytes
    layers: tuple[Layer, ...]
    cost: int
    lease_id: str
    now: int
    month: str
    missing: list[tuple[int, bytes]] = field(default_factory=list)  # settlements that met NOSCRIPT


class RedisLimiter:
    """The limits in Redis, shared by every worker and instance: one script run per admission.

    The scripts go over ``RespClient`` (one pipelined connection per worker, see ``api/gateway/resp.py``),
    not redis-py, whose per-command CPU cost was most of the admission's; given a redis-py client, the
    limiter opens its own connection to the same server and database. Each layer's script arguments are
    encoded once and kept (bounded) while its limits stay the same.
    """

    def __init__(self, client: aioredis.Redis | RespClient, *, lease_ttl_ms: int = LEASE_TTL_MS) -> None:
        self.lease_ttl_ms = lease_ttl_ms
        self._conn = client if isinstance(client, RespClient) else RespClient.like(client)
        self._admit = LuaScript(_SCRIPT)
        self._settle = LuaScript(_SETTLE)
        self._renew = LuaScript(_RENEW)
        self._ttl_arg = encode_args([lease_ttl_ms])
        self._encoded: dict[tuple[str, str], tuple[Limits, bytes, bytes]] = {}
        self._pending: list[tuple[int, bytes]] = []  # settlements not sent yet (they ride on the next admission)
        self._timer: asyncio.TimerHandle | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._background: set[asyncio.Future[None]] = set()

    def _layer_args(self, layer: Layer) -> tuple[Limits, bytes, bytes]:
        """(limits, admission arguments, settlement arguments), kept per layer while its limits hold."""
        key = (layer.name, layer.id)
        enc = self._encoded.get(key)
        if enc is None or (enc[0] is not layer.limits and enc[0] != layer.limits):
            if len(self._encoded) >= ENCODED_LAYERS_MAX:
                self._encoded.clear()
            enc = self._encoded[key] = (layer.limits, *_encode_layer(layer))
        return enc

    async def admit(self, layers: tuple[Layer, ...], cost: int, lease_id: str, now_ms: int | None = None) -> Admission:
        sent = self.write(layers, cost, lease_id, now_ms)
        if sent is None:  # no connection yet: open one, then write
            await self._conn.connect()
            sent = self.write(layers, cost, lease_id, now_ms)
            if sent is None:  # pragma: no cover - connect() returned a connection that closed at once
                raise RedisConnectionError("Redis connection is closed")
        return await self.receive(sent)

    def write(self, layers: tuple[Layer, ...], cost: int, lease_id: str, now_ms: int | None = None) -> _Sent | None:
        """Write the admission now, on the open connection (``None`` if there is none): the caller can do
        other work while the script runs, then take the outcome with ``receive`` (or ``outcome_now``)."""
        conn = self._conn.open_connection
        if conn is None:
            return None
        now = now_ms if now_ms is not None else _now_ms()
        month = month_of(now)
        parts = [encode_args((now, cost, lease_id)), self._ttl_arg, encode_args((len(layers), month))]
        for layer in layers:
            parts.append(self._layer_args(layer)[1])
        argc, argv = 6 + 6 * len(layers), b"".join(parts)
        if not self._pending:
            reply = conn.request(self._admit.packed(argc, argv))
            return _Sent(reply, [], [], argc, argv, layers, cost, lease_id, now, month)
        # Settlements waiting to be sent go first, in the same write: no round trip of their own, and this
        # admission already sees the slots and tokens they give back.
        pending, self._pending = self._pending, []
        futs = conn.pipeline([*(self._settle.packed(c, v) for c, v in pending), self._admit.packed(argc, argv)])
        return _Sent(futs.pop(), futs, pending, argc, argv, layers, cost, lease_id, now, month)

    def outcome_now(self, sent: _Sent) -> Admission | None:
        """The admission from its reply, without waiting, once ``sent.reply`` is done; ``None`` when it needs
        another round trip (Redis had flushed its scripts). Raises what the connection failed with."""
        missing: list[tuple[int, bytes]] = []
        failed: list[BaseException] = []
        # Replies come in order: the settlements' are in by the time the admission's is.
        for call, fut in zip(sent.pending, sent.settling, strict=True):
            if fut.cancelled():
                continue
            exc = fut.exception()
            if isinstance(exc, NoScriptError):
                missing.append(call)
            elif exc is not None:
                failed.append(exc)
        exc = sent.reply.exception()
        if isinstance(exc, NoScriptError):
            sent.missing = missing  # receive() runs them again before the admission
            return None
        if missing:  # Redis lost the settlement script: those settlements run again whole
            task = asyncio.ensure_future(self._settle_again(missing))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        if exc is not None:
            raise exc
        if failed:  # this admission stands; those leases expire by themselves
            log.warning("could not settle %d rate-limit reservations: %s", len(failed), failed[0])
        return _result(sent.reply.result(), sent.layers, sent.cost, sent.lease_id, sent.now, sent.month)

    async def receive(self, sent: _Sent) -> Admission:
        """Wait for the admission's reply (and, for a flushed script cache, run it again whole)."""
        try:
            await asyncio.wait((sent.reply,))  # its error, if any, is raised by outcome_now
        except asyncio.CancelledError:  # the replies, when they come, are dropped
            for fut in (*sent.settling, sent.reply):
                fut.cancel()
            raise
        adm = self.outcome_now(sent)
        if adm is None:
            if sent.missing:  # first, so this admission sees what they give back
                await self._settle_again(sent.missing)
            raw = await self._conn.execute_packed(self._admit.packed(sent.argc, sent.argv, whole=True))
            adm = _result(raw, sent.layers, sent.cost, sent.lease_id, sent.now, sent.month)
        return adm

    async def _settled(self, calls: list[tuple[int, bytes]], replies: list[object]) -> None:
        """Check the replies of settlements sent together; those that met a flushed script cache run again."""
        missing = [calls[i] for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
        failed = [r for r in replies if isinstance(r, RedisError) and not isinstance(r, NoScriptError)]
        if missing:
            again = await self._settle.run_many(self._conn, missing)
            failed += [r for r in again if isinstance(r, RedisError)]
        if failed:
            log.warning("could not settle %d rate-limit reservations: %s", len(failed), failed[0])

    async def _settle_again(self, calls: list[tuple[int, bytes]]) -> None:
        """Run settlements that met NOSCRIPT again, whole; a failure is logged (the leases expire by themselves)."""
        try:
            await self._settled(calls, [NoScriptError()] * len(calls))
        except (RedisError, OSError) as exc:
            log.warning("could not settle %d rate-limit reservations: %s", len(calls), exc)

    async def settle(self, adm: Admission, actual: int, cost_picousd: int = 0, *, wait: bool = True) -> None:
        """Give back unused tokens, count the spend, free the lease. ``wait=False`` (the gateway, after the
        response is sent) queues it: the worker's next admission carries it in the same write, or, if none
        comes within ``SETTLE_BATCH_S``, it goes out with whatever else is queued."""
        if adm.settled:
            return
        adm.settled = True
        parts = [
            encode_args(
                (adm.lease_id, adm.window, adm.day, actual - adm.reserved, len(adm.layers), adm.month, cost_picousd)
            )
        ]
        for layer in adm.layers:
            parts.append(self._layer_args(layer)[2])
        call = (7 + 5 * len(adm.layers), b"".join(parts))
        if wait:
            await self._settle.run(self._conn, *call)
            return
        self._pending.append(call)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(SETTLE_BATCH_S, self._flush_due)

    def _flush_due(self) -> None:
        """No admission came along to carry the pending settlements within ``SETTLE_BATCH_S``: send them."""
        self._timer = None
        if self._pending and (self._flusher is None or self._flusher.done()):
            self._flusher = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:500], self._pending[500:]
            try:
                replies = await self._conn.pipeline_packed([self._settle.packed(c, v) for c, v in batch])
                await self._settled(batch, replies)
            except (RedisError, OSError) as exc:  # leases expire by themselves; tokens were reserved, not lost
                log.warning("could not settle %d rate-limit reservations: %s", len(batch), exc)

    async def close(self) -> None:
        """Settle what is pending and close the connection (a later call opens a new one)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._flusher is not None and not self._flusher.done():
            self._flusher.cancel()
        try:
            await self._flush()
        finally:
            await self._conn.aclose()

    async def renew(self, adm: Admission) -> None:
        keys = [f"{layer.prefix}:c" for layer in adm.layers if layer.limits.max_concurrency]
        if keys and not adm.settled:
            argv = encode_args([adm.lease_id, _now_ms() + self.lease_ttl_ms, len(keys), *keys])
            await self._renew.run(self._conn, 3 + len(keys), argv)


class LocalLimiter:
    """The same rules in process memory: for a single process without Redis, and as the fallback."""

    def __init__(self, divide_by: int = 1, *, lease_ttl_ms: int = LEASE_TTL_MS) -> None:
        self.divide_by = max(1, divide_by)
        self.lease_ttl_ms = lease_ttl_ms
        self._counts: dict[tuple[str, str, int], int] = {}
        self._spent: dict[tuple[str, str], int] = {}  # (layer prefix, month) -> pico-dollars
        self._leases: dict[str, dict[str, int]] = {}
        self._last_prune = 0

    def send(
        self, layers: tuple[Layer, ...], cost: int, lease_id: str, now_ms: int | None = None
    ) -> asyncio.Future[Admission] | None:
        return None  # admission here is a few dictionary lookups: nothing to overlap

    def _scaled(self, layer: Layer) -> Limits:
        if self.divide_by == 1:
            return layer.limits
        lim = layer.limits

        def part(v: int | None) -> int | None:
            return None if v is None else max(1, v // self.divide_by)

        # Rates and concurrency are shared by the workers; the month's budget is not a rate.
        return Limits(part(lim.rpm), part(lim.tpm), part(lim.tpd), part(lim.max_concurrency), lim.monthly_budget_cents)

    def _prune(self, win: int, day: int) -> None:
        if win == self._last_prune:
            return
        self._last_prune = win
        stale = [k for k in self._counts if (k[1] == "d" and k[2] < day) or (k[1] in "rt" and k[2] < win - 1)]
        for k in stale:
            del self._counts[k]

    async def admit(self, layers: tuple[Layer, ...], cost: int, lease_id: str, now_ms: int | None = None) -> Admission:
        now = now_ms if now_ms is not None else _now_ms()
        win, into, day = now // MIN_MS, now % MIN_MS, now // DAY_MS
        frac = into / MIN_MS
        self._prune(win, day)
        month = month_of(now)
        adm = Admission(allowed=True, lease_id=lease_id, reserved=cost, window=win, day=day, layers=layers, month=month)
        c = self._counts
        spent = self._spent

        def used(prefix: str, kind: str) -> tuple[float, int, int]:
            cur, prev = c.get((prefix, kind, win), 0), c.get((prefix, kind, win - 1), 0)
            return prev * (1 - frac) + cur, cur, prev

        def wait(limit: int, cur: int, prev: int, need: int) -> int:
            if cur + need <= limit:
                return 0 if prev <= 0 else max(0, math.ceil((1 - (limit - need - cur) / prev - frac) * MIN_MS))
            if need > limit:
                return -1
            return math.ceil((MIN_MS - into) + max(0.0, 1 - (limit - need) / cur) * MIN_MS)

        def reset(cur: int, prev: int) -> int:
            return (MIN_MS - into) + MIN_MS if cur > 0 else (MIN_MS - into if prev > 0 else 0)

        def refuse(layer: Layer, kind: Kind, limit: int, used_now: float, retry: int) -> Admission:
            adm.allowed, adm.layer, adm.kind, adm.limit, adm.used, adm.retry_ms = (
                False,
                layer,
                kind,
                limit,
                int(used_now),
                retry,
            )
            adm.settled = True
            return adm

        for layer in layers:
            lim, p = self._scaled(layer), layer.prefix
            if lim.monthly_budget_cents:
                budget = lim.monthly_budget_cents * PICO_PER_CENT
                if spent.get((p, month), 0) >= budget:
                    return refuse(layer, "budget", budget, spent.get((p, month), 0), -1)
            if lim.rpm:
                u, cur, prev = used(p, "r")
                if u + 1 > lim.rpm:
                    return refuse(layer, "requests", lim.rpm, u, wait(lim.rpm, cur, prev, 1))
                rem = math.floor(lim.rpm - u - 1)
                if adm.remaining_requests < 0 or rem < adm.remaining_requests:
                    adm.remaining_requests, adm.limit_requests, adm.reset_requests_ms = (
                        rem,
                        lim.rpm,
                        reset(cur + 1, prev),
                    )
            if lim.tpm:
                u, cur, prev = used(p, "t")
                if u + cost > lim.tpm:
                    return refuse(layer, "tokens", lim.tpm, u, wait(lim.tpm, cur, prev, cost))
                rem = math.floor(lim.tpm - u - cost)
                if adm.remaining_tokens < 0 or rem < adm.remaining_tokens:
                    adm.remaining_tokens, adm.limit_tokens, adm.reset_tokens_ms = rem, lim.tpm, reset(cur + cost, prev)
            if lim.tpd:
                u_day = c.get((p, "d", day), 0)
                if u_day + cost > lim.tpd:
                    return refuse(
                        layer, "tokens_per_day", lim.tpd, u_day, -1 if cost > lim.tpd else (day + 1) * DAY_MS - now
                    )
            if lim.max_concurrency:
                leases = self._leases.setdefault(p, {})
                for lid in [lid for lid, exp in leases.items() if exp <= now]:
                    del leases[lid]
                if len(leases) >= lim.max_concurrency:
                    return refuse(layer, "concurrency", lim.max_concurrency, len(leases), 1000)
        for layer in layers:
            lim, p = self._scaled(layer), layer.prefix
            if lim.rpm:
                c[(p, "r", win)] = c.get((p, "r", win), 0) + 1
            if lim.tpm and cost:
                c[(p, "t", win)] = c.get((p, "t", win), 0) + cost
            if lim.tpd and cost:
                c[(p, "d", day)] = c.get((p, "d", day), 0) + cost
            if lim.max_concurrency:
                self._leases.setdefault(p, {})[lease_id] = now + self.lease_ttl_ms
        return adm

    async def settle(self, adm: Admission, actual: int, cost_picousd: int = 0, *, wait: bool = True) -> None:
        if adm.settled:
            return
        adm.settled = True
        delta = actual - adm.reserved
        for layer in adm.layers:
            p = layer.prefix
            if cost_picousd and layer.limits.monthly_budget_cents:
                self._spent[(p, adm.month)] = self._spent.get((p, adm.month), 0) + cost_picousd
            for kind, idx in (("t", adm.window), ("d", adm.day)):
                if delta and (p, kind, idx) in self._counts:
                    self._counts[(p, kind, idx)] += delta
            leases = self._leases.get(p)
            if leases is not None:
                leases.pop(adm.lease_id, None)

    async def close(self) -> None:
        """Nothing is buffered in process."""

    async def renew(self, adm: Admission) -> None:
        if adm.settled:
            return
        expiry = _now_ms() + self.lease_ttl_ms
        for layer in adm.layers:
            leases = self._leases.get(layer.prefix)
            if leases is not None and adm.lease_id in leases:
                leases[adm.lease_id] = expiry


FailMode = Literal["local", "open", "closed"]


class FailoverLimiter:
    """Redis first; when it fails, in-process limits at limit ÷ workers (or open / closed), until it is back."""

    def __init__(
        self, primary: RedisLimiter, *, workers: int, mode: FailMode = "local", retry_after_s: float = 1.0
    ) -> None:
        self.primary = primary
        self.fallback = LocalLimiter(divide_by=workers, lease_ttl_ms=primary.lease_ttl_ms)
        self.mode = mode
        self.retry_after_s = retry_after_s
        self._down_until = 0.0
        self._background: set[asyncio.Future[Any]] = set()

    @property
    def degraded(self) -> bool:
        return time.monotonic() < self._down_until

    def _failed(self, exc: Exception) -> None:
        if not self.degraded:
            log.error("Redis limiter unavailable, using %s limits: %s", self.mode, exc)
        self._down_until = time.monotonic() + self.retry_after_s
        metrics.LIMITER_FALLBACKS.inc()

    async def admit(self, layers: tuple[Layer, ...], cost: int, lease_id: str, now_ms: int | None = None) -> Admission:
        if not self.degraded:
            try:
                return await self.primary.admit(layers, cost, lease_id, now_ms)
            except (RedisError, OSError) as exc:
                self._failed(exc)
        return await self._fallback(layers, cost, lease_id, now_ms)

    def send(
        self, layers: tuple[Layer, ...], cost: int, lease_id: str, now_ms: int | None = None
    ) -> asyncio.Future[Admission] | None:
        """The admission written to Redis now; its outcome arrives on the returned future (Redis failing on
        the way: the fallback's answer). ``None`` when Redis is not connected or known down: call ``admit``.

        Cancelling the future abandons the admission: if Redis admits it after all, it is settled at once
        (nothing used), so its tokens and slot are given back."""
        if self.degraded:
            return None
        try:
            sent = self.primary.write(layers, cost, lease_id, now_ms)
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return None
        if sent is None:
            return None
        out: asyncio.Future[Admission] = asyncio.get_running_loop().create_future()

        def replied(_: asyncio.Future[Any]) -> None:
            try:
                adm = self.primary.outcome_now(sent)
            except (RedisError, OSError) as exc:
                self._failed(exc)
                self._later(out, self._fallback(layers, cost, lease_id, now_ms))
                return
            except asyncio.CancelledError:  # its reply future was cancelled: no verdict came
                self._later(out, self._fallback(layers, cost, lease_id, now_ms))
                return
            except Exception as exc:  # noqa: BLE001 - a reply that makes no sense: the request fails, never hangs
                if not out.done():
                    out.set_exception(exc)
                return
            if adm is None:  # Redis lost its scripts: one more round trip
                self._later(out, self._outcome(self.primary.receive(sent), layers, cost, lease_id, now_ms))
                return
            self._deliver(out, adm)

        sent.reply.add_done_callback(replied)
        return out

    def _deliver(self, out: asyncio.Future[Admission], adm: Admission) -> None:
        if not out.cancelled():
            out.set_result(adm)
        elif adm.allowed and not adm.settled:  # abandoned: give it all back
            self._later(None, self.settle(adm, 0, wait=False))

    def _later(self, out: asyncio.Future[Admission] | None, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)

        def done(t: asyncio.Future[Any]) -> None:
            self._background.discard(t)
            if out is None or t.cancelled():
                return
            exc = t.exception()
            if exc is not None:
                if not out.done():
                    out.set_exception(exc)
                return
            self._deliver(out, t.result())

        task.add_done_callback(done)

    async def _outcome(
        self,
        reply: Coroutine[Any, Any, Admission],
        layers: tuple[Layer, ...],
        cost: int,
        lease_id: str,
        now_ms: int | None,
    ) -> Admission:
        try:
            return await reply
        except (RedisError, OSError) as exc:
            self._failed(exc)
        return await self._fallback(layers, cost, lease_id, now_ms)

    async def _fallback(
        self, layers: tuple[Layer, ...], cost: int, lease_id: str, now_ms: int | None = None
    ) -> Admission:
        metrics.LIMITER_FALLBACKS.inc()
        if self.mode == "open":
            now = now_ms if now_ms is not None else _now_ms()
            return Admission(
                allowed=True,
                lease_id=lease_id,
                reserved=cost,
                window=now // MIN_MS,
                day=now // DAY_MS,
                layers=(),
                settled=True,
            )
        if self.mode == "closed":
            now = now_ms if now_ms is not None else _now_ms()
            return Admission(
                allowed=False,
                lease_id=lease_id,
                reserved=cost,
                window=now // MIN_MS,
                day=now // DAY_MS,
                layers=layers,
                layer=layers[0] if layers else None,
                kind="requests",
                retry_ms=int(self.retry_after_s * 1000),
                settled=True,
            )
        adm = await self.fallback.admit(layers, cost, lease_id, now_ms)
        adm.local = True
        return adm

    async def close(self) -> None:
        await self.primary.close()

    async def settle(self, adm: Admission, actual: int, cost_picousd: int = 0, *, wait: bool = True) -> None:
        if adm.local:
            await self.fallback.settle(adm, actual, cost_picousd)
            return
        try:
            await self.primary.settle(adm, actual, cost_picousd, wait=wait)
        except (RedisError, OSError) as exc:
            self._failed(exc)  # the lease expires by itself

    async def renew(self, adm: Admission) -> None:
        if adm.local:
            await self.fallback.renew(adm)
            return
        try:
            await self.primary.renew(adm)
        except (RedisError, OSError) as exc:
            self._failed(exc)
