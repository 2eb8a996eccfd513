"""`SimConfig`: everything that shapes the vLLM simulator, set at start-up and patchable at runtime."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

SimKind = Literal["chat", "embedding"]


class ConfigError(ValueError):
    """A configuration value (or a runtime patch) that the simulator refuses; ``param`` names the field."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass
class SimConfig:
    """Latency model, capacity and fault injection of one simulated vLLM server.

    Latencies are in milliseconds and multiplied by ``speed`` (3.0 = three times slower); 0 means no sleeping at
    all. ``error_rate`` and ``hang_rate`` are fractions of inference requests, drawn from ``random.Random(seed)``.
    """

    model: str = "llama-3-8b"
    max_model_len: int = 8192
    ttft_ms: float = 0
    itl_ms: float = 0
    speed: float = 1.0
    max_num_seqs: int = 256
    default_max_tokens: int = 16
    kv_capacity_tokens: int = 100_000
    error_rate: float = 0
    hang_rate: float = 0
    crash_after: int | None = None
    slow_start_s: float = 0
    fail_stream_after: int | None = None
    seed: int = 0
    embedding_dim: int = 384
    kind: SimKind = "chat"
    prefix_cache: bool = True
    legacy_cache_metric: bool = False
    # Prefix-cache model: the first `prefix_cache_chars` characters of the rendered prompt are the key of an
    # LRU of `prefix_cache_entries`; a hit multiplies the time to first token by `prefix_cache_ttft_factor`.
    prefix_cache_chars: int = 256
    prefix_cache_entries: int = 4096
    prefix_cache_ttft_factor: float = 0.2
    region: str | None = None  # where the node says it runs; stored, not used by the simulator

    def __post_init__(self) -> None:
        validate(self)


def validate(config: SimConfig) -> None:
    """Raise `ConfigError` for values the simulator cannot honour."""
    positive = ("max_model_len", "max_num_seqs", "default_max_tokens", "kv_capacity_tokens", "embedding_dim")
    for name in positive:
        if getattr(config, name) < 1:
            raise ConfigError(f"{name} must be at least 1", name)
    for name in ("ttft_ms", "itl_ms", "slow_start_s"):
        if getattr(config, name) < 0:
            raise ConfigError(f"{name} must not be negative", name)
    if config.speed <= 0:
        raise ConfigError("speed must be positive", "speed")
    for name in ("error_rate", "hang_rate", "prefix_cache_ttft_factor"):
        if not 0 <= getattr(config, name) <= 1:
            raise ConfigError(f"{name} must be between 0 and 1", name)
    if config.error_rate + config.hang_rate > 1:
        raise ConfigError("error_rate + hang_rate must not exceed 1", "error_rate")
    for name in ("crash_after", "fail_stream_after"):
        value = getattr(config, name)
        if value is not None and value < 0:
            raise ConfigError(f"{name} must not be negative", name)
    if config.prefix_cache_chars < 1 or config.prefix_cache_entries < 1:
        raise ConfigError("prefix cache sizes must be at least 1", "prefix_cache_entries")
    if not config.model:
        raise ConfigError("model must not be empty", "model")


_HINTS: dict[str, Any] = typing.get_type_hints(SimConfig)


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """``value`` as field ``name`` of type ``hint`` accepts it, or `ConfigError`."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        (inner,) = (o for o in options if o is not type(None))
        return _coerce(name, value, inner)
    if origin is Literal:
        if value in typing.get_args(hint):
            return value
        raise ConfigError(f"{name} must be one of {', '.join(map(str, typing.get_args(hint)))}", name)
    number = not isinstance(value, bool) and isinstance(value, int | float)
    if hint is bool and isinstance(value, bool):
        return value
    if hint is int and number and isinstance(value, int):
        return value
    if hint is float and number:
        return float(value)
    if hint is str and isinstance(value, str):
        return value
    raise ConfigError(f"{name} must be of type {getattr(hint, '__name__', hint)}", name)


def patched(config: SimConfig, patch: Mapping[str, Any]) -> SimConfig:
    """A copy of ``config`` with the fields of ``patch`` replaced, type-checked and validated."""
    changes: dict[str, Any] = {}
    for name, value in patch.items():
        if name not in _HINTS:
            raise ConfigError(f"unknown simulator setting {name!r}", name)
        changes[name] = _coerce(name, value, _HINTS[name])
    return dataclasses.replace(config, **changes)


def config_dict(config: SimConfig) -> dict[str, Any]:
    """The config as a JSON-ready dict."""
    return dataclasses.asdict(config)
