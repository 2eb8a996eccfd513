"""The node agent against a real control plane: registration, heartbeats with scraped load, drain on
SIGTERM-equivalent and on a spot notice, and the gateway routing around it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from aiohttp import web
from openai.types.chat import ChatCompletionMessageParam
from sqlalchemy.engine import Engine as SAEngine
from sqlmodel import Session

from agent.agent import AgentConfig, NodeAgent
from agent.engine import Engine
from cic.models import Node
from cic.services import nodes
from cic.services.authz import Actor
from cic.settings import Settings
from tests.gateway.conftest import make_tenant
from tests.servers import LoopThread, Sims, api_server, free_port, wait_until

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def loop_thread() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.close()


@pytest.fixture
def sims(loop_thread: LoopThread) -> Iterator[Sims]:
    s = Sims(loop_thread)
    yield s
    s.stop_all()


@pytest.fixture
def plane(loop_thread: LoopThread, settings: Settings, engine: SAEngine, tmp_path: Any) -> Iterator[str]:
    fast = settings.model_copy(update={"spool_dir": tmp_path, "node_refresh_s": 0.2, "heartbeat_interval_s": 0.2})
    with api_server(loop_thread, fast) as base:
        yield base


def _token(session: Session, pepper: str) -> str:
    plaintext, _ = nodes.create_node_token(session, Actor.system(), pepper=pepper)
    session.commit()
    return plaintext


def _node(session: Session, node_id: str) -> Node:
    session.expire_all()
    n = session.get(Node, node_id)
    assert n is not None
    return n


def test_agent_lifecycle_with_gateway(
    loop_thread: LoopThread, sims: Sims, plane: str, session: Session, pepper: str
) -> None:
    sim = sims.start(model="llama-3-8b", itl_ms=10)
    agent = NodeAgent(
        AgentConfig(
            control_plane=plane, token=_token(session, pepper), region="us-east", model="llama-3-8b", drain_settle_s=0.5
        ),
        Engine(sim.url),
    )
    running = asyncio.run_coroutine_threadsafe(agent.run(), loop_thread.loop)
    wait_until(lambda: agent.heartbeats >= 2, timeout=10, what="heartbeats")
    assert agent.node_id is not None
    node = _node(session, agent.node_id)
    assert node.managed and node.status == "healthy" and node.endpoint_url == sim.url

    tenant = make_tenant(session, pepper)
    c = openai.OpenAI(base_url=f"{plane}/v1", api_key=tenant.key, max_retries=0)
    wait_until(
        lambda: c.chat.completions.create(model="llama-3-8b", messages=MESSAGES, max_tokens=2).choices,
        timeout=5,
        what="routed to the agent's node",
    )
    # The heartbeat carries the engine's scraped counters.
    wait_until(
        lambda: _node(session, agent.node_id or "").load.get("generation_tokens_total", 0) >= 2,
        timeout=5,
        what="load in heartbeat",
    )

    # Drain with a long request in flight: it finishes, then the node leaves the fleet.
    def long_request() -> str:
        r = c.chat.completions.create(model="llama-3-8b", messages=MESSAGES, max_tokens=100)
        return r.choices[0].finish_reason or ""

    pending = asyncio.run_coroutine_threadsafe(asyncio.to_thread(long_request), loop_thread.loop)
    wait_until(lambda: sim.stats.running == 1, timeout=5, what="request in flight")
    loop_thread.loop.call_soon_threadsafe(agent.request_drain, "test SIGTERM")
    wait_until(lambda: _node(session, agent.node_id or "").status == "draining", timeout=5, what="draining")

    def refused() -> bool:  # no new traffic once the gateways have seen the drain (within a refresh)
        try:
            c.chat.completions.create(model="llama-3-8b", messages=MESSAGES, max_tokens=2)
        except openai.APIStatusError as exc:
            return exc.status_code == 503
        return False

    wait_until(refused, timeout=3, what="gateway stops routing to the draining node")
    assert pending.result(15) == "length"
    running.result(20)
    node = _node(session, agent.node_id)
    assert node.status == "offline" and node.deregistered_at is not None and agent.state == "stopped"


def test_spot_notice_triggers_drain(
    loop_thread: LoopThread, sims: Sims, plane: str, session: Session, pepper: str
) -> None:
    notice = {"on": False}

    async def instance_action(_: web.Request) -> web.Response:
        if notice["on"]:
            return web.json_response({"action": "terminate", "time": "2026-11-23T12:00:00Z"})
        return web.Response(status=404)

    async def token(_: web.Request) -> web.Response:
        return web.Response(text="imds-token")

    app = web.Application()
    app.router.add_get("/latest/meta-data/spot/instance-action", instance_action)
    app.router.add_put("/latest/api/token", token)
    runner = web.AppRunner(app)
    port = free_port()

    async def start() -> None:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()

    loop_thread.run(start())
    try:
        sim = sims.start(model="llama-3-8b")
        agent = NodeAgent(
            AgentConfig(
                control_plane=plane,
                token=_token(session, pepper),
                region="us-east",
                model="llama-3-8b",
                spot=True,
                spot_cloud="aws",
                spot_notice_url=f"http://127.0.0.1:{port}/latest/meta-data/spot/instance-action",
                spot_poll_s=0.1,
                drain_settle_s=0.2,
            ),
            Engine(sim.url),
        )
        running = asyncio.run_coroutine_threadsafe(agent.run(), loop_thread.loop)
        wait_until(lambda: agent.heartbeats >= 1, timeout=10, what="registered")
        assert agent.state == "registered"
        notice["on"] = True
        running.result(10)
        assert "spot termination notice" in agent.drain_reason
        assert _node(session, agent.node_id or "").status == "offline"
    finally:
        loop_thread.run(runner.cleanup())


def test_node_killed_mid_load_costs_no_unstarted_request(
    loop_thread: LoopThread, sims: Sims, plane: str, session: Session, pepper: str
) -> None:
    doomed = sims.start(model="llama-3-8b", crash_after=5)
    steady = sims.start(model="llama-3-8b")
    agents = [
        NodeAgent(
            AgentConfig(control_plane=plane, token=_token(session, pepper), region="us-east", model="llama-3-8b"),
            Engine(s.url),
        )
        for s in (doomed, steady)
    ]
    runs = [asyncio.run_coroutine_threadsafe(a.run(), loop_thread.loop) for a in agents]
    wait_until(lambda: all(a.heartbeats >= 1 for a in agents), timeout=10, what="both registered")
    tenant = make_tenant(session, pepper)

    async def load() -> list[int]:
        async with httpx.AsyncClient(timeout=20) as http:

            async def one(i: int) -> int:
                r = await http.post(
                    f"{plane}/v1/chat/completions",
                    headers={"Authorization": f"Bearer {tenant.key}"},
                    json={"model": "llama-3-8b", "messages": MESSAGES, "max_tokens": 3},
                )
                return r.status_code

            return list(await asyncio.gather(*(one(i) for i in range(60))))

    wait_until(
        lambda: (
            httpx.post(
                f"{plane}/v1/chat/completions",
                headers={"Authorization": f"Bearer {tenant.key}"},
                json={"model": "llama-3-8b", "messages": MESSAGES},
            ).status_code
            == 200
        ),
        timeout=5,
        what="routable",
    )
    statuses = asyncio.run(load())
    assert doomed.crashed
    assert statuses == [200] * 60
    for a in agents:
        loop_thread.loop.call_soon_threadsafe(a.request_drain, "test over")
    for r in runs:
        r.result(20)
