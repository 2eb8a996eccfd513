"""The limiter's semantics, with a controllable clock, on real Redis and in process (same rules)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from api.gateway.ratelimit import Layer, LocalLimiter, RedisLimiter, duration
from cic.limits import Limits
from tests.conftest import REDIS_URL

T0 = 1_795_000_000_000 - (1_795_000_000_000 % 60_000)  # a minute boundary, in ms


@pytest.fixture(params=["redis", "local"])
async def limiter(request: pytest.FixtureRequest) -> AsyncIterator[RedisLimiter | LocalLimiter]:
    if request.param == "local":
        yield LocalLimiter()
        return
    client = aioredis.from_url(REDIS_URL)
    yield RedisLimiter(client)
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
