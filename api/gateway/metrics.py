"""Prometheus metrics of the data plane, exposed at ``/metrics``.

With several workers (``cic api --workers N``) ``PROMETHEUS_MULTIPROC_DIR`` is set before they start and
each worker writes its samples there; a scrape of any worker aggregates all of them.

The per-request metrics (requests, latency, TTFT, tokens, in flight, the limiter's histograms) are tallied
in plain dicts by ``TALLY`` and moved into the Prometheus values by ``flush()``: every ``FLUSH_S`` (the data
plane's service), before this worker renders ``/metrics``, and at shutdown. Each Prometheus update is a
lock and, with several workers, a write to a memory-mapped file, and a request made nine of them; a scrape
sees the other workers' requests at most ``FLUSH_S`` late.
"""

from __future__ import annotations

import os
from bisect import bisect_left

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

REQUESTS = Counter("cic_requests_total", "Data-plane requests", ["endpoint", "model", "status"])
LATENCY = Histogram(
    "cic_request_latency_seconds", "Request latency, end to end", ["endpoint", "model"], buckets=LATENCY_BUCKETS
)
TTFT = Histogram("cic_time_to_first_token_seconds", "Time to first streamed byte", ["model"], buckets=LATENCY_BUCKETS)
TOKENS = Counter("cic_tokens_total", "Tokens metered", ["model", "org", "kind"])
UPSTREAM_ERRORS = Counter("cic_upstream_errors_total", "Failed calls to nodes", ["model", "reason"])
USAGE_REJECTED = Counter(
    "cic_usage_rejected_total", "Usage records the database refused, set aside in rejected-usage-*.jsonl"
)
USAGE_SPOOLED = Counter("cic_usage_spooled_total", "Usage records spooled to disk because the DB refused them")
RATE_LIMITED = Counter("cic_rate_limited_total", "Requests refused by a limit", ["layer", "kind"])
LIMITER_FALLBACKS = Counter("cic_limiter_fallback_total", "Admissions decided without Redis (Redis unreachable)")
SHED = Counter("cic_shed_total", "Shared requests refused because the model's nodes were saturated", ["model"])
# The four-layer admission as the gateway sees it (one Redis round trip, or the in-process limiter), in
# fine buckets: its p50 is one of the gateway's speed goals (under 0.3 ms), printed by bench/gateway.py.
ADMISSION_BUCKETS = (5e-5, 1e-4, 1.5e-4, 2e-4, 2.5e-4, 3e-4, 4e-4, 5e-4, 7.5e-4, 0.001, 0.002, 0.005, 0.01, 0.05, 0.25)
ADMISSION = Histogram(
    "cic_limiter_admission_seconds", "Rate-limit admission (all layers, one round trip)", buckets=ADMISSION_BUCKETS
)
LIMITER_WAIT = Histogram(
    "cic_limiter_wait_seconds",
    "Latency the rate-limit admission added to a request: the wait for it, or, overlapped with forwarding, "
    "how long the node's answer waited for it",
    buckets=(0.0, 1e-5, 2.5e-5, *ADMISSION_BUCKETS),
)
IN_FLIGHT = Gauge("cic_requests_in_flight", "Requests in flight", multiprocess_mode="livesum")

CONTENT_TYPE = CONTENT_TYPE_LATEST
FLUSH_S = 1.0


class Tally:
    """Counts and histogram observations kept in this process until ``flush``."""

    def __init__(self) -> None:
        self.in_flight = 0
        self._counts: dict[tuple[Counter, tuple[str, ...]], float] = {}
        # (histogram, labels) -> (its bucket bounds, +Inf last; [sum, count per bucket...])
        self._observed: dict[tuple[Histogram, tuple[str, ...]], tuple[list[float], list[float]]] = {}

    def inc(self, counter: Counter, labels: tuple[str, ...] = (), amount: float = 1) -> None:
        key = (counter, labels)
        self._counts[key] = self._counts.get(key, 0) + amount

    def observe(self, histogram: Histogram, value: float, labels: tuple[str, ...] = ()) -> None:
        key = (histogram, labels)
        entry = self._observed.get(key)
        if entry is None:
            bounds = histogram._upper_bounds
            entry = self._observed[key] = (bounds, [0.0] * (len(bounds) + 1))
        bounds, tally = entry
        tally[0] += value
        # Prometheus keeps a histogram's buckets non-cumulative: the first whose bound is >= value.
        tally[1 + bisect_left(bounds, value)] += 1

    def flush(self) -> None:
        counts, self._counts = self._counts, {}
        observed, self._observed = self._observed, {}
        for (counter, labels), amount in counts.items():
            (counter.labels(*labels) if labels else counter).inc(amount)
        for (histogram, labels), (_, tally) in observed.items():
            child = histogram.labels(*labels) if labels else histogram
            child._sum.inc(tally[0])
            for bucket, n in zip(child._buckets, tally[1:], strict=True):
                if n:
                    bucket.inc(n)
        IN_FLIGHT.set(self.in_flight)


TALLY = Tally()


def flush() -> None:
    TALLY.flush()


def render() -> bytes:
    flush()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest()
