"""A node that is not OpenAI-native (here: an Anthropic-protocol provider) is reached through LiteLLM,
and the client still sees OpenAI's protocol, streams and errors included."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest
from aiohttp import web
from openai.types.chat import ChatCompletionMessageParam
from sqlmodel import Session

from cic.models.nodes import NodeCreate
from cic.services import nodes
from cic.services.authz import Actor
from tests.fakes.anthropic import API_KEY, FakeAnthropic
from tests.gateway.conftest import Tenant, client, usage_records
from tests.servers import LoopThread, free_port

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello over there"}]


@pytest.fixture
def provider(loop_thread: LoopThread) -> Iterator[tuple[FakeAnthropic, str]]:
    fake = FakeAnthropic()
    runner = web.AppRunner(fake.app())
    port = free_port()

    async def start() -> None:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()

    loop_thread.run(start())
    yield fake, f"http://127.0.0.1:{port}"
    loop_thread.run(runner.cleanup())


def test_overflow_provider_through_litellm(
    provider: tuple[FakeAnthropic, str], serve, session: Session, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, url = provider
    monkeypatch.setenv("CIC_TEST_ANTHROPIC_KEY", API_KEY)
    node = nodes.add_static_node(
        session,
        Actor.system(),
        NodeCreate(
            model="mistral-7b",
            region="us-east",
            endpoint_url=url,
            engine="anthropic",
            served_model="claude-overflow-1",
            api_key_env="CIC_TEST_ANTHROPIC_KEY",
            provider="anthropic",
        ),
    )
    session.commit()
    with serve() as base:
        c = client(base, tenant.key)
        resp = c.chat.completions.create(model="mistral-7b", messages=MESSAGES, max_tokens=4, temperature=0.2)
        assert resp.model == "mistral-7b"
        assert resp.choices[0].message.content == "Bonjour from the overflow"
        assert resp.usage is not None and (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (6, 4)
        assert fake.requests[-1]["model"] == "claude-overflow-1" and fake.requests[-1]["temperature"] == 0.2

        chunks = list(
            c.chat.completions.create(
                model="mistral-7b", messages=MESSAGES, max_tokens=3, stream=True, stream_options={"include_usage": True}
            )
        )
        text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        assert text == "Bonjour from the"
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3
        assert {ch.model for ch in chunks} == {"mistral-7b"}

        quiet = list(c.chat.completions.create(model="mistral-7b", messages=MESSAGES, max_tokens=2, stream=True))
        assert all(ch.usage is None for ch in quiet)

        fake.fail_with = 529
        with pytest.raises(openai.APIStatusError) as exc:
            c.chat.completions.create(model="mistral-7b", messages=MESSAGES, max_tokens=2)
        assert exc.value.status_code == 502
    recs = usage_records(session, 4)
    assert [(r.status, r.prompt_tokens, r.completion_tokens) for r in recs[:3]] == [
        ("ok", 6, 4),
        ("ok", 6, 3),
        ("ok", 6, 2),
    ]
    assert all(r.node_id == node.id and r.cost_picousd > 0 for r in recs[:3])
    assert recs[3].http_status == 502
