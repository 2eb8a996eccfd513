"""The API as it is deployed: `cic api` with several workers on PostgreSQL and Redis, over real HTTP."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest

from cic.settings import Settings
from tests.conftest import CIC
from tests.factories import PASSWORD, email


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(settings: Settings, engine: object) -> Iterator[str]:
    port = _free_port()
    env = {
        **os.environ,
        "CIC_DATABASE_URL": settings.database_url,
        "CIC_REDIS_URL": settings.redis_url or "",
        "CIC_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
    }
    proc = subprocess.Popen(
        [CIC, "api", "--port", str(port), "--workers", "2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    try:
        while True:
            try:
                if httpx.get(f"{base}/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                out = proc.stdout.read() if proc.stdout else ""
                pytest.fail(f"API did not become ready:\n{out}")
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_real_server_end_to_end(server: str) -> None:
    with httpx.Client(base_url=server, timeout=10) as c:
        assert c.get("/ready").json()["checks"] == {"database": "ok", "redis": "ok"}
        r = c.post("/api/v1/auth/signup", json={"email": email(), "password": PASSWORD})
        assert r.status_code == 201
        h = {"Authorization": f"Bearer {r.json()['token']}"}
        # Spread over both workers: every request must see what the others committed.
        assert c.post("/api/v1/orgs", json={"name": "Served"}, headers=h).status_code == 201
        for _ in range(6):
            assert c.get("/api/v1/orgs/served", headers=h).status_code == 200
        env = c.post(
            "/api/v1/orgs/served/environments",
            headers=h,
            json={"name": "prod", "region": "eu-west", "models": ["mixtral-8x7b"]},
        ).json()
        assert env["base_url"] == f"{server}/served/prod/v1"
        r = c.post("/api/v1/orgs/served/keys", headers=h, json={"name": "k", "environment": "prod"})
        assert r.status_code == 201 and r.headers["x-request-id"]
        assert c.get("/docs").status_code == 200
