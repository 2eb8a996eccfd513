"""The simulator's pure pieces: token model, embeddings, config patches, the batch gate, metrics text."""

from __future__ import annotations

import asyncio
import base64
import math
from array import array
from typing import Any

import orjson
import pytest

from agent.sim_config import ConfigError, SimConfig, patched
from agent.sim_core import ApiError, plan_generation
from agent.sim_embeddings import embed_text, encode_base64
from agent.sim_engine import BatchGate, PrefixCache
from agent.sim_faults import Fault, FaultDice
from agent.sim_metrics import SimCounters, render_metrics
from agent.sim_protocol import StreamChunks
from agent.sim_tokens import (
    CHAT_MESSAGE_OVERHEAD,
    CHAT_TEMPLATE_OVERHEAD,
    chat_prompt_tokens,
    completion_prompt_tokens,
    count_text_tokens,
    generated_text,
    token_piece,
)
from agent.simulator import Simulator


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("", 0),
        ("   ", 0),
        ("hello", 1),
        ("Hello, world!", 4),
        ("don't", 3),
        ("a...b  c", 4),
        ("x=1+2", 5),
        ("naïve café", 2),
        ("?!", 1),
    ],
)
def test_count_text_tokens(text: str, tokens: int) -> None:
    assert count_text_tokens(text) == tokens


@pytest.mark.parametrize("n", [0, 1, 2, 16, 31, 32, 33, 100, 1000])
def test_generated_text_has_exactly_n_tokens(n: int) -> None:
    text = generated_text(n)
    assert count_text_tokens(text) == n
    assert text == "".join(token_piece(i) for i in range(n))


def test_chat_prompt_formula() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Hi there"}, {"type": "image_url", "image_url": {}}]},
        {"role": "assistant", "content": None},
    ]
    expected = (3 + CHAT_MESSAGE_OVERHEAD) + (2 + CHAT_MESSAGE_OVERHEAD) + CHAT_MESSAGE_OVERHEAD
    assert chat_prompt_tokens(messages) == expected + CHAT_TEMPLATE_OVERHEAD
    assert completion_prompt_tokens("one two") == 2
    assert completion_prompt_tokens([5, 6, 7]) == 3


def test_plan_generation_follows_vllm_limits() -> None:
    config = SimConfig(max_model_len=100, default_max_tokens=16)
    assert (plan_generation(config, 10, None, "").max_tokens, plan_generation(config, 10, None, "").finish_reason) == (
        16,
        "stop",
    )
    seq = plan_generation(config, 90, None, "")
    assert (seq.max_tokens, seq.finish_reason) == (10, "length")
    seq = plan_generation(config, 10, 90, "")
    assert (seq.max_tokens, seq.finish_reason) == (90, "length")
    with pytest.raises(ApiError, match="too large: 91"):
        plan_generation(config, 10, 91, "")
    with pytest.raises(ApiError, match="maximum context length is 100 tokens"):
        plan_generation(config, 100, None, "")


def test_embeddings_are_deterministic_unit_vectors() -> None:
    a, b = embed_text("hello", 384), embed_text("hello", 384)
    assert a == b
    assert len(a) == 384
    assert math.isclose(math.hypot(*a), 1.0, rel_tol=1e-9)
    assert embed_text("hello!", 384) != a
    decoded = array("f", base64.b64decode(encode_base64(a)))
    assert all(math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-7) for x, y in zip(decoded, a, strict=True))


def test_config_patch_is_typed_and_validated() -> None:
    config = SimConfig()
    new = patched(config, {"error_rate": 1, "crash_after": None, "kind": "embedding"})
    assert new.error_rate == 1.0
    assert isinstance(new.error_rate, float)
    assert new.kind == "embedding"
    assert config.error_rate == 0
    for bad in ({"nope": 1}, {"max_num_seqs": "2"}, {"max_num_seqs": 0}, {"kind": "vision"}, {"prefix_cache": 1}):
        with pytest.raises(ConfigError):
            patched(config, bad)


def test_fault_dice_is_seeded() -> None:
    a, b = FaultDice(7), FaultDice(7)
    assert [a.roll(0.3, 0.3) for _ in range(50)] == [b.roll(0.3, 0.3) for _ in range(50)]
    assert FaultDice(1).roll(0, 0) is Fault.NONE
    assert {FaultDice(3).roll(1, 0), FaultDice(3).roll(0, 1)} == {Fault.ERROR, Fault.HANG}


