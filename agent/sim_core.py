"""The simulator's state and request rules, without HTTP: parsing and validating requests as vLLM does, planning
each generation (prompt tokens, tokens to generate, finish reason), prefix-cache and KV-cache accounting, faults.

Generation length: ``max_completion_tokens or max_tokens`` when given (400 if prompt + that exceeds
``max_model_len``, as vLLM answers), finishing with ``"length"``; otherwise ``default_max_tokens``, finishing with
``"stop"``, or the room left in the context, finishing with ``"length"``, whichever is smaller. A prompt of
``max_model_len`` tokens or more is refused with vLLM's message.

Prefix cache: the first ``prefix_cache_chars`` characters of the rendered prompt are looked up in an LRU; on a hit
all the prompt's tokens count as cached (``prompt_tokens_details.cached_tokens``) and the time to first token is
multiplied by ``prefix_cache_ttft_factor``. ``vllm:prefix_cache_queries`` / ``_hits`` grow by the prompt tokens
queried / found cached. KV-cache usage is the prompt + planned output tokens of the running requests over
``kv_capacity_tokens``, at most 1.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agent.sim_config import SimConfig, patched
from agent.sim_engine import BatchGate, PrefixCache
from agent.sim_faults import CrashStrategy, ExitProcess, Fault, FaultDice
from agent.sim_metrics import SimCounters, SimStats
from agent.sim_protocol import error_body
from agent.sim_tokens import chat_prompt_tokens, completion_prompt_tokens, content_text


class ApiError(Exception):
    """An error answer in vLLM's shape."""

    def __init__(self, message: str, err_type: str = "BadRequestError", code: int = 400, param: str | None = None):
        super().__init__(message)
        self.code = code
        self.body = error_body(message, err_type, code, param)


@dataclass(slots=True)
class Seq:
    """One generation: a prompt and what the simulator will produce for it."""

    prompt_tokens: int
    max_tokens: int
    finish_reason: str
    prefix: str
    cached_tokens: int | None = None


@dataclass(slots=True)
class GenerationRequest:
    seqs: list[Seq]
    stream: bool
    include_usage: bool
    continuous_usage: bool


@dataclass(slots=True)
class EmbeddingRequest:
    inputs: list[str | list[int]]
    prompt_tokens: list[int]
    base64: bool


def _check_model(config: SimConfig, payload: Mapping[str, Any]) -> None:
    model = payload.get("model")
    if model and model != config.model:
        raise ApiError(f"The model `{model}` does not exist.", "NotFoundError", 404, "model")


def _check_n(payload: Mapping[str, Any]) -> None:
    n = payload.get("n")
    if n is None or n == 1:
        return
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ApiError(f"n must be at least 1, got {n}.", param="n")
    raise ApiError("n > 1 is not supported by this server.", param="n")


def _stream_options(payload: Mapping[str, Any]) -> tuple[bool, bool, bool]:
    """``(stream, include_usage, continuous_usage)`` as vLLM's ``should_include_usage`` decides them."""
    stream = payload.get("stream") is True
    options = payload.get("stream_options")
    if options is None:
        return stream, False, False
    if not isinstance(options, dict):
        raise ApiError("stream_options must be an object.", param="stream_options")
    if not stream:
        raise ApiError("Stream options can only be defined when `stream=True`.", param="stream_options")
    include = bool(options.get("include_usage", True))
    return stream, include, include and bool(options.get("continuous_usage_stats", False))


def _max_tokens(payload: Mapping[str, Any], *names: str) -> int | None:
    value = None
    for name in names:
        value = payload.get(name)
        if value:
            break
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ApiError(f"max_tokens must be at least 1, got {value}.", param="max_tokens")
    return value


def plan_generation(config: SimConfig, prompt_tokens: int, requested: int | None, prefix: str) -> Seq:
    """How many tokens a prompt gets and why it stops, or vLLM's 400 for a request that does not fit."""
    limit = config.max_model_len
    if prompt_tokens >= limit:
        raise ApiError(
            f"This model's maximum context length is {limit} tokens. However, your request has {prompt_tokens} "
            "input tokens. Please reduce the length of the input messages.",
            param="input_tokens",
        )
    if requested is not None:
        if prompt_tokens + requested > limit:
            raise ApiError(
                f"'max_tokens' or 'max_completion_tokens' is too large: {requested}. This model's maximum context "
                f"length is {limit} tokens and your request has {prompt_tokens} input tokens "
                f"({requested} > {limit} - {prompt_tokens}).",
                param="max_tokens",
            )
        return Seq(prompt_tokens, requested, "length", prefix)
    room = limit - prompt_tokens
    if config.default_max_tokens < room:
        return Seq(prompt_tokens, config.default_max_tokens, "stop", prefix)
    return Seq(prompt_tokens, room, "length", prefix)


