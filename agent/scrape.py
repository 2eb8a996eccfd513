"""vLLM's Prometheus metrics, read into a typed snapshot (what heartbeats carry and routing reads).

Reads both the current and the older names: ``vllm:kv_cache_usage_perc`` (``vllm:gpu_cache_usage_perc``
before vLLM 0.10), ``vllm:prefix_cache_*`` (``vllm:gpu_prefix_cache_*``). Gauges are summed over label
sets (one per served model name / engine); the TTFT histogram gives a mean.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class EngineStats:
    num_requests_running: float = 0.0
    num_requests_waiting: float = 0.0
    kv_cache_usage_perc: float = 0.0
    prompt_tokens_total: float = 0.0
    generation_tokens_total: float = 0.0
    ttft_seconds_sum: float = 0.0
    ttft_seconds_count: float = 0.0
    prefix_cache_queries_total: float = 0.0
    prefix_cache_hits_total: float = 0.0

    @property
    def ttft_mean_s(self) -> float | None:
        return self.ttft_seconds_sum / self.ttft_seconds_count if self.ttft_seconds_count else None

    @property
    def queue_depth(self) -> float:
        return self.num_requests_running + self.num_requests_waiting

    def to_load(self) -> dict[str, Any]:
        """The JSON a heartbeat carries and ``nodes.load`` stores."""
        return {k: v for k, v in asdict(self).items()}

    @classmethod
    def from_load(cls, load: dict[str, Any] | None) -> EngineStats:
        if not load:
            return cls()
        known = {k: float(v) for k, v in load.items() if k in cls.__dataclass_fields__ and _finite(v)}
        return cls(**known)

    @classmethod
    def from_vllm_scrape(cls, text: str) -> EngineStats:
        values = parse_prometheus(text)

        def total(*names: str) -> float:
            for name in names:
                if name in values:
                    return values[name]
            return 0.0

        return cls(
            num_requests_running=total("vllm:num_requests_running"),
            num_requests_waiting=total("vllm:num_requests_waiting"),
            kv_cache_usage_perc=total("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
            prompt_tokens_total=total("vllm:prompt_tokens_total"),
            generation_tokens_total=total("vllm:generation_tokens_total"),
            ttft_seconds_sum=total("vllm:time_to_first_token_seconds_sum"),
            ttft_seconds_count=total("vllm:time_to_first_token_seconds_count"),
            prefix_cache_queries_total=total("vllm:prefix_cache_queries_total", "vllm:gpu_prefix_cache_queries_total"),
            prefix_cache_hits_total=total("vllm:prefix_cache_hits_total", "vllm:gpu_prefix_cache_hits_total"),
        )


def _finite(v: Any) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def parse_prometheus(text: str) -> dict[str, float]:
    """Sample values summed by metric name (labels dropped). Histogram buckets are skipped."""
    out: dict[str, float] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        brace = line.find("{")
        if brace >= 0:
            name = line[:brace]
            rest = line[line.rfind("}") + 1 :].split()
        else:
            name, *rest = line.split()
        if not rest or name.endswith("_bucket") or name.endswith("_created"):
            continue
        try:
            value = float(rest[0])
        except ValueError:
            continue
        if math.isfinite(value):
            out[name] = out.get(name, 0.0) + value
    return out
