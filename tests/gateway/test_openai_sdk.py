"""The data plane through the official `openai` SDK, against a real server and a vLLM-protocol node."""

from __future__ import annotations

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from sqlmodel import Session

from agent.sim_tokens import chat_prompt_tokens, count_text_tokens
from api.gateway.catalog import Price
from cic.services import catalog
from tests.gateway.conftest import Tenant, add_node, client, usage_records
from tests.servers import Sims

MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hello to the world."},
]


def _price(session: Session, model: str, region: str = "us-east") -> Price:
    p = catalog.prices_in_force(session, model)[region]
    return Price(p.input_per_1m_micros, p.output_per_1m_micros)


def test_chat_non_stream_meters_exactly(sims: Sims, serve, session: Session, tenant: Tenant) -> None:
    sim = sims.start(model="llama-3-8b")
    node_id = add_node(session, sim)
    with serve() as base:
        r = client(base, tenant.key).chat.completions.with_raw_response.create(
            model="llama-3-8b", messages=MESSAGES, max_tokens=12
        )
        resp = r.parse()
    assert r.headers["x-request-id"].startswith("req_")
    assert not any(h.startswith("x-node") or h.startswith("x-region") for h in r.headers)
    text = resp.choices[0].message.content or ""
    assert resp.model == "llama-3-8b" and resp.usage is not None
    assert resp.usage.completion_tokens == 12 == count_text_tokens(text)
    assert resp.usage.prompt_tokens == chat_prompt_tokens(MESSAGES)
    (rec,) = usage_records(session, 1)
    assert (rec.request_id, rec.status, rec.http_status, rec.stream) == (r.headers["x-request-id"], "ok", 200, False)
    assert (rec.prompt_tokens, rec.completion_tokens) == (resp.usage.prompt_tokens, 12)
    assert (rec.org_id, rec.environment_id, rec.api_key_id) == (tenant.org_id, tenant.env_id, tenant.key_id)
    assert (rec.node_id, rec.region_code, rec.endpoint) == (node_id, "us-east", "chat.completions")
    assert rec.cost_picousd == _price(session, "llama-3-8b").cost_picousd(rec.prompt_tokens, 12) > 0
    assert rec.latency_ms >= 0 and rec.ttft_ms is not None


@pytest.mark.parametrize("include_usage", [False, True])
def test_chat_stream_usage_chunk_only_when_asked(
    sims: Sims, serve, session: Session, tenant: Tenant, include_usage: bool
) -> None:
    sim = sims.start(model="llama-3-8b")
    add_node(session, sim)
    with serve() as base:
        chunks = list(
            client(base, tenant.key).chat.completions.create(
                model="llama-3-8b",
                messages=MESSAGES,
                max_tokens=9,
                stream=True,
                stream_options={"include_usage": True} if include_usage else openai.omit,
            )
        )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert count_text_tokens(text) == 9
    usage_chunks = [c for c in chunks if c.usage is not None]
    if include_usage:
        assert len(usage_chunks) == 1 and usage_chunks[0].choices == []
        assert usage_chunks[0].usage is not None and usage_chunks[0].usage.completion_tokens == 9
    else:
        assert usage_chunks == [] and all(c.choices for c in chunks)
    (rec,) = usage_records(session, 1)
    assert rec.stream and rec.status == "ok"
    assert (rec.prompt_tokens, rec.completion_tokens) == (chat_prompt_tokens(MESSAGES), 9)
    assert rec.ttft_ms is not None


def test_completions_embeddings_models(sims: Sims, serve, session: Session, tenant: Tenant) -> None:
    chat = sims.start(model="llama-3-8b")
    emb = sims.start(model="all-minilm-l6-v2", kind="embedding")
    add_node(session, chat)
    add_node(session, emb, model="all-minilm-l6-v2")
    with serve() as base:
        c = client(base, tenant.key)
        comp = c.completions.create(model="llama-3-8b", prompt="Once upon a time", max_tokens=5)
        assert comp.usage is not None and comp.usage.completion_tokens == 5
        assert count_text_tokens(comp.choices[0].text) == 5
        streamed = list(c.completions.create(model="llama-3-8b", prompt="Once", max_tokens=4, stream=True))
        assert count_text_tokens("".join(s.choices[0].text for s in streamed if s.choices)) == 4
        e = c.embeddings.create(model="all-minilm-l6-v2", input=["first text", "second one here"])
        assert len(e.data) == 2 and len(e.data[0].embedding) == 384
        assert e.usage.prompt_tokens == count_text_tokens("first text") + count_text_tokens("second one here")
        ids = [m.id for m in c.models.list()]
        assert ids == ["all-minilm-l6-v2", "llama-3-8b", "mistral-7b"]
        assert c.models.retrieve("mistral-7b").id == "mistral-7b"
        with pytest.raises(openai.NotFoundError) as exc:
            c.models.retrieve("qwen-2.5-72b")  # in the catalog, not enabled here
        assert exc.value.code == "model_not_found"
        with pytest.raises(openai.BadRequestError) as bad:
            c.embeddings.create(model="llama-3-8b", input="x")
        assert bad.value.code == "model_not_supported"
    recs = usage_records(session, 4)
    assert [(r.endpoint, r.model_id) for r in recs] == [
        ("completions", "llama-3-8b"),
        ("completions", "llama-3-8b"),
        ("embeddings", "all-minilm-l6-v2"),
        ("embeddings", "llama-3-8b"),
    ]
    emb_price = _price(session, "all-minilm-l6-v2")
    assert recs[2].completion_tokens == 0 and recs[2].cost_picousd == emb_price.cost_picousd(recs[2].prompt_tokens, 0)
    assert (recs[3].status, recs[3].http_status, recs[3].cost_picousd) == ("error", 400, 0)


