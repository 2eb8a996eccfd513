"""The node registry: region rules, exclusion, policies by name, per-worker measurements, reading the table."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from agent.scrape import EngineStats
from api.gateway import registry as reg
from api.gateway.policies import UnknownPolicyError
from api.gateway.registry import NodeRegistry, NodeView, load_nodes
from cic.models import Node, NodeStatus


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def view(i: int | str, region: str = "us-east", model: str = "m", **kw: Any) -> NodeView:
    return NodeView(f"node_{i}", model, region, f"http://n{i}", "vllm", model, "", **kw)


def picks(r: NodeRegistry, n: int, region: str = "us-east", **kw: Any) -> list[str | None]:
    kw.setdefault("cross_region", False)
    out = []
    for _ in range(n):
        node = r.pick("m", region, **kw)
        out.append(node.id if node else None)
    return out


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def registry(clock: Clock) -> NodeRegistry:
    r = NodeRegistry(clock=clock, wall_clock=lambda: 1_700_000_000.0)
    r.replace([view(1), view(2), view(3, region="eu-west"), view(4, model="other")])
    return r


# --- region rules and exclusion ----------------------------------------------------------------------------


def test_local_region_first(registry: NodeRegistry) -> None:
    assert set(picks(registry, 6)) == {"node_1", "node_2"}
    assert set(picks(registry, 6, cross_region=True)) == {"node_1", "node_2"}


def test_other_regions_only_with_cross_region(registry: NodeRegistry) -> None:
    assert picks(registry, 1, region="ap-south") == [None]
    assert picks(registry, 2, region="ap-south", cross_region=True) != [None, None]
    both = frozenset({"node_1", "node_2"})
    assert picks(registry, 1, exclude=both) == [None]
    assert picks(registry, 3, exclude=both, cross_region=True) == ["node_3"] * 3


def test_exclude_and_unknown_model(registry: NodeRegistry) -> None:
    assert picks(registry, 3, exclude=frozenset({"node_1"})) == ["node_2"] * 3
    assert registry.pick("nope", "us-east", cross_region=True) is None


def test_picks_return_the_node_view(registry: NodeRegistry) -> None:
    node = registry.pick("m", "eu-west", cross_region=False)
    assert node == view(3, region="eu-west") and node.native


# --- policies by name --------------------------------------------------------------------------------------


def test_default_is_least_load_with_turns(registry: NodeRegistry) -> None:
    assert registry.default_policy == "least_load"
    assert picks(registry, 4) == ["node_1", "node_2", "node_1", "node_2"]
    registry.in_flight["node_1"] += 1
    assert picks(registry, 3) == ["node_2"] * 3


def test_policy_override_and_unknown_override(registry: NodeRegistry) -> None:
    registry.in_flight["node_1"] += 5
    assert set(picks(registry, 4, policy="round_robin")) == {"node_1", "node_2"}
    assert picks(registry, 2, policy="no-such-policy") == ["node_2"] * 2  # falls back to the default


def test_unknown_default_fails_at_construction() -> None:
    with pytest.raises(UnknownPolicyError):
        NodeRegistry("fastest")


def test_prefix_key_reaches_the_policy(registry: NodeRegistry) -> None:
    for p in range(10):
        chosen = set(picks(registry, 4, policy="prefix_affinity", prefix_key=f"system prompt {p}"))
        assert len(chosen) == 1


# --- measurements ------------------------------------------------------------------------------------------


def snap(r: NodeRegistry, node_id: str) -> Any:
    (s,) = [s for s in r.snapshots() if s.id == node_id]
    return s


def test_observe_keeps_ewmas(registry: NodeRegistry) -> None:
    assert snap(registry, "node_1").ewma_ttft_s is None
    registry.observe("node_1", ok=True, latency_s=1.0, ttft_s=0.5)
    s = snap(registry, "node_1")
    assert (s.ewma_latency_s, s.ewma_ttft_s, s.error_rate, s.health_score) == (1.0, 0.5, 0.0, 1.0)
    registry.observe("node_1", ok=True, latency_s=2.0, ttft_s=None)
    s = snap(registry, "node_1")
    assert s.ewma_latency_s == pytest.approx(1.0 + reg.LATENCY_ALPHA * 1.0)
    assert s.ewma_ttft_s == 0.5  # no TTFT sample: unchanged
    registry.observe("node_1", ok=False, latency_s=0.01, ttft_s=None)
    s = snap(registry, "node_1")
    assert s.error_rate == pytest.approx(reg.ERROR_ALPHA)
    assert s.health_score == pytest.approx(1 - reg.ERROR_ALPHA)
    assert s.ewma_latency_s == pytest.approx(1.2)  # a failure's time is not a latency sample


def test_latency_policy_uses_observed_ttft(registry: NodeRegistry) -> None:
    registry.observe("node_1", ok=True, latency_s=1.0, ttft_s=0.9)
    registry.observe("node_2", ok=True, latency_s=1.0, ttft_s=0.1)
    assert picks(registry, 3, policy="latency") == ["node_2"] * 3


def test_circuit_breaker_opens_half_opens_and_closes(registry: NodeRegistry, clock: Clock) -> None:
    for _ in range(reg.FAILURES_TO_OPEN - 1):
        registry.observe("node_1", ok=False, latency_s=0.01, ttft_s=None)
    assert snap(registry, "node_1").health_score >= 0.5
    registry.observe("node_1", ok=False, latency_s=0.01, ttft_s=None)
    assert snap(registry, "node_1").health_score == 0.0
    assert set(picks(registry, 6)) == {"node_2"}
    # While open, the node is still used when nothing else may serve.
    assert picks(registry, 1, exclude=frozenset({"node_2"})) == ["node_1"]
    # After the cool-down it is tried again; one more failure re-opens it at once.
    clock.now += reg.OPEN_S
    assert snap(registry, "node_1").health_score >= 0.5
    assert "node_1" in picks(registry, 2)
    registry.observe("node_1", ok=False, latency_s=0.01, ttft_s=None)
    assert snap(registry, "node_1").health_score == 0.0
    # A success after the next cool-down closes it.
    clock.now += reg.OPEN_S
    registry.observe("node_1", ok=True, latency_s=0.5, ttft_s=0.1)
    s = snap(registry, "node_1")
    assert s.health_score > 0.5
    registry.observe("node_1", ok=False, latency_s=0.01, ttft_s=None)
    assert snap(registry, "node_1").health_score > 0.0  # one failure after a success does not re-open it


def test_error_rate_opens_the_breaker_and_decays(registry: NodeRegistry, clock: Clock) -> None:
    # Intermittent failures (never five in a row) that push the EWMA over one half.
    for i in range(60):
        registry.observe("node_1", ok=i % 4 == 0, latency_s=0.1, ttft_s=0.05)
        if snap(registry, "node_1").health_score == 0.0:
            break
    else:
        pytest.fail("the breaker never opened")
    assert snap(registry, "node_1").error_rate > reg.ERROR_RATE_TO_OPEN
    clock.now += reg.OPEN_S + 2 * reg.ERROR_HALF_LIFE_S
    s = snap(registry, "node_1")
    assert s.error_rate < 0.5 * reg.ERROR_RATE_TO_OPEN and s.health_score > 0.5


def test_measurements_survive_replace(registry: NodeRegistry) -> None:
    registry.observe("node_1", ok=True, latency_s=1.0, ttft_s=0.3)
    registry.observe("node_2", ok=True, latency_s=1.0, ttft_s=0.4)
    registry.in_flight["node_2"] += 1
    registry.replace([view(1, spot=True), view(5)])
    assert snap(registry, "node_1").ewma_ttft_s == 0.3 and snap(registry, "node_1").spot
    assert snap(registry, "node_5").ewma_ttft_s is None
    assert registry.in_flight["node_2"] == 1  # still in flight: the dispatcher will count it down
    registry.observe("node_2", ok=True, latency_s=1.0, ttft_s=0.4)  # gone: ignored
    registry.replace([view(1), view(2)])
    assert snap(registry, "node_2").ewma_ttft_s is None  # it came back, but it is a new node to us
    registry.in_flight["node_2"] -= 1
    registry.replace([view(1)])
    assert "node_2" not in registry.in_flight


def test_snapshots_are_copies(registry: NodeRegistry) -> None:
    before = snap(registry, "node_1")
    registry.in_flight["node_1"] += 2
    registry.observe("node_1", ok=True, latency_s=1.0, ttft_s=0.3)
    assert before.in_flight == 0 and before.ewma_ttft_s is None
    after = snap(registry, "node_1")
    assert after.in_flight == 2 and after.ewma_ttft_s == 0.3
    with pytest.raises(dataclasses.FrozenInstanceError):
        after.in_flight = 0


def test_heartbeat_age_and_stats(clock: Clock) -> None:
    wall = datetime(2025, 1, 1, tzinfo=UTC)
    r = NodeRegistry(clock=clock, wall_clock=lambda: wall.timestamp())
    stats = EngineStats(num_requests_running=3, kv_cache_usage_perc=0.5)
    r.replace([view(1, stats=stats, last_heartbeat_at=wall - timedelta(seconds=4)), view(2)])
    one, two = sorted(r.snapshots("m"), key=lambda s: s.id)
    assert one.stats == stats and one.heartbeat_age_s == pytest.approx(4.0)
    assert two.stats == EngineStats() and two.heartbeat_age_s is None
    assert picks(r, 3) == ["node_2"] * 3  # node_1 has 3 running


# --- reading the node table --------------------------------------------------------------------------------


def test_load_nodes_reads_price_spot_load_and_heartbeat(engine: Engine, session: Session) -> None:
    beat = datetime.now(UTC).replace(microsecond=0)
    load = EngineStats(num_requests_running=2, num_requests_waiting=1, kv_cache_usage_perc=0.25).to_load()

    def row(node_id: str, region: str, status: NodeStatus = NodeStatus.healthy, **kw: Any) -> Node:
        return Node(
            id=node_id,
            provider="local",
            model_id="llama-3-8b",
            endpoint_url="http://127.0.0.1:9/",
            region_code=region,
            status=status.value,
            **kw,
        )

    session.add(row("node_a", "us-east", spot=True, price_per_hour_micros=1_250_000, load=load, last_heartbeat_at=beat))
    session.add(row("node_b", "eu-west"))
    session.add(row("node_c", "us-east", NodeStatus.draining))
    session.commit()
    by_id = {n.id: n for n in load_nodes(engine)}
    assert set(by_id) == {"node_a", "node_b"}
    a, b = by_id["node_a"], by_id["node_b"]
    assert (a.spot, a.price_per_hour_micros, a.last_heartbeat_at) == (True, 1_250_000, beat)
    assert a.stats == EngineStats.from_load(load) and a.base_url == "http://127.0.0.1:9"
    assert a.served_model == "llama-3-8b" and a.native
    assert (b.spot, b.price_per_hour_micros, b.stats, b.last_heartbeat_at) == (False, 0, EngineStats(), None)
