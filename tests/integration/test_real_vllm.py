"""The platform in front of a real vLLM (CPU build), through the node agent: the official OpenAI SDK
against the gateway, exact metering from vLLM's own usage, scraped vLLM metrics in heartbeats, drain.

Needs ``./scripts/install-vllm-cpu`` (see conftest.py); ~1-2 minutes, most of it vLLM starting.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Sequence
from functools import partial

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam
from sqlmodel import Session, col, select

from agent.scrape import parse_prometheus
from cic.models import Node, UsageRecord
from tests.gateway.conftest import make_tenant
from tests.integration.conftest import CHAT_MODEL, EMBED_MODEL, RealNode
from tests.servers import LoopThread, wait_until

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello, how is the cache on this node?"}]
MAX_TOKENS = 8
# What agent/scrape.py reads from vLLM's /metrics (the current names; it also accepts older ones).
SCRAPED = {
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:kv_cache_usage_perc",
    "vllm:prompt_tokens_total",
    "vllm:generation_tokens_total",
    "vllm:time_to_first_token_seconds_sum",
    "vllm:time_to_first_token_seconds_count",
    "vllm:prefix_cache_queries_total",
    "vllm:prefix_cache_hits_total",
}


def _record(session: Session, request_id: str) -> UsageRecord:
    """The usage record of one request (the meter writes in batches: poll)."""

    def find() -> UsageRecord | None:
        session.expire_all()
        return session.exec(select(UsageRecord).where(col(UsageRecord.request_id) == request_id)).first()

    return wait_until(find, timeout=15, what=f"usage record {request_id}")


def _assert_completed(rec: UsageRecord) -> None:
    """A stream the client read to its end is metered as completed, even though the SDK hangs up at [DONE]."""
    assert (rec.status, rec.http_status, rec.error_code) == ("ok", 200, None)


def _node(session: Session, node_id: str | None) -> Node:
    assert node_id is not None
    session.expire_all()
    n = session.get(Node, node_id)
    assert n is not None
    return n


def _vllm_metrics(node: RealNode) -> dict[str, float]:
    r = httpx.get(f"{node.engine.url}/metrics", timeout=10)
    r.raise_for_status()
    return parse_prometheus(r.text)


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def _group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def test_real_vllm_through_gateway_and_agent(
    real_nodes: dict[str, RealNode], plane: str, loop_thread: LoopThread, session: Session, pepper: str
) -> None:
    began = time.monotonic()
    chat_node, embed_node = real_nodes[CHAT_MODEL], real_nodes[EMBED_MODEL]
    for node in (chat_node, embed_node):
        n = _node(session, node.agent.node_id)
        assert (n.status, n.model_id, n.region_code, n.managed) == ("healthy", node.model, "us-east", True)
        assert n.endpoint_url == node.engine.url

    tenant = make_tenant(session, pepper, models=(CHAT_MODEL, EMBED_MODEL))
    client = openai.OpenAI(base_url=f"{plane}/v1", api_key=tenant.key, max_retries=0, timeout=60)
    chat_ids: list[str] = []

    # --- non-streaming: vLLM's usage reaches the client and, exactly, the usage record ----------------
    def first_reply() -> ChatCompletion | None:
        """None while the gateway has not yet seen the node (503)."""
        try:
            return client.chat.completions.create(
                model=CHAT_MODEL, messages=MESSAGES, max_tokens=MAX_TOKENS, temperature=0
            )
        except openai.APIStatusError as exc:
            if exc.status_code == 503:
                return None
            raise

    reply = wait_until(first_reply, timeout=10, interval=0.2, what="the gateway routes to the real vLLM node")
    assert reply.model == CHAT_MODEL and reply.choices[0].finish_reason in ("length", "stop")
    assert reply.usage is not None and reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0
    assert reply._request_id is not None
    rec = _record(session, reply._request_id)
    chat_ids.append(rec.request_id)
    assert (rec.status, rec.http_status, rec.endpoint, rec.stream) == ("ok", 200, "chat.completions", False)
    assert (rec.model_id, rec.region_code, rec.node_id) == (CHAT_MODEL, "us-east", chat_node.agent.node_id)
    assert (rec.prompt_tokens, rec.completion_tokens) == (reply.usage.prompt_tokens, reply.usage.completion_tokens)
    assert rec.cost_picousd > 0

    # --- streaming with include_usage: one final usage chunk with no choices ----------------------------
    stream = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=MESSAGES,
        max_tokens=MAX_TOKENS,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    with_usage = [c for c in chunks if c.usage is not None]
    assert len(with_usage) == 1 and with_usage[0] is chunks[-1] and chunks[-1].choices == []
    assert all(c.choices for c in chunks[:-1])
    usage = chunks[-1].usage
    assert usage is not None and usage.prompt_tokens > 0 and usage.completion_tokens > 0
    streamed_text = "".join(c.choices[0].delta.content or "" for c in chunks[:-1])
    rec = _record(session, stream.response.headers["x-request-id"])
    chat_ids.append(rec.request_id)
    assert (rec.stream, rec.node_id) == (True, chat_node.agent.node_id)
    assert (rec.prompt_tokens, rec.completion_tokens) == (usage.prompt_tokens, usage.completion_tokens)
    _assert_completed(rec)

    # --- streaming without include_usage: the client gets no usage, the meter still gets vLLM's ---------
    stream = client.chat.completions.create(
        model=CHAT_MODEL, messages=MESSAGES, max_tokens=MAX_TOKENS, temperature=0, stream=True
    )
    chunks = list(stream)
    assert chunks and all(c.usage is None and c.choices for c in chunks)
    # Greedy decoding of the same prompt: the same text, so vLLM counted the same tokens as above.
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == streamed_text
    rec = _record(session, stream.response.headers["x-request-id"])
    chat_ids.append(rec.request_id)
    assert rec.stream
    assert (rec.prompt_tokens, rec.completion_tokens) == (usage.prompt_tokens, usage.completion_tokens)
    _assert_completed(rec)

    # --- vLLM's own counters agree with the records, token for token ----------------------------------
    session.expire_all()
    chat_recs = list(session.exec(select(UsageRecord).where(col(UsageRecord.model_id) == CHAT_MODEL)))
    assert sorted(r.request_id for r in chat_recs) == sorted(chat_ids)
    vllm = _vllm_metrics(chat_node)
    assert vllm.keys() >= SCRAPED, f"vLLM no longer exposes {sorted(SCRAPED - vllm.keys())}"
    assert vllm["vllm:generation_tokens_total"] == sum(r.completion_tokens for r in chat_recs)
    assert vllm["vllm:prompt_tokens_total"] == sum(r.prompt_tokens for r in chat_recs)

    # --- a prompt longer than vLLM's max_model_len (512): vLLM's 400 reaches the SDK -------------------
    too_long: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello " * 700}]
    with pytest.raises(openai.BadRequestError) as rejected:
        client.chat.completions.create(model=CHAT_MODEL, messages=too_long, max_tokens=MAX_TOKENS)
    assert "maximum context length is 512" in rejected.value.message
    assert rejected.value.request_id is not None
    rec = _record(session, rejected.value.request_id)
    assert (rec.status, rec.http_status, rec.error_code) == ("error", 400, "upstream_rejected")
    assert rec.completion_tokens == 0
    body = rejected.value.body
    assert isinstance(body, dict)
    # vLLM's own error ({"type": "BadRequestError", "code": 400}) comes out in OpenAI's terms...
    assert (body.get("type"), body.get("code")) == ("invalid_request_error", "context_length_exceeded")
    # ...and a prompt the node refused is not billed.
    assert (rec.prompt_tokens, rec.cost_picousd) == (0, 0)

    # --- embeddings: 384 dimensions, deterministic, metered --------------------------------------------
    sentence = "The quick brown fox jumps over the lazy dog."
    first = client.embeddings.create(model=EMBED_MODEL, input=sentence)
    again = client.embeddings.create(model=EMBED_MODEL, input=[sentence, "Invoices are due at the end of the month."])
    assert first.model == EMBED_MODEL and len(first.data) == 1 and len(again.data) == 2
    assert len(first.data[0].embedding) == 384
    assert _cosine(first.data[0].embedding, again.data[0].embedding) > 0.9999
    assert _cosine(first.data[0].embedding, again.data[1].embedding) < 0.9
    assert first.usage.prompt_tokens > 0 and first._request_id is not None
    rec = _record(session, first._request_id)
    assert (rec.status, rec.endpoint, rec.model_id) == ("ok", "embeddings", EMBED_MODEL)
    assert rec.node_id == embed_node.agent.node_id
    assert (rec.prompt_tokens, rec.completion_tokens) == (first.usage.prompt_tokens, 0)

    # --- heartbeats carry vLLM's scraped metrics into nodes.load ---------------------------------------
    def chat_load_caught_up() -> dict[str, float] | None:
        load = _node(session, chat_node.agent.node_id).load
        done = load.get("generation_tokens_total") == vllm["vllm:generation_tokens_total"]
        return load if done and load.get("ttft_seconds_count", 0) >= len(chat_ids) else None

    load = wait_until(chat_load_caught_up, timeout=10, interval=0.2, what="vLLM's counters in the chat heartbeat")
    assert load["generation_tokens_total"] > 0 and load["prompt_tokens_total"] == vllm["vllm:prompt_tokens_total"]
    assert "kv_cache_usage_perc" in load and 0.0 <= load["kv_cache_usage_perc"] <= 1.0
    assert load["ttft_seconds_sum"] > 0 and load["prefix_cache_queries_total"] > 0
    embed_prompt_tokens = _vllm_metrics(embed_node)["vllm:prompt_tokens_total"]
    assert embed_prompt_tokens >= first.usage.prompt_tokens
    wait_until(
        lambda: _node(session, embed_node.agent.node_id).load.get("prompt_tokens_total") == embed_prompt_tokens,
        timeout=10,
        interval=0.2,
        what="vLLM's counters in the embedding heartbeat",
    )
    sys.stderr.write(f"\n[integration] chat node load: {load}\n")

    # --- drain both: they leave the fleet, the gateway stops routing, vLLM exits -----------------------
    drained = time.monotonic()
    for node in (chat_node, embed_node):
        loop_thread.loop.call_soon_threadsafe(node.agent.request_drain, "integration test: drain")
    for node in (chat_node, embed_node):
        node.run.result(60)
        assert node.agent.state == "stopped"
        n = _node(session, node.agent.node_id)
        assert n.status == "offline" and n.deregistered_at is not None
        proc = node.engine.proc
        assert proc is not None and proc.returncode is not None
        wait_until(partial(_group_gone, proc.pid), timeout=30, what=f"vLLM's processes for {node.model} exit")
    with pytest.raises(openai.APIStatusError) as refused:
        client.chat.completions.create(model=CHAT_MODEL, messages=MESSAGES, max_tokens=MAX_TOKENS)
    assert (refused.value.status_code, refused.value.code) == (503, "no_healthy_node")
    sys.stderr.write(
        f"[integration] requests {drained - began:.1f} s, drain and exit {time.monotonic() - drained:.1f} s\n"
    )