def render_chat_prefix(messages: list[dict[str, Any]], chars: int) -> str:
    """The first ``chars`` characters of the chat prompt as a template would render it."""
    parts: list[str] = []
    size = 0
    for message in messages:
        part = f"<|{message.get('role')}|>\n{content_text(message.get('content'))}\n"
        parts.append(part)
        size += len(part)
        if size >= chars:
            break
    return "".join(parts)[:chars]


def parse_chat(config: SimConfig, payload: dict[str, Any]) -> GenerationRequest:
    if config.kind != "chat":
        raise ApiError("The model does not support Chat Completions API")
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError("messages: Field required (a non-empty list of messages)", param="messages")
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise ApiError("each message must be an object with a string `role`", param="messages")
    try:
        prompt = chat_prompt_tokens(messages)
    except TypeError as exc:
        raise ApiError(str(exc), param="messages") from None
    _check_model(config, payload)
    _check_n(payload)
    stream, include_usage, continuous = _stream_options(payload)
    requested = _max_tokens(payload, "max_completion_tokens", "max_tokens")
    prefix = render_chat_prefix(messages, config.prefix_cache_chars) if config.prefix_cache else ""
    return GenerationRequest([plan_generation(config, prompt, requested, prefix)], stream, include_usage, continuous)


