"""Prometheus metrics of the data plane, exposed at ``/metrics``.

With several workers (``cic api --workers N``) ``PROMETHEUS_MULTIPROC_DIR`` is set before they start and
each worker writes its samples there; a scrape of any worker aggregates all of them.
"""

from __future__ import annotations

import os

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


def render() -> bytes:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest()
