"""Limiter benchmark: what admission costs, and how exact limits are across API workers.

``.venv/bin/python bench/limits.py`` (flags in ``--help``) prints two tables:

1. **Cost**: the four-layer admission (one Redis round trip running ``ratelimit.lua``) and the settlement
   after the response, timed over many calls against the local Redis — p50 / p99 in milliseconds — beside
   a bare ``PING`` through the limiter's client (``api/gateway/resp.py``) and through redis-py's asyncio
   client, for scale. Timed on uvloop, as the API runs; ``--rounds`` repeats the table.
2. **Accuracy**: ``cic api --workers N`` (N = 1, 2, 4) on a fresh PostgreSQL database and Redis, a key
   limited to 120 requests/min (then one limited to 10,000 tokens/min), hit by 400 concurrent requests:
   the limit against what was admitted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis.asyncio as aioredis
import uvloop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.simulator import SimConfig, start_simulator
from api.gateway.ratelimit import Layer, RedisLimiter
from api.gateway.resp import RespClient, command
from cic.limits import Limits

CIC = str(ROOT / ".venv" / "bin" / "cic")
PG_ADMIN = "postgresql://postgres:postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/0"
MESSAGES = [{"role": "user", "content": "ping"}]


def _pct(xs: list[float], q: float) -> float:
    return sorted(xs)[int(q * (len(xs) - 1))]


async def limiter_cost(n: int) -> dict[str, float]:
    client = aioredis.from_url(REDIS_URL)
    limiter = RedisLimiter(client)
    uid = secrets.token_hex(4)
    layers = (
        Layer("global", f"bench-{uid}", Limits(rpm=10**9, tpm=10**12)),
        Layer("organization", f"org_{uid}", Limits(rpm=10**8, tpm=10**11, tpd=10**13, max_concurrency=10**6)),
        Layer("environment", f"env_{uid}", Limits(rpm=10**8, tpm=10**11)),
        Layer("key", f"key_{uid}", Limits(rpm=10**8, tpm=10**11, max_concurrency=10**6, monthly_budget_cents=10**9)),
    )
    for i in range(100):  # warm-up: connection, script cache
        await limiter.settle(await limiter.admit(layers, 300, f"warm{i}"), 250, 10**7)
    admit, settle, ping, ping_py = [], [], [], []
    resp_ping = command("PING")
    for i in range(n):
        t0 = time.perf_counter()
        adm = await limiter.admit(layers, 300, f"lease{i}")
        t1 = time.perf_counter()
        await limiter.settle(adm, 250, 10**7)
        t2 = time.perf_counter()
        admit.append((t1 - t0) * 1000)
        settle.append((t2 - t1) * 1000)
    conn = RespClient.from_url(REDIS_URL)
    for xs, call in ((ping, lambda: conn.execute_packed(resp_ping)), (ping_py, client.ping)):
        for _ in range(n):
            t0 = time.perf_counter()
            await call()
            xs.append((time.perf_counter() - t0) * 1000)
    await conn.aclose()
    await limiter.close()
    await client.aclose()
    return {
        "admit_p50": statistics.median(admit),
        "admit_p99": _pct(admit, 0.99),
        "settle_p50": statistics.median(settle),
        "settle_p99": _pct(settle, 0.99),
        "ping_p50": statistics.median(ping),
        "ping_p99": _pct(ping, 0.99),
        "ping_py_p50": statistics.median(ping_py),
        "ping_py_p99": _pct(ping_py, 0.99),
    }


@contextmanager
def database() -> Iterator[str]:
    name = f"cic_bench_limits_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres:postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def cic(env: dict[str, str], *args: str) -> Any:
    import json

    out = subprocess.run([CIC, *args], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout) if out.stdout.strip().startswith(("{", "[")) else out.stdout


async def burst(base: str, key: str, n: int, max_tokens: int) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=100)) as c:

        async def one() -> dict[str, Any]:
            r = await c.post(
                f"{base}/v1/chat/completions",
                headers={"Authorization": f"Bearer {key}"},
                json={"model": "llama-3-8b", "messages": MESSAGES, "max_tokens": max_tokens},
            )
            return {
                "status": r.status_code,
                "tokens": r.json().get("usage", {}).get("total_tokens", 0) if r.status_code == 200 else 0,
            }

        return list(await asyncio.gather(*(one() for _ in range(n))))


def accuracy(workers_list: list[int], n: int) -> list[dict[str, Any]]:
    rows = []
    loop = asyncio.new_event_loop()
    sim = loop.run_until_complete(start_simulator(SimConfig(model="llama-3-8b"), "127.0.0.1", 0))
    with database() as url, tempfile.TemporaryDirectory() as tmp:
        env = {
            **os.environ,
            "CIC_DATABASE_URL": url,
            "CIC_REDIS_URL": REDIS_URL,
            "CIC_SPOOL_DIR": tmp,
            "CIC_LOG_LEVEL": "WARNING",
            "CIC_NODE_REFRESH_S": "0.2",
        }
        cic(env, "db", "upgrade")
        cic(env, "catalog", "seed")
        cic(env, "nodes", "add", "--model", "llama-3-8b", "--region", "us-east", "--endpoint", sim.url)
        for workers in workers_list:
            for kind, limit, max_tokens in (("requests/min", 120, 1), ("tokens/min", 10_000, 50)):
                slug = f"acc-{workers}-{secrets.token_hex(2)}"
                cic(env, "orgs", "create", "--name", slug, "--owner", f"{slug}@bench.example", "--plan", "enterprise")
                cic(
                    env,
                    "envs",
                    "create",
                    "--org",
                    slug,
                    "--name",
                    "prod",
                    "--region",
                    "us-east",
                    "--models",
                    "llama-3-8b",
                )
                flag = "--rpm" if kind == "requests/min" else "--tpm"
                key = cic(env, "keys", "create", "--org", slug, "--env", "prod", "--name", "k", flag, str(limit))["key"]
                port = 18600 + workers
                proc = subprocess.Popen(
                    [CIC, "api", "--port", str(port), "--workers", str(workers)],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
                base = f"http://127.0.0.1:{port}"
                try:
                    deadline = time.monotonic() + 30
                    while True:
                        try:
                            if httpx.get(f"{base}/ready", timeout=1).status_code == 200:
                                break
                        except httpx.TransportError:
                            pass
                        if time.monotonic() > deadline:
                            raise RuntimeError("cic api did not start")
                        time.sleep(0.2)
                    time.sleep(1.0)  # the registry has loaded the node in every worker
                    results = loop.run_until_complete(burst(base, key, n, max_tokens))
                finally:
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(20)
                ok = [r for r in results if r["status"] == 200]
                admitted = len(ok) if kind == "requests/min" else sum(r["tokens"] for r in ok)
                other = sorted({r["status"] for r in results} - {200, 429})
                rows.append(
                    {
                        "workers": workers,
                        "limit": f"{limit:,} {kind}",
                        "sent": n,
                        "admitted": admitted,
                        "error_pct": 100 * (admitted - limit) / limit,
                        "other_statuses": other,
                    }
                )
    loop.run_until_complete(sim.stop())
    loop.close()
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=5000, help="admissions timed for the cost table")
    p.add_argument("--requests", type=int, default=400, help="concurrent requests per accuracy run")
    p.add_argument("--workers", default="1,2,4", help="comma-separated API worker counts (empty: no accuracy table)")
    p.add_argument("--rounds", type=int, default=1, help="times to measure the cost table")
    args = p.parse_args(argv)

    for _ in range(args.rounds):
        # The API runs on uvloop (uvicorn's default loop when uvloop is installed), so the limiter is timed on it too.
        load = os.getloadavg()[0]
        cost = uvloop.run(limiter_cost(args.calls))
        print(f"\n| four-layer limiter (Redis, one round trip; load average {load:.2f}) | p50 ms | p99 ms |")
        print("|---|--:|--:|")
        print(f"| admission (check and charge all layers) | {cost['admit_p50']:.3f} | {cost['admit_p99']:.3f} |")
        print(f"| settlement (tokens, spend, lease) | {cost['settle_p50']:.3f} | {cost['settle_p99']:.3f} |")
        print(f"| bare PING, the limiter's client | {cost['ping_p50']:.3f} | {cost['ping_p99']:.3f} |")
        print(f"| bare PING, redis-py asyncio | {cost['ping_py_p50']:.3f} | {cost['ping_py_p99']:.3f} |")
    if not args.workers.strip():
        return

    rows = accuracy([int(w) for w in args.workers.split(",")], args.requests)
    print("\n| API workers | limit | requests sent at once | admitted | error |")
    print("|--:|---|--:|--:|--:|")
    for r in rows:
        note = f" (other statuses: {r['other_statuses']})" if r["other_statuses"] else ""
        print(f"| {r['workers']} | {r['limit']} | {r['sent']} | {r['admitted']:,} | {r['error_pct']:+.2f}%{note} |")


if __name__ == "__main__":
    main()
