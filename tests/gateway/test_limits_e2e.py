"""Limits through the real server: OpenAI's 429 and headers via the SDK, exactness across 4 workers,
no leaked concurrency slot when a server dies, and the documented fallback when Redis stops."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any, cast

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from sqlmodel import Session

from cic.models import Plan
from cic.settings import Settings
from tests.conftest import CIC
from tests.gateway.conftest import Tenant, add_node, client, make_tenant
from tests.servers import Sims, free_port, wait_until

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "ping"}]


def test_sdk_sees_rate_limit_error_and_headers(sims: Sims, serve, session: Session, pepper: str) -> None:
    sim = sims.start(model="llama-3-8b")
    add_node(session, sim)
    tenant = make_tenant(session, pepper, plan=Plan.free, key_limits={"rpm": 3, "tpm": 5000})
    with serve() as base:
        c = client(base, tenant.key)
        ok = c.chat.completions.with_raw_response.create(model="llama-3-8b", messages=MESSAGES, max_tokens=4)
        h = ok.headers
        assert (h["x-ratelimit-limit-requests"], h["x-ratelimit-remaining-requests"]) == ("3", "2")
        assert h["x-ratelimit-limit-tokens"] == "5000" and int(h["x-ratelimit-remaining-tokens"]) < 5000
        assert h["x-ratelimit-reset-requests"].endswith("s")
        for _ in range(2):
            c.chat.completions.create(model="llama-3-8b", messages=MESSAGES, max_tokens=4)
        with pytest.raises(openai.RateLimitError) as exc:
            c.chat.completions.create(model="llama-3-8b", messages=MESSAGES, max_tokens=4)
        err = exc.value
        assert err.code == "rate_limit_exceeded" and err.type == "requests"
        assert f"key {tenant.key_id}" in err.message and "Limit 3" in err.message
        assert int(err.response.headers["retry-after"]) >= 1
        # Token budget: a request that can never fit is refused as too large.
        other = make_tenant(session, pepper, plan=Plan.free, key_limits={"tpm": 100})
        with pytest.raises(openai.RateLimitError) as big:
            client(base, other.key).chat.completions.create(model="llama-3-8b", messages=MESSAGES, max_tokens=500)
        assert big.value.type == "tokens" and "too large" in big.value.message


def _cic_api(settings: Settings, tmp: Any, workers: int, **env: str) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    full = {
        **os.environ,
        "CIC_DATABASE_URL": settings.database_url,
        "CIC_REDIS_URL": settings.redis_url or "",
        "CIC_SPOOL_DIR": str(tmp),
        "CIC_NODE_REFRESH_S": "0.2",
        "CIC_LOG_LEVEL": "WARNING",
        **env,
    }
    proc = subprocess.Popen(
        [CIC, "api", "--port", str(port), "--workers", str(workers)],
        env=full,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: proc.poll() is None and httpx.get(f"{base}/ready", timeout=1).status_code == 200,
            timeout=30,
            what="cic api ready",
        )
    except AssertionError:
        _stop(proc, signal.SIGKILL)  # no server left behind by a failed start
        raise
    return proc, base


def _stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> None:
    os.killpg(proc.pid, sig)
    proc.wait(timeout=20)


async def _burst(base: str, key: str, n: int, max_tokens: int = 1) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=100)) as c:
        # Open the connections first (httpx takes seconds to open 100 at once), so the burst itself lands
        # within a fraction of a second: a limit of 120/min legitimately frees 2 slots every second.
        await asyncio.gather(*(c.get(f"{base}/health") for _ in range(100)))

        async def one() -> httpx.Response:
            return await c.post(
                f"{base}/v1/chat/completions",
                headers={"Authorization": f"Bearer {key}"},
                json={"model": "llama-3-8b", "messages": MESSAGES, "max_tokens": max_tokens},
            )

        return list(await asyncio.gather(*(one() for _ in range(n))))


@pytest.fixture
def four_workers(settings: Settings, tmp_path: Any, engine: Any) -> Iterator[str]:
    proc, base = _cic_api(settings, tmp_path, 4)
    yield base
    _stop(proc)


def test_limits_exact_across_four_workers(sims: Sims, four_workers: str, session: Session, pepper: str) -> None:
    sim = sims.start(model="llama-3-8b")
    add_node(session, sim)
    by_requests = make_tenant(session, pepper, plan=Plan.developer, key_limits={"rpm": 120})
    by_tokens = make_tenant(session, pepper, plan=Plan.developer, key_limits={"tpm": 10_000})
    wait_until(lambda: httpx.get(f"{four_workers}/ready").status_code == 200, what="ready")

    responses = asyncio.run(_burst(four_workers, by_requests.key, 400))
    codes = [r.status_code for r in responses]
    admitted = codes.count(200)
    assert set(codes) <= {200, 429}, codes
    assert 119 <= admitted <= 121, admitted  # within ±1% of 120, not 120 per worker

    responses = asyncio.run(_burst(four_workers, by_tokens.key, 400, max_tokens=50))
    used = sum(r.json()["usage"]["total_tokens"] for r in responses if r.status_code == 200)
    refused = [r for r in responses if r.status_code == 429]
    assert refused and all(r.json()["error"]["type"] == "tokens" for r in refused)
    assert 9_900 <= used <= 10_100, used  # within ±1% of 10,000 tokens


def test_dead_server_leaks_no_concurrency_slot(
    sims: Sims, settings: Settings, session: Session, pepper: str, tmp_path: Any, engine: Any
) -> None:
    sim = sims.start(model="llama-3-8b", hang_rate=1.0)
    add_node(session, sim)
    tenant: Tenant = make_tenant(session, pepper, plan=Plan.developer, key_limits={"max_concurrency": 2})
    proc, base = _cic_api(settings, tmp_path, 1, CIC_LIMITS_LEASE_TTL_S="3")

    async def hold_two_then_probe() -> int:
        async with httpx.AsyncClient(timeout=30) as c:
            hdr = {"Authorization": f"Bearer {tenant.key}"}
            body = {"model": "llama-3-8b", "messages": MESSAGES}
            holders = [
                asyncio.ensure_future(c.post(f"{base}/v1/chat/completions", headers=hdr, json=body)) for _ in range(2)
            ]
            deadline = asyncio.get_running_loop().time() + 10
            while sim.stats.hangs_injected < 2:
                assert asyncio.get_running_loop().time() < deadline, "requests never reached the node"
                await asyncio.sleep(0.05)
            probe = await c.post(f"{base}/v1/chat/completions", headers=hdr, json=body)
            for h in holders:
                h.cancel()
            return probe.status_code

    assert asyncio.run(hold_two_then_probe()) == 429
    _stop(proc, signal.SIGKILL)  # the server dies holding both slots: nothing settles them
    sim.update(hang_rate=0.0)
    proc, base = _cic_api(settings, tmp_path, 1, CIC_LIMITS_LEASE_TTL_S="3")
    try:

        def admitted() -> bool:
            r = httpx.post(
                f"{base}/v1/chat/completions",
                headers={"Authorization": f"Bearer {tenant.key}"},
                json={"model": "llama-3-8b", "messages": MESSAGES, "max_tokens": 1},
                timeout=10,
            )
            return r.status_code == 200

        wait_until(admitted, timeout=10, interval=0.3, what="the dead server's slots to expire")
    finally:
        _stop(proc)


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server to run a private instance")
def test_redis_stopping_mid_test_falls_back_without_5xx(
    sims: Sims, settings: Settings, session: Session, pepper: str, tmp_path: Any, engine: Any
) -> None:
    sim = sims.start(model="llama-3-8b")
    add_node(session, sim)
    port = free_port()
    redis_proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    tenant = make_tenant(session, pepper, plan=Plan.developer, key_limits={"rpm": 40})
    own = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{port}/0"})
    proc, base = _cic_api(own, tmp_path, 2)
    try:
        first = [r.status_code for r in asyncio.run(_burst(base, tenant.key, 10))]
        assert first == [200] * 10
        redis_proc.terminate()
        redis_proc.wait(10)
        after = [r.status_code for r in asyncio.run(_burst(base, tenant.key, 60))]
        assert all(code in (200, 429) for code in after), after  # degraded, never a 5xx
        # Fallback: each of the 2 workers allows 40 / 2 = 20 per minute.
        assert 1 <= after.count(200) <= 40, after.count(200)
        metrics = httpx.get(f"{base}/metrics").text
        fallbacks = [
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("cic_limiter_fallback_total")
        ]
        assert fallbacks and sum(fallbacks) > 0, metrics[:2000]
    finally:
        _stop(proc)
        if redis_proc.poll() is None:
            redis_proc.kill()


def test_spent_budget_is_insufficient_quota(
    sims: Sims, serve, session: Session, pepper: str, settings: Settings
) -> None:
    import redis as sync_redis

    from api.gateway.ratelimit import month_of

    sim = sims.start(model="llama-3-8b")
    add_node(session, sim)
    tenant = make_tenant(session, pepper, plan=Plan.developer, key_limits={"monthly_budget_cents": 100})
    with serve() as base:
        c = client(base, tenant.key)
        c.chat.completions.create(model="llama-3-8b", messages=MESSAGES, max_tokens=4)
        r = sync_redis.Redis.from_url(settings.redis_url or "")
        key = f"cic:rl:key:{tenant.key_id}:$:{month_of(int(time.time() * 1000))}"
        # The request's cost is charged to the key's month when it settles (batched, after the response).
        wait_until(lambda: int(cast(bytes | None, r.get(key)) or 0) > 0, timeout=5, what="spend counted")
        r.set(key, 100 * 10**10)  # the rest of the month's dollar goes elsewhere
        with pytest.raises(openai.RateLimitError) as exc:
            c.chat.completions.create(model="llama-3-8b", messages=MESSAGES, max_tokens=4)
        assert exc.value.code == "insufficient_quota" and "$1.00" in exc.value.message
        r.close()
