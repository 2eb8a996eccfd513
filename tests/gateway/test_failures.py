"""Streams cut by the client or the node, failover before the first byte, renamed models, last use."""

from __future__ import annotations

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from sqlmodel import Session

from agent.sim_tokens import count_text_tokens
from cic.models import ApiKey
from tests.gateway.conftest import Tenant, add_node, client, usage_records
from tests.servers import Sims, wait_until

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Tell me a long story."}]


@pytest.mark.parametrize("protocol", ["api", "httptools"])
def test_client_disconnect_cancels_upstream_and_bills_what_was_sent(
    sims: Sims, serve, session: Session, tenant: Tenant, protocol: str
) -> None:
    """Under the API's protocol the connection reports the disconnect; under uvicorn's own (any other ASGI
    server), a watcher waits for ``http.disconnect``."""
    sim = sims.start(model="llama-3-8b", itl_ms=20)
    add_node(session, sim)
    with serve(**({"http": "httptools"} if protocol == "httptools" else {})) as base:
        received = 0
        with (
            httpx.Client(timeout=10) as http,
            http.stream(
                "POST",
                f"{base}/v1/chat/completions",
                headers={"Authorization": f"Bearer {tenant.key}"},
                json={"model": "llama-3-8b", "messages": MESSAGES, "max_tokens": 400, "stream": True},
            ) as r,
        ):
            assert r.status_code == 200
            for line in r.iter_lines():
                if '"content":"' in line and '"content":""' not in line:
                    received += 1
                if received == 5:
                    break  # leaving the block closes the connection mid-stream
        # The node stops generating long before the 400 tokens (8 s) would have taken.
        wait_until(lambda: sim.stats.running == 0, timeout=3, what="upstream request cancelled")
        assert sim.stats.generation_tokens < 400
    (rec,) = usage_records(session, 1)
    assert (rec.status, rec.http_status, rec.error_code) == ("cancelled", 499, "client_disconnected")
    assert 5 <= rec.completion_tokens < 400
    assert rec.prompt_tokens > 0 and rec.cost_picousd > 0


def test_node_breaking_mid_stream_is_billed_for_what_was_sent(
    sims: Sims, serve, session: Session, tenant: Tenant
) -> None:
    sim = sims.start(model="llama-3-8b", fail_stream_after=6)
    add_node(session, sim)
    with serve() as base:
        text = ""
        try:
            for chunk in client(base, tenant.key).chat.completions.create(
                model="llama-3-8b", messages=MESSAGES, max_tokens=50, stream=True
            ):
                text += (chunk.choices[0].delta.content or "") if chunk.choices else ""
        except (openai.APIError, httpx.HTTPError):
            pass
    (rec,) = usage_records(session, 1)
    assert rec.status == "error" and rec.error_code in ("upstream_stream_truncated", "upstream_stream_broken")
    assert rec.completion_tokens == count_text_tokens(text) > 0
    assert rec.cost_picousd > 0


def test_failover_before_first_byte(sims: Sims, serve, session: Session, tenant: Tenant) -> None:
    broken = sims.start(model="llama-3-8b", error_rate=1.0)
    good = sims.start(model="llama-3-8b")
    gone = sims.start(model="llama-3-8b")
    add_node(session, broken)
    good_id = add_node(session, good)
    add_node(session, gone)
    with serve() as base:
        sims.stop(gone)  # registered and believed healthy, but refuses connections
        c = client(base, tenant.key)
        for i in range(12):
            stream = i % 2 == 1
            if stream:
                assert "".join(
                    ch.choices[0].delta.content or ""
                    for ch in c.chat.completions.create(
                        model="llama-3-8b", messages=MESSAGES, max_tokens=3, stream=True
                    )
                    if ch.choices
                )
            else:
                assert c.chat.completions.create(model="llama-3-8b", messages=MESSAGES, max_tokens=3).choices
    recs = usage_records(session, 12)
    assert all(r.status == "ok" and r.node_id == good_id for r in recs)
    assert broken.stats.errors_injected > 0


def test_node_serving_under_another_name(sims: Sims, serve, session: Session, tenant: Tenant) -> None:
    sim = sims.start(model="meta-llama/Meta-Llama-3-8B-Instruct")
    add_node(session, sim, served_model="meta-llama/Meta-Llama-3-8B-Instruct")
    with serve() as base:
        c = client(base, tenant.key)
        assert c.chat.completions.create(model="llama-3-8b", messages=MESSAGES, max_tokens=2).model == "llama-3-8b"
        chunks = list(c.chat.completions.create(model="llama-3-8b", messages=MESSAGES, max_tokens=2, stream=True))
        assert {ch.model for ch in chunks} == {"llama-3-8b"}
    assert all(r.status == "ok" for r in usage_records(session, 2))


def test_last_used_at_is_batched(sims: Sims, serve, session: Session, tenant: Tenant) -> None:
    sim = sims.start(model="llama-3-8b")
    add_node(session, sim)
    with serve(last_used_flush_s=0.2) as base:
        client(base, tenant.key).models.list()

        def used() -> bool:
            session.expire_all()
            key = session.get(ApiKey, tenant.key_id)
            return key is not None and key.last_used_at is not None

        wait_until(used, timeout=5, what="last_used_at written")


def _samples(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def test_prometheus_metrics(sims: Sims, serve, session: Session, tenant: Tenant) -> None:
    sim = sims.start(model="llama-3-8b")
    add_node(session, sim)
    requests = 'cic_requests_total{endpoint="chat.completions",model="llama-3-8b",status="200"}'
    completion = f'cic_tokens_total{{kind="completion",model="llama-3-8b",org="{tenant.org_id}"}}'
    with serve() as base:
        before = _samples(httpx.get(f"{base}/metrics").text)
        client(base, tenant.key).chat.completions.create(model="llama-3-8b", messages=MESSAGES, max_tokens=3)
        after = _samples(httpx.get(f"{base}/metrics").text)
    assert after[requests] - before.get(requests, 0) == 1
    assert after[completion] - before.get(completion, 0) == 3
    assert any(k.startswith("cic_request_latency_seconds_bucket") for k in after)
