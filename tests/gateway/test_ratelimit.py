"""The limiter's semantics, with a controllable clock, on real Redis and in process (same rules)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest
import redis as sync_redis
import redis.asyncio as aioredis

from api.gateway.ratelimit import FailoverLimiter, Layer, LocalLimiter, RedisLimiter, duration
from api.gateway.resp import RespClient
from cic.limits import Limits
from tests.conftest import REDIS_URL
from tests.gateway.private_redis import PrivateRedis, needs_redis_server

T0 = 1_795_000_000_000 - (1_795_000_000_000 % 60_000)  # a minute boundary, in ms


@pytest.fixture(params=["redis", "local"])
async def limiter(request: pytest.FixtureRequest) -> AsyncIterator[RedisLimiter | LocalLimiter]:
    if request.param == "local":
        yield LocalLimiter()
        return
    client = aioredis.from_url(REDIS_URL)
    limiter = RedisLimiter(client)
    yield limiter
    await limiter.close()
    await client.aclose()


def _layers(tag: str, **limits: int) -> tuple[Layer, ...]:
    uid = f"{tag}-{os.urandom(4).hex()}"
    return (Layer("organization", f"org_{uid}", Limits(rpm=1000)), Layer("key", f"key_{uid}", Limits(**limits)))


async def test_requests_per_minute_exact_and_nothing_charged_on_refusal(limiter: RedisLimiter | LocalLimiter) -> None:
    layers = _layers("rpm", rpm=5)
    results = [await limiter.admit(layers, 0, f"l{i}", T0 + i) for i in range(8)]
    assert [r.allowed for r in results] == [True] * 5 + [False] * 3
    refused = results[5]
    assert refused.layer == layers[1] and refused.kind == "requests" and refused.limit == 5
    assert refused.retry_ms > 0
    assert results[4].remaining_requests == 0 and results[0].remaining_requests == 4
    # The org layer was charged for the 5 admitted requests only.
    org_only = (layers[0],)
    probe = await limiter.admit(org_only, 0, "probe", T0 + 10)
    assert probe.remaining_requests == 1000 - 6


async def test_sliding_window_frees_capacity_gradually(limiter: RedisLimiter | LocalLimiter) -> None:
    layers = _layers("slide", rpm=10)
    for i in range(10):
        assert (await limiter.admit(layers, 0, f"a{i}", T0 + 50_000 + i)).allowed
    assert not (await limiter.admit(layers, 0, "x", T0 + 59_000)).allowed
    # Next minute, 30 s in: the previous window still weighs half: 10 × 0.5 = 5 in use.
    admitted = sum([(await limiter.admit(layers, 0, f"b{i}", T0 + 90_000)).allowed for i in range(10)])
    assert admitted == 5


async def test_tokens_reserved_then_settled(limiter: RedisLimiter | LocalLimiter) -> None:
    layers = _layers("tpm", tpm=1000)
    first = await limiter.admit(layers, 600, "t1", T0 + 1)
    assert first.allowed and first.remaining_tokens == 400
    blocked = await limiter.admit(layers, 600, "t2", T0 + 2)
    assert not blocked.allowed and blocked.kind == "tokens"
    await limiter.settle(first, 150)  # the real usage was much smaller: give the rest back
    second = await limiter.admit(layers, 600, "t3", T0 + 3)
    assert second.allowed and second.remaining_tokens == 1000 - 150 - 600
    too_big = await limiter.admit(layers, 5000, "t4", T0 + 4)
    assert not too_big.allowed and too_big.retry_ms == -1


async def test_tokens_per_day(limiter: RedisLimiter | LocalLimiter) -> None:
    layers = _layers("tpd", tpd=100)
    assert (await limiter.admit(layers, 80, "d1", T0)).allowed
    refused = await limiter.admit(layers, 30, "d2", T0 + 1000)
    assert not refused.allowed and refused.kind == "tokens_per_day" and refused.retry_ms > 0
    tomorrow = T0 + 86_400_000
    assert (await limiter.admit(layers, 30, "d3", tomorrow)).allowed


async def test_concurrency_leases_released_and_expiring(limiter: RedisLimiter | LocalLimiter) -> None:
    layers = _layers("conc", max_concurrency=2)
    now = 1_795_000_000_000
    a = await limiter.admit(layers, 0, "c1", now)
    b = await limiter.admit(layers, 0, "c2", now)
    assert a.allowed and b.allowed
    full = await limiter.admit(layers, 0, "c3", now + 1)
    assert not full.allowed and full.kind == "concurrency"
    await limiter.settle(a, 0)
    assert (await limiter.admit(layers, 0, "c4", now + 2)).allowed
    # A holder that died never settles: its lease expires after the lease TTL.
    assert not (await limiter.admit(layers, 0, "c5", now + 3)).allowed
    assert (await limiter.admit(layers, 0, "c6", now + 61_000)).allowed


def test_reset_format() -> None:
    assert duration(0) == "0s"
    assert duration(120) == "120ms"
    assert duration(1000) == "1s"
    assert duration(6500) == "6.5s"
    assert duration(360_000) == "6m0s"
    assert duration(61_500) == "1m2s"


async def test_headers_report_tightest_layer(limiter: RedisLimiter | LocalLimiter) -> None:
    layers = (
        Layer("organization", f"org_h{os.urandom(3).hex()}", Limits(rpm=100, tpm=10_000)),
        Layer("key", f"key_h{os.urandom(3).hex()}", Limits(rpm=3, tpm=50_000)),
    )
    adm = await limiter.admit(layers, 100, "h", T0 + 1)
    headers = dict(adm.headers())
    assert headers[b"x-ratelimit-limit-requests"] == b"3" and headers[b"x-ratelimit-remaining-requests"] == b"2"
    assert headers[b"x-ratelimit-limit-tokens"] == b"10000" and headers[b"x-ratelimit-remaining-tokens"] == b"9900"


async def test_monthly_budget(limiter: RedisLimiter | LocalLimiter) -> None:
    layers = _layers("budget", monthly_budget_cents=1)  # one cent = 10**10 pico-dollars
    first = await limiter.admit(layers, 10, "m1", T0)
    assert first.allowed
    await limiter.settle(first, 10, 6 * 10**9)
    second = await limiter.admit(layers, 10, "m2", T0 + 1)
    assert second.allowed  # 0.6 cents spent
    await limiter.settle(second, 10, 5 * 10**9)
    refused = await limiter.admit(layers, 10, "m3", T0 + 2)
    assert not refused.allowed and refused.kind == "budget" and refused.limit == 10**10
    next_month = T0 + 40 * 86_400_000
    assert (await limiter.admit(layers, 10, "m4", next_month)).allowed


async def test_batched_settlement_lands() -> None:
    client = aioredis.from_url(REDIS_URL)
    limiter = RedisLimiter(client)
    layers = _layers("batch", tpm=1000, max_concurrency=3)
    adms = [await limiter.admit(layers, 300, f"b{i}", T0 + i) for i in range(3)]
    assert all(a.allowed for a in adms)
    assert not (await limiter.admit(layers, 10, "full", T0 + 5)).allowed
    for a in adms:
        await limiter.settle(a, 10, wait=False)  # the gateway's way: batched, off the response path
    await limiter.close()  # flushes what is pending
    again = await limiter.admit(layers, 300, "after", T0 + 6)
    assert again.allowed and again.remaining_tokens == 1000 - 30 - 300
    await client.aclose()


async def test_queued_settlement_rides_on_the_next_admission() -> None:
    limiter = RedisLimiter(RespClient.from_url(REDIS_URL))
    admin = sync_redis.Redis.from_url(REDIS_URL)
    layers = _layers("ride", tpm=1000, max_concurrency=1)
    try:
        first = await limiter.admit(layers, 300, "r1", T0 + 1)
        assert first.allowed
        await limiter.settle(first, 10, wait=False)
        # No flush has run: the next admission carries the settlement and already sees its slot and tokens.
        second = await limiter.admit(layers, 300, "r2", T0 + 2)
        assert second.allowed and second.remaining_tokens == 1000 - 10 - 300
        admin.script_flush()  # both scripts meet NOSCRIPT in the same write
        await limiter.settle(second, 20, wait=False)
        third = await limiter.admit(layers, 300, "r3", T0 + 3)
        assert third.allowed and third.remaining_tokens == 1000 - 10 - 20 - 300
        await limiter.settle(third, 30, wait=False)
        # With no admission to carry it, the settlement goes out by itself within SETTLE_BATCH_S.
        deadline = asyncio.get_running_loop().time() + 5
        while admin.zcard(f"{layers[-1].prefix}:c"):
            assert asyncio.get_running_loop().time() < deadline, "queued settlement never sent"
            await asyncio.sleep(0.01)
    finally:
        await limiter.close()
        admin.close()


async def test_concurrent_admissions_exact_on_one_connection() -> None:
    """Many requests of one worker at once share the limiter's pipelined connection: each gets its own
    verdict, and exactly the limit is admitted."""
    limiter = RedisLimiter(RespClient.from_url(REDIS_URL))
    layers = _layers("pipelined", rpm=50, tpm=100_000, max_concurrency=1000)
    adms = await asyncio.gather(*(limiter.admit(layers, 7, f"p{i}", T0 + i) for i in range(200)))
    assert sum(a.allowed for a in adms) == 50
    assert [a.lease_id for a in adms] == [f"p{i}" for i in range(200)]
    allowed = [a for a in adms if a.allowed]
    assert sorted(a.remaining_requests for a in allowed) == list(range(50))  # one reply per caller, none shared
    await asyncio.gather(*(limiter.settle(a, 1) for a in allowed))
    probe = await limiter.admit(layers[1:], 0, "probe", T0 + 300)
    assert not probe.allowed and probe.kind == "requests"
    tokens = await limiter.admit((Layer("key", layers[1].id, Limits(tpm=100_000)),), 0, "t", T0 + 301)
    assert tokens.remaining_tokens == 100_000 - 50  # each settled to 1 token
    await limiter.close()


async def test_scripts_reloaded_after_script_flush() -> None:
    limiter = RedisLimiter(RespClient.from_url(REDIS_URL))
    admin = sync_redis.Redis.from_url(REDIS_URL)
    layers = _layers("flush", tpm=1000, max_concurrency=2)
    try:
        first = await limiter.admit(layers, 300, "f1", T0 + 1)
        assert first.allowed
        admin.script_flush()  # as after a Redis restart or failover: EVALSHA answers NOSCRIPT
        second = await limiter.admit(layers, 300, "f2", T0 + 2)
        assert second.allowed and second.remaining_tokens == 1000 - 600
        admin.script_flush()
        await limiter.renew(second)
        await limiter.settle(first, 100)
        admin.script_flush()
        await limiter.settle(second, 100, wait=False)
        await limiter.close()
        third = await limiter.admit(layers, 300, "f3", T0 + 3)
        assert third.allowed and third.remaining_tokens == 1000 - 200 - 300
    finally:
        await limiter.close()
        admin.close()


@needs_redis_server
async def test_failover_to_local_and_back_when_redis_restarts() -> None:
    server = PrivateRedis()
    server.start()
    limiter = FailoverLimiter(RedisLimiter(RespClient.from_url(server.url)), workers=2, retry_after_s=0.05)
    layers = _layers("restart", rpm=100)
    try:
        before = await limiter.admit(layers, 0, "r1")
        assert before.allowed and not before.local
        server.stop()
        during = await limiter.admit(layers, 0, "r2")
        assert during.allowed and during.local and limiter.degraded  # in-process limits meanwhile
        await limiter.settle(during, 0)
        server.start()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while True:
            after = await limiter.admit(layers, 0, "r3")
            if not after.local:
                break
            assert loop.time() < deadline, "never returned to Redis"
            await asyncio.sleep(0.06)
        assert after.allowed and after.remaining_requests == 100 - 1  # the restarted server starts empty
        await limiter.settle(after, 0)
    finally:
        await limiter.close()
        server.stop()


async def test_sent_admission_outcome_abandonment_and_failure() -> None:
    """``FailoverLimiter.send``: the verdict on a future; a cancelled future's admission is given back when
    Redis admits it; a connection lost before the reply falls back to the in-process limiter."""
    limiter = FailoverLimiter(RedisLimiter(RespClient.from_url(REDIS_URL)), workers=1)
    admin = sync_redis.Redis.from_url(REDIS_URL)
    layers = _layers("sent", tpm=1000, max_concurrency=1)
    try:
        assert limiter.send(layers, 10, "s0") is None  # no connection yet: admit() opens it
        first = await limiter.admit(layers, 100, "s1")
        await limiter.settle(first, 100)
        sent = limiter.send(layers, 300, "s2")
        assert sent is not None
        adm = await sent
        assert adm.allowed and adm.remaining_tokens == 1000 - 100 - 300 and not adm.local
        await limiter.settle(adm, 300)
        # The waiter leaves before the reply: the admission Redis makes is settled by the limiter itself.
        abandoned = limiter.send(layers, 500, "s3")
        assert abandoned is not None
        abandoned.cancel()
        deadline = asyncio.get_running_loop().time() + 5
        while admin.zcard(f"{layers[-1].prefix}:c"):
            assert asyncio.get_running_loop().time() < deadline, "abandoned admission never given back"
            await asyncio.sleep(0.01)
        after = await limiter.admit(layers, 0, "s4")  # its slot is free and its 500 tokens are back
        assert after.allowed and after.remaining_tokens == 1000 - 100 - 300
        await limiter.settle(after, 0)
        # The connection drops with the admission in flight: the in-process limits answer.
        lost = limiter.send(layers, 10, "s5")
        conn = limiter.primary._conn.open_connection
        assert lost is not None and conn is not None and conn.transport is not None
        conn.transport.abort()
        fallback = await lost
        assert fallback.allowed and fallback.local and limiter.degraded
    finally:
        await limiter.close()
        admin.close()