def test_errors_in_openai_shape(sims: Sims, serve, session: Session, tenant: Tenant) -> None:
    sim = sims.start(model="llama-3-8b", max_model_len=8192)
    add_node(session, sim)
    with serve() as base:
        with pytest.raises(openai.AuthenticationError) as auth:
            client(base, "clsk_prod_" + "A" * 40).chat.completions.create(model="llama-3-8b", messages=MESSAGES)
        assert auth.value.code == "invalid_api_key"
        with pytest.raises(openai.AuthenticationError):
            client(base, "sk-not-ours").models.list()
        c = client(base, tenant.key)
        with pytest.raises(openai.NotFoundError) as nf:
            c.chat.completions.create(model="gemma-7b", messages=MESSAGES)
        assert nf.value.code == "model_not_found" and nf.value.param == "model"
        with pytest.raises(openai.NotFoundError):
            c.chat.completions.create(model="no-such-model", messages=MESSAGES)
        with pytest.raises(openai.BadRequestError) as big:
            c.chat.completions.create(model="llama-3-8b", messages=[{"role": "user", "content": "word " * 9000}])
        assert big.value.code == "context_length_exceeded"
        with pytest.raises(openai.BadRequestError) as missing:
            c.chat.completions.create(model="llama-3-8b", messages=[])
        assert missing.value.param == "messages"
        raw = httpx.post(
            f"{base}/v1/chat/completions",
            content=b'{"model": "llama-3-8b", "messages": [',
            headers={"Authorization": f"Bearer {tenant.key}", "content-type": "application/json"},
        )
        assert raw.status_code == 400 and raw.json()["error"]["code"] == "invalid_json"
        assert raw.headers["x-request-id"].startswith("req_")
        assert set(raw.json()["error"]) == {"message", "type", "param", "code"}
        # No node for mistral-7b: 503 with retry-after.
        no_node = httpx.post(
            f"{base}/v1/chat/completions",
            json={"model": "mistral-7b", "messages": MESSAGES},
            headers={"Authorization": f"Bearer {tenant.key}"},
        )
        assert no_node.status_code == 503 and no_node.headers["retry-after"]
        assert no_node.json()["error"]["code"] == "no_healthy_node"
        # The node fails every request: 502.
        sim.update(error_rate=1.0)
        with pytest.raises(openai.APIStatusError) as bad_gw:
            c.chat.completions.create(model="llama-3-8b", messages=MESSAGES)
        assert bad_gw.value.status_code == 502
    # Metered from the moment the model is known: not for bad keys or unparseable bodies.
    recs = usage_records(session, 5)
    assert [(r.model_id, r.http_status, r.error_code) for r in recs] == [
        ("gemma-7b", 404, "model_not_found"),
        ("no-such-model", 404, "model_not_found"),
        ("llama-3-8b", 400, "context_length_exceeded"),
        ("mistral-7b", 503, "no_healthy_node"),
        ("llama-3-8b", 502, "upstream_error"),
    ]
    assert all(r.status == "error" and r.cost_picousd == 0 for r in recs)


def test_tenant_scoped_base_url(sims: Sims, serve, session: Session, tenant: Tenant) -> None:
    sim = sims.start(model="llama-3-8b")
    add_node(session, sim)
    with serve() as base:
        scoped = openai.OpenAI(base_url=f"{base}/{tenant.org_slug}/prod/v1", api_key=tenant.key, max_retries=0)
        assert scoped.chat.completions.create(model="llama-3-8b", messages=MESSAGES).choices
        by_id = openai.OpenAI(base_url=f"{base}/{tenant.org_id}/{tenant.env_id}/v1", api_key=tenant.key, max_retries=0)
        assert [m.id for m in by_id.models.list()]
        wrong = openai.OpenAI(base_url=f"{base}/someone-else/prod/v1", api_key=tenant.key, max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            wrong.models.list()
        wrong_env = openai.OpenAI(base_url=f"{base}/{tenant.org_slug}/dev/v1", api_key=tenant.key, max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            wrong_env.chat.completions.create(model="llama-3-8b", messages=MESSAGES)


def test_a_made_up_model_name_of_any_shape_is_metered_without_losing_other_records(
    sims: Sims, serve, session: Session, tenant: Tenant
) -> None:
    """A model name the client made up is 404 and still gets its usage record, whatever its length or bytes
    (the column holds 64 characters; PostgreSQL refuses NUL): written in the same batch as a good request's,
    neither is refused, spooled or lost."""
    sim = sims.start(model="llama-3-8b")
    add_node(session, sim)
    long_name, nul_name = "m" * 200, "bad\x00name"
    with serve() as base:
        c = client(base, tenant.key)
        for name in (long_name, nul_name):
            with pytest.raises(openai.NotFoundError):
                c.chat.completions.create(model=name, messages=MESSAGES)
        c.chat.completions.create(model="llama-3-8b", messages=MESSAGES, max_tokens=3)
    recs = usage_records(session, 3)
    assert [(r.model_id, r.http_status) for r in recs] == [("m" * 64, 404), ("bad\ufffdname", 404), ("llama-3-8b", 200)]
