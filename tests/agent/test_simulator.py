"""The vLLM simulator on a real loopback port, driven by the official ``openai`` SDK and raw httpx."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import openai
import orjson
import pytest
from openai.types.chat import ChatCompletionMessageParam

from agent.simulator import RunningSim, SimConfig, chat_prompt_tokens, count_text_tokens, start_simulator

Start = Callable[..., Awaitable[RunningSim]]
_counter = 0


def unique(text: str = "Tell me about simulators") -> str:
    """A prompt no earlier request used (so the prefix cache does not hit)."""
    global _counter
    _counter += 1
    return f"[{_counter}] {text}"


def user(text: str) -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": text}]


def parse_metrics(text: str) -> dict[str, float]:
    """``{'name{labels}': value}`` of every sample line."""
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            samples[key] = float(value)
    return samples


def sample(samples: dict[str, float], name: str, model: str = "llama-3-8b", **labels: str) -> float:
    all_labels = {"engine": "0", "model_name": model, **labels}
    rendered = ",".join(f'{k}="{v}"' for k, v in sorted(all_labels.items()))
    return samples[f"{name}{{{rendered}}}"]


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await check():
        if loop.time() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.01)


def sse_events(body: str) -> list[str]:
    assert body.endswith("\n\n")
    events = body[:-2].split("\n\n")
    assert all(e.startswith("data: ") for e in events)
    return [e.removeprefix("data: ") for e in events]


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    started: list[RunningSim] = []

    async def _start(**settings: Any) -> RunningSim:
        sim = await start_simulator(SimConfig(**settings))
        started.append(sim)
        return sim

    yield _start
    for sim in started:
        await sim.stop()


@pytest.fixture
async def sim(start: Start) -> RunningSim:
    return await start()


@pytest.fixture
async def http(sim: RunningSim) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sim.url, timeout=10) as client:
        yield client


@pytest.fixture
async def oai(sim: RunningSim) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(base_url=sim.url + "/v1", api_key="x", max_retries=0)
    yield client
    await client.close()


async def metrics(http: httpx.AsyncClient) -> dict[str, float]:
    r = await http.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse_metrics(r.text)


# -- chat ---------------------------------------------------------------------------------------------------------


async def test_chat_usage_matches_the_token_model(oai: openai.AsyncOpenAI) -> None:
    messages = user(unique("What is a simulator, really?"))
    r = await oai.chat.completions.create(model="llama-3-8b", messages=messages, max_tokens=7)
    assert r.id.startswith("chatcmpl-")
    assert r.object == "chat.completion"
    assert r.model == "llama-3-8b"
    choice = r.choices[0]
    assert choice.index == 0
    assert choice.finish_reason == "length"
    assert choice.logprobs is None
    assert choice.message.role == "assistant"
    assert r.usage is not None
    assert r.usage.completion_tokens == 7 == count_text_tokens(choice.message.content or "")
    assert r.usage.prompt_tokens == chat_prompt_tokens(messages) == count_text_tokens(str(messages[0]["content"])) + 6
    assert r.usage.total_tokens == r.usage.prompt_tokens + 7
    assert r.usage.prompt_tokens_details is None

    r = await oai.chat.completions.create(model="llama-3-8b", messages=user(unique()))
    assert r.choices[0].finish_reason == "stop"
    assert r.usage is not None
    assert r.usage.completion_tokens == 16 == count_text_tokens(r.choices[0].message.content or "")


async def test_chat_raw_shape(http: httpx.AsyncClient) -> None:
    r = await http.post(
        "/v1/chat/completions", json={"messages": user(unique()), "max_completion_tokens": 3, "temperature": 0}
    )
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert list(body) == [
        "id",
        "object",
        "created",
        "model",
        "choices",
        "service_tier",
        "system_fingerprint",
        "usage",
        "prompt_logprobs",
        "kv_transfer_params",
    ]
    assert isinstance(body["created"], int)
    assert body["choices"][0]["logprobs"] is None
    assert body["choices"][0]["stop_reason"] is None
    assert body["usage"] == {
        "prompt_tokens": body["usage"]["prompt_tokens"],
        "total_tokens": body["usage"]["prompt_tokens"] + 3,
        "completion_tokens": 3,
        "prompt_tokens_details": None,
    }


async def test_chat_stream_without_usage(http: httpx.AsyncClient, oai: openai.AsyncOpenAI) -> None:
    r = await http.post("/v1/chat/completions", json={"messages": user(unique()), "max_tokens": 5, "stream": True})
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/event-stream; charset=utf-8"
    events = sse_events(r.text)
    assert events[-1] == "[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    assert len(chunks) == 1 + 5
    assert all("usage" not in c for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[0]["object"] == "chat.completion.chunk"
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None] * 5 + ["length"]
    text = "".join(c["choices"][0]["delta"]["content"] for c in chunks)
    assert count_text_tokens(text) == 5

    stream = await oai.chat.completions.create(
        model="llama-3-8b",
        messages=user(unique()),
        max_tokens=9,
        stream=True,
    )
    contents = [c.choices[0].delta.content async for c in stream if c.choices and c.choices[0].delta.content]
    assert len(contents) == 9


async def test_chat_stream_with_usage(http: httpx.AsyncClient, oai: openai.AsyncOpenAI) -> None:
    messages = user(unique("Stream me some tokens, please."))
    stream = await oai.chat.completions.create(
        model="llama-3-8b",
        messages=messages,
        max_tokens=6,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    content_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content_chunks) == 6
    assert content_chunks[-1].choices[0].finish_reason == "length"
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (chat_prompt_tokens(messages), 6)
    assert all(c.usage is None for c in chunks[:-1])

    r = await http.post(
        "/v1/chat/completions",
        json={"messages": user(unique()), "max_tokens": 2, "stream": True, "stream_options": {"include_usage": True}},
    )
    events = sse_events(r.text)
    final = orjson.loads(events[-2])
    assert final["choices"] == []
    assert set(final["usage"]) == {"prompt_tokens", "total_tokens", "completion_tokens"}  # nulls dropped
    assert all("usage" not in orjson.loads(e) for e in events[:-2])


async def test_continuous_usage_stats(http: httpx.AsyncClient) -> None:
    options = {"include_usage": True, "continuous_usage_stats": True}
    r = await http.post(
        "/v1/chat/completions",
        json={"messages": user(unique()), "max_tokens": 3, "stream": True, "stream_options": options},
    )
    chunks = [orjson.loads(e) for e in sse_events(r.text)[:-1]]
    assert [c["usage"]["completion_tokens"] for c in chunks] == [0, 1, 2, 3, 3]


# -- completions and embeddings -------------------------------------------------------------------------------------


async def test_completions(oai: openai.AsyncOpenAI, http: httpx.AsyncClient) -> None:
    prompt = unique("Once upon a time")
    r = await oai.completions.create(model="llama-3-8b", prompt=prompt, max_tokens=4)
    assert r.id.startswith("cmpl-")
    assert r.object == "text_completion"
    assert r.choices[0].finish_reason == "length"
    assert count_text_tokens(r.choices[0].text) == 4
    assert r.usage is not None
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (count_text_tokens(prompt), 4)

    prompts = [unique("first"), unique("second prompt")]
    r = await oai.completions.create(model="llama-3-8b", prompt=prompts, max_tokens=2)
    assert [c.index for c in r.choices] == [0, 1]
    assert r.usage is not None
    assert r.usage.prompt_tokens == sum(count_text_tokens(p) for p in prompts)
    assert r.usage.completion_tokens == 4

    stream = await oai.completions.create(
        model="llama-3-8b", prompt=unique(), max_tokens=3, stream=True, stream_options={"include_usage": True}
    )
    chunks = [c async for c in stream]
    assert [c.choices[0].text for c in chunks if c.choices] == [" the", " model", " answers"]
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 3

    r2 = await http.post("/v1/completions", json={"prompt": [1, 2, 3], "max_tokens": 1})
    assert r2.json()["usage"]["prompt_tokens"] == 3


async def test_embeddings(start: Start) -> None:
    sim = await start(kind="embedding", model="bge-small")
    client = openai.AsyncOpenAI(base_url=sim.url + "/v1", api_key="x", max_retries=0)
    try:
        # The SDK asks for base64 by default and decodes it: this exercises vLLM's base64 format.
        r = await client.embeddings.create(model="bge-small", input=["hello world", "hello world", "other"])
        vectors = [d.embedding for d in r.data]
        assert [len(v) for v in vectors] == [384] * 3
        assert all(math.isclose(math.hypot(*v), 1.0, rel_tol=1e-5) for v in vectors)
        assert vectors[0] == vectors[1] != vectors[2]
        assert r.usage.prompt_tokens == 2 + 2 + 1
        floats = await client.embeddings.create(model="bge-small", input="hello world", encoding_format="float")
        assert all(
            math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-7)
            for a, b in zip(floats.data[0].embedding, vectors[0], strict=True)
        )
        async with httpx.AsyncClient(base_url=sim.url) as http:
            raw = (await http.post("/v1/embeddings", json={"input": [[1, 2], [3]], "encoding_format": "float"})).json()
            assert raw["id"].startswith("embd-")
            assert raw["object"] == "list"
            assert raw["data"][1]["object"] == "embedding"
            assert raw["usage"] == {
                "prompt_tokens": 3,
                "total_tokens": 3,
                "completion_tokens": 0,
                "prompt_tokens_details": None,
            }
            chat = await http.post("/v1/chat/completions", json={"messages": user("hi")})
            assert chat.status_code == 400
            assert chat.json()["error"]["message"] == "The model does not support Chat Completions API"
    finally:
        await client.close()


async def test_chat_server_rejects_embeddings(http: httpx.AsyncClient) -> None:
    r = await http.post("/v1/embeddings", json={"input": "hi"})
    assert r.status_code == 400
    assert r.json() == {
        "error": {
            "message": "The model does not support Embeddings API",
            "type": "BadRequestError",
            "param": None,
            "code": 400,
        }
    }


# -- models, health, version, errors ------------------------------------------------------------------------------


async def test_models_health_version(oai: openai.AsyncOpenAI, http: httpx.AsyncClient) -> None:
    page = await oai.models.list()
    assert [m.id for m in page.data] == ["llama-3-8b"]
    raw = (await http.get("/v1/models")).json()
    assert raw["object"] == "list"
    card = raw["data"][0]
    assert {k: card[k] for k in ("id", "object", "owned_by", "root", "parent", "max_model_len")} == {
        "id": "llama-3-8b",
        "object": "model",
        "owned_by": "vllm",
        "root": "llama-3-8b",
        "parent": None,
        "max_model_len": 8192,
    }
    assert card["permission"][0]["object"] == "model_permission"
    health = await http.get("/health")
    assert (health.status_code, health.content) == (200, b"")
    assert "version" in (await http.get("/version")).json()


async def test_unknown_model_is_404(oai: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        await oai.chat.completions.create(model="gpt-9", messages=user("hi"))
    assert err.value.body == {
        "message": "The model `gpt-9` does not exist.",
        "type": "NotFoundError",
        "param": "model",
        "code": 404,
    }


async def test_over_long_prompt_and_max_tokens_are_400(start: Start) -> None:
    sim = await start(max_model_len=64)
    client = openai.AsyncOpenAI(base_url=sim.url + "/v1", api_key="x", max_retries=0)
    try:
        with pytest.raises(openai.BadRequestError, match="maximum context length is 64 tokens"):
            await client.chat.completions.create(model="llama-3-8b", messages=user("word " * 80))
        with pytest.raises(openai.BadRequestError, match="'max_tokens' or 'max_completion_tokens' is too large"):
            await client.completions.create(model="llama-3-8b", prompt="short", max_tokens=64)
        # Without max_tokens the answer is capped by the room left in the context.
        r = await client.completions.create(model="llama-3-8b", prompt="word " * 60)
        assert r.usage is not None
        assert (r.usage.completion_tokens, r.choices[0].finish_reason) == (4, "length")
    finally:
        await client.close()


async def test_bad_requests_are_400(http: httpx.AsyncClient) -> None:
    cases: list[dict[str, Any] | bytes] = [
        b"{not json",
        {"model": "llama-3-8b"},
        {"messages": "hi"},
        {"messages": user("hi"), "n": 2},
        {"messages": user("hi"), "max_tokens": 0},
        {"messages": user("hi"), "stream_options": {"include_usage": True}},
    ]
    for case in cases:
        if isinstance(case, bytes):
            r = await http.post("/v1/chat/completions", content=case, headers={"content-type": "application/json"})
        else:
            r = await http.post("/v1/chat/completions", json=case)
        assert r.status_code == 400, case
        error = r.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert (error["type"], error["code"]) == ("BadRequestError", 400)


# -- faults -------------------------------------------------------------------------------------------------------


async def test_error_rate_one_gives_500(start: Start) -> None:
    sim = await start(error_rate=1.0)
    client = openai.AsyncOpenAI(base_url=sim.url + "/v1", api_key="x", max_retries=0)
    try:
        with pytest.raises(openai.InternalServerError) as err:
            await client.chat.completions.create(model="llama-3-8b", messages=user("hi"))
        assert err.value.status_code == 500
        assert err.value.body == {
            "message": "Internal server error",
            "type": "InternalServerError",
            "param": None,
            "code": 500,
        }
    finally:
        await client.close()
    assert sim.stats.errors_injected == 1


async def test_error_rate_is_deterministic_per_seed(start: Start) -> None:
    statuses = []
    for _ in range(2):
        sim = await start(error_rate=0.5, seed=42)
        async with httpx.AsyncClient(base_url=sim.url) as http:
            codes = [(await http.post("/v1/completions", json={"prompt": "x"})).status_code for _ in range(20)]
        statuses.append(codes)
    assert statuses[0] == statuses[1]
    assert set(statuses[0]) == {200, 500}


async def test_hang_holds_until_the_client_leaves(start: Start) -> None:
    sim = await start(hang_rate=1.0)
    async with httpx.AsyncClient(base_url=sim.url) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.post("/v1/chat/completions", json={"messages": user("hi")}, timeout=0.3)
    assert sim.stats.hangs_injected == 1
    assert sim.stats.completed == 0


async def test_crash_after_kills_the_server(start: Start) -> None:
    sim = await start(crash_after=2)
    async with httpx.AsyncClient(base_url=sim.url) as http:
        for _ in range(2):
            assert (await http.post("/v1/completions", json={"prompt": "x"})).status_code == 200
        assert sim.crashed
        with pytest.raises(httpx.TransportError):
            await http.post("/v1/completions", json={"prompt": "x"})
        with pytest.raises(httpx.TransportError):
            await http.get("/health")


async def test_fail_stream_after_cuts_the_connection(start: Start) -> None:
    sim = await start(fail_stream_after=3)
    received: list[str] = []
    async with httpx.AsyncClient(base_url=sim.url) as http:

        async def read_stream() -> None:
            body = {"messages": user("hi"), "max_tokens": 10, "stream": True}
            async with http.stream("POST", "/v1/chat/completions", json=body) as r:
                assert r.status_code == 200
                async for line in r.aiter_lines():
                    if line:
                        received.append(line)

        with pytest.raises(httpx.TransportError):
            await read_stream()
        assert len(received) == 3
        # A stream that fits is not cut.
        r = await http.post("/v1/chat/completions", json={"messages": user("hi"), "max_tokens": 1, "stream": True})
        assert sse_events(r.text)[-1] == "[DONE]"
    assert sim.stats.finished["abort"] == 1


async def test_slow_start(start: Start) -> None:
    sim = await start(slow_start_s=0.3)
    async with httpx.AsyncClient(base_url=sim.url) as http:
        assert (await http.get("/health")).status_code == 503
        r = await http.post("/v1/chat/completions", json={"messages": user("hi")})
        assert r.status_code == 503
        assert r.json()["error"]["code"] == 503

        async def healthy() -> bool:
            return (await http.get("/health")).status_code == 200

        await eventually(healthy)
        assert (await http.post("/v1/chat/completions", json={"messages": user("hi")})).status_code == 200


async def test_runtime_config(http: httpx.AsyncClient) -> None:
    r = await http.post("/sim/config", json={"error_rate": 1, "ttft_ms": 0})
    assert r.status_code == 200
    assert r.json()["error_rate"] == 1.0
    assert (await http.get("/sim/config")).json()["error_rate"] == 1.0
    assert (await http.post("/v1/completions", json={"prompt": "x"})).status_code == 500
    r = await http.post("/sim/config", json={"error_rate": 0, "model": "mistral-7b"})
    assert r.json()["model"] == "mistral-7b"
    done = await http.post("/v1/completions", json={"prompt": "x", "model": "mistral-7b"})
    assert (done.status_code, done.json()["model"]) == (200, "mistral-7b")
    for bad in ({"bogus": 1}, {"max_num_seqs": 0}, {"error_rate": "high"}):
        r = await http.post("/sim/config", json=bad)
        assert r.status_code == 400, bad
        assert r.json()["error"]["type"] == "BadRequestError"


# -- scheduling and metrics -----------------------------------------------------------------------------------------


async def test_batch_limit_shows_running_and_waiting(start: Start) -> None:
    sim = await start(max_num_seqs=2, ttft_ms=200, itl_ms=100)
    client = openai.AsyncOpenAI(base_url=sim.url + "/v1", api_key="x", max_retries=0)
    async with httpx.AsyncClient(base_url=sim.url) as http:
        tasks = [
            asyncio.create_task(
                client.chat.completions.create(model="llama-3-8b", messages=user(unique()), max_tokens=4)
            )
            for _ in range(6)
        ]
        seen: dict[str, float] = {}

        async def saturated() -> bool:
            samples = await metrics(http)
            seen.update(
                running=sample(samples, "vllm:num_requests_running"),
                waiting=sample(samples, "vllm:num_requests_waiting"),
                kv=sample(samples, "vllm:kv_cache_usage_perc"),
            )
            return seen["running"] == 2 and seen["waiting"] == 4

        await eventually(saturated)
        assert 0 < seen["kv"] <= 1
        results = await asyncio.gather(*tasks)
        assert all(r.usage is not None and r.usage.completion_tokens == 4 for r in results)
        after = await metrics(http)
        assert sample(after, "vllm:num_requests_running") == 0
        assert sample(after, "vllm:num_requests_waiting") == 0
        assert sample(after, "vllm:kv_cache_usage_perc") == 0
        # Six requests of ~500 ms in pairs: the last ones waited, so some TTFTs exceed 0.5 s.
        assert sample(after, "vllm:time_to_first_token_seconds_count") == 6
        assert sample(after, "vllm:time_to_first_token_seconds_bucket", le="0.1") == 0
        assert sample(after, "vllm:time_to_first_token_seconds_bucket", le="0.5") < 6
    await client.close()


async def test_counters_grow_by_the_tokens_served(oai: openai.AsyncOpenAI, http: httpx.AsyncClient) -> None:
    before = await metrics(http)
    prompt = completion = 0
    for i in range(1, 4):
        r = await oai.chat.completions.create(model="llama-3-8b", messages=user(unique()), max_tokens=i)
        assert r.usage is not None
        prompt += r.usage.prompt_tokens
        completion += r.usage.completion_tokens
    stream = await oai.chat.completions.create(
        model="llama-3-8b",
        messages=user(unique()),
        stream=True,
        stream_options={"include_usage": True},
    )
    async for chunk in stream:
        if chunk.usage is not None:
            prompt += chunk.usage.prompt_tokens
            completion += chunk.usage.completion_tokens
    after = await metrics(http)

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert delta("vllm:prompt_tokens_total") == prompt
    assert delta("vllm:generation_tokens_total") == completion
    assert delta("vllm:request_success_total", finished_reason="length") == 3
    assert delta("vllm:request_success_total", finished_reason="stop") == 1
    assert delta("vllm:e2e_request_latency_seconds_count") == 4


async def test_prefix_cache_hit(oai: openai.AsyncOpenAI, http: httpx.AsyncClient) -> None:
    messages = user(unique("A long shared system prompt that many requests repeat."))
    before = await metrics(http)
    first = await oai.chat.completions.create(model="llama-3-8b", messages=messages, max_tokens=1)
    second = await oai.chat.completions.create(model="llama-3-8b", messages=messages, max_tokens=1)
    after = await metrics(http)
    assert first.usage is not None
    assert second.usage is not None
    assert first.usage.prompt_tokens_details is None
    assert second.usage.prompt_tokens_details is not None
    assert second.usage.prompt_tokens_details.cached_tokens == second.usage.prompt_tokens
    p = first.usage.prompt_tokens
    assert sample(after, "vllm:prefix_cache_queries_total") - sample(before, "vllm:prefix_cache_queries_total") == 2 * p
    assert sample(after, "vllm:prefix_cache_hits_total") - sample(before, "vllm:prefix_cache_hits_total") == p


async def test_legacy_cache_metric_name(start: Start) -> None:
    sim = await start(legacy_cache_metric=True, model="old-vllm")
    async with httpx.AsyncClient(base_url=sim.url) as http:
        samples = await metrics(http)
    assert sample(samples, "vllm:gpu_cache_usage_perc", model="old-vllm") == 0
    assert not any(k.startswith("vllm:kv_cache_usage_perc") for k in samples)