def _prompts(value: Any, param: str) -> list[str | list[int]]:
    """A prompt or input field as a list of prompts: strings or token-id lists."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(x, int) and not isinstance(x, bool) for x in value):
            return [value]
        if all(isinstance(x, str) for x in value):
            return list(value)
        if all(isinstance(x, list) and x and all(isinstance(t, int) for t in x) for x in value):
            return list(value)
    raise ApiError(
        f"{param} must be a string, a list of strings, or token ids (a list of ints or of lists of ints)",
        param=param,
    )


def parse_completion(config: SimConfig, payload: dict[str, Any]) -> GenerationRequest:
    if config.kind != "chat":
        raise ApiError("The model does not support Completions API")
    if "prompt" not in payload:
        raise ApiError("prompt: Field required", param="prompt")
    prompts = _prompts(payload["prompt"], "prompt")
    _check_model(config, payload)
    _check_n(payload)
    stream, include_usage, continuous = _stream_options(payload)
    requested = _max_tokens(payload, "max_tokens")
    chars = config.prefix_cache_chars
    seqs = []
    for prompt in prompts:
        if not prompt:
            raise ApiError("Prompt cannot be empty.", param="prompt")
        prefix = "" if not config.prefix_cache else prompt[:chars] if isinstance(prompt, str) else str(prompt)[:chars]
        seqs.append(plan_generation(config, completion_prompt_tokens(prompt), requested, prefix))
    return GenerationRequest(seqs, stream, include_usage, continuous)


def parse_embedding(config: SimConfig, payload: dict[str, Any]) -> EmbeddingRequest:
    if config.kind != "embedding":
        raise ApiError("The model does not support Embeddings API")
    if "input" not in payload:
        raise ApiError("input: Field required", param="input")
    inputs = _prompts(payload["input"], "input")
    _check_model(config, payload)
    encoding = payload.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise ApiError(f"encoding_format must be 'float' or 'base64', got {encoding!r}", param="encoding_format")
    dimensions = payload.get("dimensions")
    if dimensions is not None and dimensions != config.embedding_dim:
        raise ApiError(
            "Model does not support matryoshka representation, changing output dimensions will lead to poor results.",
            param="dimensions",
        )
    counts = [completion_prompt_tokens(x) for x in inputs]
    for n in counts:
        if n > config.max_model_len:
            raise ApiError(
                f"This model's maximum context length is {config.max_model_len} tokens. However, you requested "
                f"{n} tokens in the input for embedding generation. Please reduce the length of the input.",
                param="input_tokens",
            )
    return EmbeddingRequest(inputs, counts, encoding == "base64")


class Simulator:
    """The state of one simulated vLLM server; lives on the aiohttp app, one per app."""

    def __init__(self, config: SimConfig, crash: CrashStrategy | None = None) -> None:
        self.config = config
        self.counters = SimCounters()
        self.gate = BatchGate(config.max_num_seqs)
        self.prefix_cache = PrefixCache(config.prefix_cache_entries)
        self.dice = FaultDice(config.seed)
        self.crash_strategy: CrashStrategy = crash or ExitProcess()
        self.kv_tokens = 0
        self.started_at = time.monotonic()
        self.created = int(time.time())
        self.crashed = False
        self.closing = False

    # -- configuration -------------------------------------------------------------------------------------

    def update(self, patch: Mapping[str, Any]) -> SimConfig:
        """Apply a runtime patch (see `SimConfig`); ``slow_start_s`` restarts the warm-up clock."""
        config = patched(self.config, patch)
        self.config = config
        self.gate.set_limit(config.max_num_seqs)
        self.prefix_cache.capacity = config.prefix_cache_entries
        if "seed" in patch:
            self.dice.reseed(config.seed)
        if "slow_start_s" in patch:
            self.started_at = time.monotonic()
        if not config.prefix_cache:
            self.prefix_cache.clear()
        return config

    def ready(self) -> bool:
        slow = self.config.slow_start_s
        return slow <= 0 or time.monotonic() - self.started_at >= slow

    # -- per request ---------------------------------------------------------------------------------------

    def roll_fault(self) -> Fault:
        fault = self.dice.roll(self.config.error_rate, self.config.hang_rate)
        if fault is Fault.ERROR:
            self.counters.errors_injected += 1
        elif fault is Fault.HANG:
            self.counters.hangs_injected += 1
        return fault

    def lookup_prefixes(self, seqs: list[Seq]) -> bool:
        """Record the prefix-cache queries of ``seqs``; True when any prompt was a hit."""
        if not self.config.prefix_cache:
            return False
        hit = False
        counters = self.counters
        for seq in seqs:
            counters.prefix_queries += seq.prompt_tokens
            if self.prefix_cache.seen(seq.prefix):
                seq.cached_tokens = seq.prompt_tokens
                counters.prefix_hits += seq.prompt_tokens
                hit = True
        return hit

    def latency(self, prefix_hit: bool = False) -> tuple[float, float]:
        """``(time to first token, inter-token latency)`` in seconds."""
        config = self.config
        scale = config.speed / 1000.0
        ttft = config.ttft_ms * scale
        if prefix_hit:
            ttft *= config.prefix_cache_ttft_factor
        return ttft, config.itl_ms * scale

    def finish(self, prompt: int, generated: int, reason: str, ttft: float | None, e2e: float) -> None:
        """Count one finished sequence (``ttft`` None when no token was produced)."""
        counters = self.counters
        counters.prompt_tokens += prompt
        counters.generation_tokens += generated
        counters.finished[reason] += 1
        if ttft is not None:
            counters.ttft.observe(ttft)
        counters.e2e.observe(e2e)

    def answered(self) -> bool:
        """Count one answered inference request; True when this one must crash the server (``crash_after``)."""
        self.counters.completed += 1
        limit = self.config.crash_after
        return limit is not None and self.counters.completed >= limit and not self.crashed

    def crash(self) -> None:
        self.crashed = True
        self.crash_strategy.crash()

    # -- reading -------------------------------------------------------------------------------------------

    def kv_cache_usage(self) -> float:
        return min(1.0, self.kv_tokens / self.config.kv_capacity_tokens)

    def snapshot(self) -> SimStats:
        c = self.counters
        return SimStats(
            running=self.gate.running,
            waiting=self.gate.waiting,
            kv_cache_tokens=self.kv_tokens,
            kv_cache_usage=self.kv_cache_usage(),
            requests_received=c.requests_received,
            prompt_tokens=c.prompt_tokens,
            generation_tokens=c.generation_tokens,
            finished=dict(c.finished),
            prefix_queries=c.prefix_queries,
            prefix_hits=c.prefix_hits,
            errors_injected=c.errors_injected,
            hangs_injected=c.hangs_injected,
            completed=c.completed,
            crashed=self.crashed,
            ttft=c.ttft.copy(),
            e2e=c.e2e.copy(),
        )
