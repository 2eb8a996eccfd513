"""The simulator's counters and their Prometheus text exposition, named and labelled as vLLM (v1 engine) does.

Every sample carries ``engine="0",model_name="<served model>"`` (labels sorted, as ``prometheus_client`` writes
them). Counters are exposed with the ``_total`` suffix (on the ``# HELP`` / ``# TYPE`` lines too, as
``prometheus_client`` writes format 0.0.4); ``vllm:prefix_cache_queries`` / ``vllm:prefix_cache_hits``
count prompt *tokens* queried / found cached, as vLLM's do. With ``legacy=True`` the cache metrics take the names
of vLLM before 0.9 (``vllm:gpu_cache_usage_perc``, ``vllm:gpu_prefix_cache_queries``, ``vllm:gpu_prefix_cache_hits``)
instead of the current ones.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Final

TTFT_BUCKETS: Final[tuple[float, ...]] = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0,
    80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
E2E_BUCKETS: Final[tuple[float, ...]] = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0,
    960.0, 1920.0, 7680.0,
)  # fmt: skip
FINISHED_REASONS: Final = ("stop", "length", "abort")


class Histogram:
    """A Prometheus histogram: per-bucket counts (the last is +Inf), sum and count."""

    __slots__ = ("buckets", "count", "counts", "total")

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.buckets, value)] += 1
        self.total += value
        self.count += 1

    def copy(self) -> Histogram:
        h = Histogram(self.buckets)
        h.counts = list(self.counts)
        h.total, h.count = self.total, self.count
        return h


@dataclass
class SimCounters:
    """Cumulative counters of one simulator (mutable; readers get `SimStats` copies)."""

    requests_received: int = 0
    prompt_tokens: int = 0
    generation_tokens: int = 0
    finished: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FINISHED_REASONS, 0))
    prefix_queries: int = 0
    prefix_hits: int = 0
    errors_injected: int = 0
    hangs_injected: int = 0
    completed: int = 0  # inference requests answered (successes and injected errors), for crash_after
    ttft: Histogram = field(default_factory=lambda: Histogram(TTFT_BUCKETS))
    e2e: Histogram = field(default_factory=lambda: Histogram(E2E_BUCKETS))


@dataclass(frozen=True)
class SimStats:
    """A snapshot of a simulator's state and counters."""

    running: int
    waiting: int
    kv_cache_tokens: int
    kv_cache_usage: float
    requests_received: int
    prompt_tokens: int
    generation_tokens: int
    finished: dict[str, int]
    prefix_queries: int
    prefix_hits: int
    errors_injected: int
    hangs_injected: int
    completed: int
    crashed: bool
    ttft: Histogram
    e2e: Histogram

    @property
    def successes(self) -> int:
        return sum(self.finished.values())


def _num(value: float) -> str:
    """A sample value as prometheus_client writes it (``1.0``, ``0.25``, ``+Inf``)."""
    return repr(float(value))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render_metrics(stats: SimStats, model: str, *, legacy: bool = False) -> str:
    """The ``/metrics`` page for ``stats`` in Prometheus text format 0.0.4."""
    labels = f'engine="0",model_name="{_escape(model)}"'
    out: list[str] = []

    def family(name: str, kind: str, doc: str) -> None:
        out.append(f"# HELP {name} {doc}")
        out.append(f"# TYPE {name} {kind}")

    def gauge(name: str, doc: str, value: float) -> None:
        family(name, "gauge", doc)
        out.append(f"{name}{{{labels}}} {_num(value)}")

    def counter(name: str, doc: str, value: float) -> None:
        family(f"{name}_total", "counter", doc)
        out.append(f"{name}_total{{{labels}}} {_num(value)}")

    def histogram(name: str, doc: str, h: Histogram) -> None:
        family(name, "histogram", doc)
        cumulative = 0
        for bound, n in zip((*h.buckets, None), h.counts, strict=True):
            cumulative += n
            le = "+Inf" if bound is None else _num(bound)
            out.append(f'{name}_bucket{{engine="0",le="{le}",model_name="{_escape(model)}"}} {_num(cumulative)}')
        out.append(f"{name}_count{{{labels}}} {_num(h.count)}")
        out.append(f"{name}_sum{{{labels}}} {_num(h.total)}")

    prefix = "vllm:gpu_" if legacy else "vllm:"
    gauge("vllm:num_requests_running", "Number of requests in model execution batches.", stats.running)
    gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.", stats.waiting)
    cache_usage = "vllm:gpu_cache_usage_perc" if legacy else "vllm:kv_cache_usage_perc"
    gauge(cache_usage, "KV-cache usage. 1 means 100 percent usage.", stats.kv_cache_usage)
    counter(
        f"{prefix}prefix_cache_queries",
        "Prefix cache queries, in terms of number of queried tokens.",
        stats.prefix_queries,
    )
    counter(f"{prefix}prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens.", stats.prefix_hits)
    counter("vllm:prompt_tokens", "Number of prefill tokens processed.", stats.prompt_tokens)
    counter("vllm:generation_tokens", "Number of generation tokens processed.", stats.generation_tokens)
    family("vllm:request_success_total", "counter", "Count of successfully processed requests.")
    for reason in FINISHED_REASONS:
        out.append(
            f'vllm:request_success_total{{engine="0",finished_reason="{reason}",model_name="{_escape(model)}"}} '
            f"{_num(stats.finished.get(reason, 0))}"
        )
    histogram("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", stats.ttft)
    histogram("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", stats.e2e)
    out.append("")
    return "\n".join(out)
