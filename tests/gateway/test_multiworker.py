"""The deployed shape: `cic api --workers 2` on PostgreSQL and Redis."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest
from openai.types.chat import ChatCompletionMessageParam
from sqlmodel import Session, func, select

from agent.sim_tokens import chat_prompt_tokens
from cic.models import UsageRecord
from cic.settings import Settings
from tests.conftest import CIC
from tests.gateway.conftest import Tenant, add_node, make_tenant, usage_records
from tests.servers import Sims, free_port, wait_until

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "ping"}]


@pytest.fixture
def cic_api(settings: Settings, tmp_path: object) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "CIC_DATABASE_URL": settings.database_url,
        "CIC_REDIS_URL": settings.redis_url or "",
        "CIC_SPOOL_DIR": str(tmp_path),
        "CIC_NODE_REFRESH_S": "0.2",
        "CIC_LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen(
        [CIC, "api", "--port", str(port), "--workers", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: proc.poll() is None and httpx.get(f"{base}/ready", timeout=1).status_code == 200,
            timeout=30,
            what="cic api ready",
        )
        yield base
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
        assert "Traceback" not in err, err


def _fresh(base: str, key: str) -> int:
    """One request on a new connection, so successive calls spread over the workers."""
    r = httpx.post(
        f"{base}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}", "Connection": "close"},
        json={"model": "llama-3-8b", "messages": MESSAGES, "max_tokens": 1},
        timeout=10,
    )
    return r.status_code


def test_revocation_reaches_every_worker_within_a_second(
    sims: Sims, cic_api: str, session: Session, tenant: Tenant, settings: Settings
) -> None:
    sim = sims.start(model="llama-3-8b")
    add_node(session, sim)
    wait_until(lambda: _fresh(cic_api, tenant.key) == 200, timeout=10, what="node routable")
    for _ in range(30):  # warm both workers' key caches
        assert _fresh(cic_api, tenant.key) == 200
    # Revoked from another process (the operator's CLI): only the invalidation bus can tell the workers.
    env = {**os.environ, "CIC_DATABASE_URL": settings.database_url, "CIC_REDIS_URL": settings.redis_url or ""}
    revoked = subprocess.run(
        [CIC, "keys", "revoke", "--org", tenant.org_slug, tenant.key_id],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    assert '"status": "revoked"' in revoked.stdout
    t0 = time.monotonic()
    while time.monotonic() - t0 < 1.0:
        _fresh(cic_api, tenant.key)
    statuses = [_fresh(cic_api, tenant.key) for _ in range(30)]
    assert statuses == [401] * 30


def test_usage_exact_under_concurrency(sims: Sims, cic_api: str, session: Session, pepper: str) -> None:
    import asyncio

    sim = sims.start(model="llama-3-8b", itl_ms=1)
    add_node(session, sim)
    tenant = make_tenant(session, pepper)
    n = 300

    async def drive() -> list[int]:
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=40)) as c:

            async def one(i: int) -> int:
                body = {"model": "llama-3-8b", "messages": MESSAGES, "max_tokens": 1 + i % 7, "stream": i % 3 == 0}
                r = await c.post(
                    f"{cic_api}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {tenant.key}"}
                )
                await r.aread()
                return r.status_code

            return await asyncio.gather(*(one(i) for i in range(n)))

    warmup: list[int] = []

    def routable() -> bool:
        warmup.append(_fresh(cic_api, tenant.key))
        return warmup[-1] == 200

    wait_until(routable, timeout=10, what="node routable")
    statuses = asyncio.run(drive())
    assert statuses == [200] * n
    recs = usage_records(session, n + len(warmup))
    assert len({r.request_id for r in recs}) == n + len(warmup)
    ok = [r for r in recs if r.status == "ok"]
    assert len(ok) == n + 1 and all(r.error_code == "no_healthy_node" for r in recs if r.status != "ok")
    assert sum(r.completion_tokens for r in ok) == 1 + sum(1 + i % 7 for i in range(n))
    assert all(r.prompt_tokens == chat_prompt_tokens(MESSAGES) for r in ok)
    assert session.exec(select(func.count()).select_from(UsageRecord)).one() == n + len(warmup)