async def test_batch_gate_is_fifo_and_counts_exactly() -> None:
    gate = BatchGate(2)
    await gate.acquire()
    await gate.acquire()
    order: list[int] = []

    async def waiter(i: int) -> None:
        await gate.acquire()
        order.append(i)

    tasks = [asyncio.create_task(waiter(i)) for i in range(3)]
    await asyncio.sleep(0)
    assert (gate.running, gate.waiting) == (2, 3)
    tasks[1].cancel()
    await asyncio.sleep(0)
    assert gate.waiting == 2
    gate.release()
    await asyncio.sleep(0)
    assert order == [0]
    assert (gate.running, gate.waiting) == (2, 1)
    gate.set_limit(3)
    await asyncio.sleep(0)
    assert order == [0, 2]
    assert (gate.running, gate.waiting) == (3, 0)
    for _ in range(3):
        gate.release()
    assert gate.running == 0


def test_prefix_cache_is_a_bounded_lru() -> None:
    cache = PrefixCache(2)
    assert not cache.seen("a")
    assert not cache.seen("b")
    assert cache.seen("a")
    assert not cache.seen("c")  # evicts b, the least recent
    assert cache.seen("a")
    assert not cache.seen("b")
    assert len(cache) == 2


def test_metrics_text_names_and_labels() -> None:
    sim = Simulator(SimConfig(model='m"x'))
    sim.counters = SimCounters(prompt_tokens=7, generation_tokens=3)
    sim.finish(0, 0, "stop", 0.003, 0.4)
    text = render_metrics(sim.snapshot(), sim.config.model)
    assert 'vllm:prompt_tokens_total{engine="0",model_name="m\\"x"} 7.0' in text
    assert "# TYPE vllm:prompt_tokens_total counter" in text
    assert 'vllm:request_success_total{engine="0",finished_reason="stop",model_name="m\\"x"} 1.0' in text
    assert 'vllm:time_to_first_token_seconds_bucket{engine="0",le="0.001",model_name="m\\"x"} 0.0' in text
    assert 'vllm:time_to_first_token_seconds_bucket{engine="0",le="0.005",model_name="m\\"x"} 1.0' in text
    assert 'vllm:e2e_request_latency_seconds_bucket{engine="0",le="+Inf",model_name="m\\"x"} 1.0' in text
    assert "vllm:kv_cache_usage_perc{" in text
    assert "gpu_cache_usage_perc" not in text
    legacy = render_metrics(sim.snapshot(), "m", legacy=True)
    assert "vllm:gpu_cache_usage_perc{" in legacy
    assert "vllm:kv_cache_usage_perc" not in legacy
    assert "vllm:gpu_prefix_cache_hits_total{" in legacy


@pytest.mark.parametrize("chat", [True, False])
def test_stream_events_are_vllm_chunks(chat: bool) -> None:
    chunks = StreamChunks(chat=chat, rid="abc", created=7, model="m", continuous=False)
    events = [chunks.token(i, finish="length" if i == 2 else None) for i in range(3)]
    parsed = [orjson.loads(e.removeprefix(b"data: ")) for e in events]
    assert all(e.endswith(b"\n\n") for e in events)
    obj = "chat.completion.chunk" if chat else "text_completion"
    ident = "chatcmpl-abc" if chat else "cmpl-abc"
    assert all((p["id"], p["object"], p["created"], p["model"]) == (ident, obj, 7, "m") for p in parsed)
    choices = [p["choices"][0] for p in parsed]
    if chat:
        assert [c["delta"] for c in choices] == [{"content": token_piece(i)} for i in range(3)]
        assert "stop_reason" not in choices[0]
    else:
        assert [c["text"] for c in choices] == [token_piece(i) for i in range(3)]
        assert choices[0]["stop_reason"] is None
    assert [c["finish_reason"] for c in choices] == [None, None, "length"]
    assert choices[2]["stop_reason"] is None
    assert all(c["index"] == 0 and c["logprobs"] is None for c in choices)
    # The precomputed common case and the general builder agree.
    general = StreamChunks(chat=chat, rid="abc", created=7, model="m", continuous=True)
    as_general = orjson.loads(general.token(1).removeprefix(b"data: "))
    assert as_general.pop("usage") == {"prompt_tokens": 0, "total_tokens": 2, "completion_tokens": 2}
    assert as_general == parsed[1]
