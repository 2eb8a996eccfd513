"""The data plane's per-request metrics are tallied in process and flushed into Prometheus: what a scrape
shows after a flush is exactly what observing each request directly would have shown."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from api.gateway import metrics
from api.gateway.metrics import Tally

BUCKETS = (0.001, 0.005, 0.01, 0.1)
VALUES = [0.0, 0.0005, 0.001, 0.001, 0.0049, 0.005, 0.02, 0.1, 0.5, 3.0, 0.01]


def _metrics(registry: CollectorRegistry) -> tuple[Counter, Histogram, Histogram]:
    return (
        Counter("t_requests_total", "requests", ["endpoint", "status"], registry=registry),
        Histogram("t_latency_seconds", "latency", ["endpoint"], buckets=BUCKETS, registry=registry),
        Histogram("t_wait_seconds", "wait", buckets=BUCKETS, registry=registry),
    )


def _exposition(registry: CollectorRegistry) -> list[str]:
    return sorted(
        line
        for line in generate_latest(registry).decode().splitlines()
        if not line.startswith("#") and "_created" not in line
    )


def test_a_flushed_tally_shows_what_direct_updates_show() -> None:
    direct, tallied = CollectorRegistry(), CollectorRegistry()
    d_requests, d_latency, d_wait = _metrics(direct)
    t_requests, t_latency, t_wait = _metrics(tallied)
    tally = Tally()
    for i, v in enumerate(VALUES):
        endpoint, status = ("chat", "200") if i % 3 else ("embeddings", "404")
        d_requests.labels(endpoint, status).inc()
        d_latency.labels(endpoint).observe(v)
        d_wait.observe(v)
        tally.inc(t_requests, (endpoint, status))
        tally.observe(t_latency, v, (endpoint,))
        tally.observe(t_wait, v)
    d_requests.labels("chat", "200").inc(5)
    tally.inc(t_requests, ("chat", "200"), 5)
    assert _exposition(tallied) != _exposition(direct)  # nothing shows before the flush
    tally.flush()
    assert _exposition(tallied) == _exposition(direct)
    tally.flush()  # flushing again adds nothing
    assert _exposition(tallied) == _exposition(direct)


def test_in_flight_is_set_on_flush_and_render_flushes() -> None:
    metrics.TALLY.in_flight += 2
    metrics.TALLY.inc(metrics.RATE_LIMITED, ("key", "tokens"))
    try:
        text = metrics.render().decode()
        assert "cic_requests_in_flight 2.0" in text
        assert 'cic_rate_limited_total{kind="tokens",layer="key"}' in text
    finally:
        metrics.TALLY.in_flight -= 2
        metrics.flush()
