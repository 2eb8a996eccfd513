"""A key with room to spare has its request written to the node while its admission is in flight in Redis;
the answer waits for the admission. Refused there, the node's request is cut off and the client hears 429;
a key near or over its limits is forwarded only once admitted. Redis's replies are held back by a proxy
to see what happens meanwhile."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from sqlmodel import Session, col, select

from api.gateway.ratelimit import Layer, RedisLimiter
from api.gateway.resp import RespClient
from cic.limits import Limits
from cic.models import UsageRecord
from cic.settings import Settings
from tests.gateway.conftest import add_node, client, make_tenant, usage_records
from tests.gateway.redis_proxy import HoldingRedisProxy
from tests.servers import LoopThread, Sims, wait_until

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "ping"}]


@pytest.fixture
def proxy(loop_thread: LoopThread, gateway_settings: Settings) -> Iterator[HoldingRedisProxy]:
    assert gateway_settings.redis_url
    p = HoldingRedisProxy(loop_thread, gateway_settings.redis_url)
    p.start()
    try:
        yield p
    finally:
        p.stop()


def _use_up(loop: LoopThread, settings: Settings, key_id: str, limits: Limits, n: int) -> None:
    """What other workers do: admit ``n`` requests for the key straight through Redis."""

    async def run() -> None:
        assert settings.redis_url
        limiter = RedisLimiter(RespClient.from_url(settings.redis_url))
        try:
            for i in range(n):
                adm = await limiter.admit((Layer("key", key_id, limits),), 1, f"other-{i}")
                assert adm.allowed
        finally:
            await limiter.close()

    loop.run(run())


def test_roomy_key_reaches_the_node_while_its_admission_is_in_flight(
    sims: Sims, serve, session: Session, pepper: str, proxy: HoldingRedisProxy
) -> None:
    sim = sims.start(model="llama-3-8b")
    add_node(session, sim)
    tenant = make_tenant(session, pepper, key_limits={"rpm": 1000})
    with serve(redis_url=proxy.url) as base:
        c = client(base, tenant.key)
        c.chat.completions.create(model="llama-3-8b", messages=MESSAGES, max_tokens=2)  # admitted first: room
        assert sim.stats.requests_received == 1
        proxy.hold()
        try:
            with ThreadPoolExecutor(1) as pool:
                answer = pool.submit(c.chat.completions.with_raw_response.create, model="llama-3-8b", messages=MESSAGES)
                wait_until(lambda: sim.stats.requests_received == 2, what="the node to get the request")
                assert not answer.done()  # nothing reaches the client before the admission is known
                proxy.release()
                raw = answer.result(timeout=30)
        finally:
            proxy.release()
        assert raw.parse().choices and raw.headers["x-ratelimit-remaining-requests"] == "998"
    recs = usage_records(session, 2)
    assert all(r.status == "ok" and r.node_id for r in recs)


def test_refused_after_overlap_cuts_the_node_off_and_then_waits(
    loop_thread: LoopThread,
    sims: Sims,
    serve,
    session: Session,
    pepper: str,
    gateway_settings: Settings,
    proxy: HoldingRedisProxy,
) -> None:
    sim = sims.start(model="llama-3-8b", ttft_ms=2000)  # still generating when the refusal arrives
    add_node(session, sim)
    limits = Limits(rpm=20)
    tenant = make_tenant(session, pepper, key_limits={"rpm": 20})
    with serve(redis_url=proxy.url) as base:
        c = client(base, tenant.key)
        sim.update(ttft_ms=0)
        c.chat.completions.create(model="llama-3-8b", messages=MESSAGES, max_tokens=2)  # 19 left: room
        sim.update(ttft_ms=2000)
        _use_up(loop_thread, gateway_settings, tenant.key_id, limits, 19)  # other workers take the rest
        with pytest.raises(openai.RateLimitError) as refused:
            c.chat.completions.create(model="llama-3-8b", messages=MESSAGES, max_tokens=2)
        assert refused.value.code == "rate_limit_exceeded"
        assert sim.stats.requests_received == 2  # it was overlapped: the node had it...
        wait_until(lambda: sim.stats.finished.get("abort") == 1, what="the node to abort it")  # ...and dropped it
        # Refused once, the key is no longer forwarded before its admission is known.
        with pytest.raises(openai.RateLimitError):
            c.chat.completions.create(model="llama-3-8b", messages=MESSAGES, max_tokens=2)
        assert sim.stats.requests_received == 2
    recs = usage_records(session, 3)
    assert [(r.http_status, r.error_code) for r in recs[1:]] == [(429, "rate_limit_exceeded")] * 2
    assert all(r.node_id is None and r.prompt_tokens == r.completion_tokens == r.cost_picousd == 0 for r in recs[1:])


def test_client_leaving_before_its_admission_returns_gives_back_the_reservation(
    sims: Sims, serve, session: Session, pepper: str, proxy: HoldingRedisProxy
) -> None:
    sim = sims.start(model="llama-3-8b")
    add_node(session, sim)
    tenant = make_tenant(session, pepper, key_limits={"rpm": 1000, "tpm": 100_000})
    with serve(redis_url=proxy.url) as base:
        c = client(base, tenant.key)
        first = c.chat.completions.with_raw_response.create(model="llama-3-8b", messages=MESSAGES, max_tokens=2)
        tokens_left = int(first.headers["x-ratelimit-remaining-tokens"])
        proxy.hold()
        try:
            host, port = base.removeprefix("http://").split(":")
            body = json.dumps({"model": "llama-3-8b", "messages": MESSAGES, "max_tokens": 5000}).encode()
            with socket.create_connection((host, int(port))) as raw:
                raw.sendall(
                    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    + f"Authorization: Bearer {tenant.key}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                wait_until(lambda: sim.stats.requests_received == 2, what="the node to get the request")
            # The client is gone before its admission came back (5,000 tokens reserved there).
            wait_until(lambda: _cancelled(session), what="the gateway to see the client leave")
        finally:
            proxy.release()

        def reservation_given_back() -> bool:
            again = c.chat.completions.with_raw_response.create(model="llama-3-8b", messages=MESSAGES, max_tokens=2)
            # Each probe uses what the first request used; 5,000 tokens held would show.
            return int(again.headers["x-ratelimit-remaining-tokens"]) > tokens_left - 1000

        wait_until(reservation_given_back, what="the abandoned admission's tokens to be given back")
    cancelled = _cancelled(session)
    assert len(cancelled) == 1 and cancelled[0].status == "cancelled"
    assert cancelled[0].node_id is None and cancelled[0].prompt_tokens == cancelled[0].cost_picousd == 0


def _cancelled(session: Session) -> list[UsageRecord]:
    session.expire_all()
    return list(session.exec(select(UsageRecord).where(col(UsageRecord.http_status) == 499)))
