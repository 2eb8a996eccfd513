"""The routing policies as pure functions of hand-built snapshots: no network, no clock."""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

import pytest

from agent.scrape import EngineStats
from api.gateway.policies import (
    MIN_HEALTH,
    POLICY_NAMES,
    STALE_STATS_S,
    NodeSnapshot,
    RouteRequest,
    RoutingPolicy,
    UnknownPolicyError,
    get_policy,
)


def node(i: int | str, **kw: Any) -> NodeSnapshot:
    return NodeSnapshot(id=f"node_{i}", model="m", region="us-east", base_url=f"http://n{i}", **kw)


def busy(running: float = 0, waiting: float = 0, kv: float = 0.0, age: float = 1.0) -> dict[str, Any]:
    stats = EngineStats(num_requests_running=running, num_requests_waiting=waiting, kv_cache_usage_perc=kv)
    return {"stats": stats, "heartbeat_age_s": age}


def req(counter: int = 0, **kw: Any) -> RouteRequest:
    return RouteRequest(model="m", region="us-east", counter=counter, **kw)


def ids(policy: str, nodes: list[NodeSnapshot], n: int, **kw: Any) -> list[str]:
    p = get_policy(policy)
    out = []
    for i in range(n):
        chosen = p.choose(nodes, req(i, **kw))
        assert chosen is not None
        out.append(chosen.id)
    return out


# --- the registry of policies ------------------------------------------------------------------------------


def test_policy_names_and_lookup() -> None:
    assert set(POLICY_NAMES) == {"round_robin", "least_load", "latency", "cost", "prefix_affinity"}
    for name in POLICY_NAMES:
        assert get_policy(name).name == name


def test_unknown_policy_is_a_clear_error() -> None:
    with pytest.raises(UnknownPolicyError, match=r"unknown routing policy 'fastest'.*least_load") as err:
        get_policy("fastest")
    assert isinstance(err.value, ValueError)


def test_a_name_registers_once() -> None:
    with pytest.raises(ValueError, match="registered twice"):

        class Again(RoutingPolicy, name="round_robin"):
            pass


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_no_candidates_and_one_candidate(name: str) -> None:
    p = get_policy(name)
    assert p.choose([], req()) is None
    only = node(1, **busy(running=50, waiting=50, kv=1.0))
    assert p.choose([only], req(prefix_key="x")) == only


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_deterministic(name: str) -> None:
    nodes = [
        node(1, in_flight=2, ewma_ttft_s=0.3, price_per_hour_micros=2_000_000, **busy(3, 1, 0.5)),
        node(2, in_flight=1, ewma_ttft_s=0.2, price_per_hour_micros=1_000_000, spot=True, **busy(1, 0, 0.2)),
        node(3, in_flight=0, price_per_hour_micros=1_000_000, **busy(0, 0, 0.1)),
    ]
    for i in range(20):
        r = req(i, prefix_key=f"system prompt {i % 5}")
        assert get_policy(name).choose(nodes, r) == get_policy(name).choose(list(nodes), r)


# --- health ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_circuit_breaker_skips_an_unhealthy_node_while_a_healthy_one_exists(name: str) -> None:
    # The broken node looks best by every measure except health.
    broken = node(1, health_score=0.0, error_rate=0.9, ewma_ttft_s=0.01, price_per_hour_micros=1, spot=True)
    worse = node(2, health_score=MIN_HEALTH - 0.01, error_rate=0.51, ewma_ttft_s=0.02, **busy(1))
    fine = node(3, health_score=MIN_HEALTH, ewma_ttft_s=1.0, price_per_hour_micros=9_000_000, **busy(20, 10, 0.9))
    assert set(ids(name, [broken, worse, fine], 30, prefix_key="p")) == {fine.id}


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_all_unhealthy_uses_the_healthiest(name: str) -> None:
    a = node(1, health_score=0.0)
    b = node(2, health_score=0.3)
    c = node(3, health_score=0.3)
    assert set(ids(name, [a, b, c], 10, prefix_key="p")) <= {b.id, c.id}


# --- round robin -------------------------------------------------------------------------------------------


def test_round_robin_takes_turns() -> None:
    nodes = [node(i, **busy(running=10 * i)) for i in range(3)]
    assert ids("round_robin", nodes, 6) == ["node_0", "node_1", "node_2"] * 2


# --- least load --------------------------------------------------------------------------------------------


def test_least_load_counts_engine_queue_and_own_in_flight() -> None:
    nodes = [
        node(1, in_flight=0, **busy(running=4, waiting=2)),  # 6
        node(2, in_flight=3, **busy(running=2)),  # 5
        node(3, in_flight=6),  # 6 (a static node: no heartbeat)
    ]
    assert set(ids("least_load", nodes, 5)) == {"node_2"}


def test_least_load_weighs_kv_cache_pressure() -> None:
    full = node(1, **busy(running=2, kv=0.95))  # (2+1) × 1.95
    roomy = node(2, **busy(running=3, kv=0.1))  # (3+1) × 1.1
    assert ids("least_load", [full, roomy], 3) == ["node_2"] * 3


def test_least_load_ties_in_turn() -> None:
    nodes = [node(1, in_flight=1), node(2, in_flight=1), node(3, in_flight=2)]
    assert ids("least_load", nodes, 4) == ["node_1", "node_2", "node_1", "node_2"]


def test_least_load_ignores_stale_engine_stats() -> None:
    stale = node(1, in_flight=1, **busy(running=40, age=STALE_STATS_S + 1))
    fresh = node(2, in_flight=0, **busy(running=3))
    assert ids("least_load", [stale, fresh], 2) == ["node_1"] * 2


# --- latency -----------------------------------------------------------------------------------------------


def test_latency_prefers_lowest_ttft() -> None:
    nodes = [node(1, ewma_ttft_s=0.5), node(2, ewma_ttft_s=0.1), node(3, ewma_ttft_s=0.3)]
    assert set(ids("latency", nodes, 5)) == {"node_2"}


def test_latency_is_inflated_by_own_in_flight() -> None:
    # 0.1 s with 4 requests in flight (0.5) loses to 0.3 s idle.
    nodes = [node(1, ewma_ttft_s=0.1, in_flight=4), node(2, ewma_ttft_s=0.3)]
    assert ids("latency", nodes, 2) == ["node_2"] * 2


def test_latency_uses_the_engine_mean_when_it_has_not_measured() -> None:
    heard = EngineStats(ttft_seconds_sum=8.0, ttft_seconds_count=10.0)  # 0.8 s
    nodes = [node(1, stats=heard, heartbeat_age_s=1.0), node(2, ewma_ttft_s=0.4)]
    assert ids("latency", nodes, 2) == ["node_2"] * 2


def test_latency_tries_an_unmeasured_node() -> None:
    nodes = [node(1, ewma_ttft_s=0.2, in_flight=1), node(2)]
    assert ids("latency", nodes, 1) == ["node_2"]


def test_latency_falls_back_to_least_load_without_data() -> None:
    nodes = [node(1, in_flight=3), node(2, in_flight=1), node(3, in_flight=2)]
    assert set(ids("latency", nodes, 4)) == {"node_2"}


# --- cost --------------------------------------------------------------------------------------------------


def test_cost_picks_the_cheapest() -> None:
    nodes = [
        node(1, price_per_hour_micros=3_000_000),
        node(2, price_per_hour_micros=1_200_000, **busy(running=30)),
        node(3, price_per_hour_micros=2_000_000),
    ]
    assert set(ids("cost", nodes, 4)) == {"node_2"}


def test_cost_prefers_spot_at_equal_price_then_load() -> None:
    nodes = [
        node(1, price_per_hour_micros=1_000_000, spot=False),
        node(2, price_per_hour_micros=1_000_000, spot=True, in_flight=5),
        node(3, price_per_hour_micros=1_000_000, spot=True, in_flight=2),
        node(4, price_per_hour_micros=2_000_000, spot=True),
    ]
    assert set(ids("cost", nodes, 4)) == {"node_3"}


def test_cost_spills_to_the_next_tier_when_the_cheapest_queues() -> None:
    spot = node(1, price_per_hour_micros=400_000, spot=True, **busy(running=8, waiting=3))
    slow = node(2, price_per_hour_micros=500_000, **busy(running=8, waiting=1))
    demand = [node(i, price_per_hour_micros=1_000_000, **busy(running=2 * i)) for i in (3, 4)]
    assert ids("cost", [spot, slow, *demand], 3) == ["node_3"] * 3
    assert ids("cost", [spot, dataclasses.replace(slow, stats=EngineStats(num_requests_running=8))], 1) == ["node_2"]
    # Everyone queues: the cheapest after all.
    queueing = [dataclasses.replace(n, **busy(running=8, waiting=5)) for n in demand]
    assert ids("cost", [spot, slow, *queueing], 2) == ["node_1"] * 2


def test_cost_ties_in_turn() -> None:
    nodes = [node(1, price_per_hour_micros=5, spot=True), node(2, price_per_hour_micros=5, spot=True)]
    assert ids("cost", nodes, 4) == ["node_1", "node_2"] * 2


def test_cost_skips_an_unhealthy_cheap_node() -> None:
    nodes = [node(1, price_per_hour_micros=1, spot=True, health_score=0.0), node(2, price_per_hour_micros=9)]
    assert ids("cost", nodes, 2) == ["node_2"] * 2


# --- prefix affinity ---------------------------------------------------------------------------------------


def test_prefix_affinity_is_sticky_per_prefix() -> None:
    nodes = [node(i) for i in range(4)]
    for p in range(20):
        chosen = set(ids("prefix_affinity", nodes, 5, prefix_key=f"You are assistant number {p}."))
        assert len(chosen) == 1
    owners = Counter(ids("prefix_affinity", nodes, 1, prefix_key=f"prompt {p}")[0] for p in range(400))
    assert len(owners) == 4 and min(owners.values()) > 60  # the keys spread over the nodes


def test_prefix_affinity_is_consistent_when_a_node_leaves() -> None:
    nodes = [node(i) for i in range(5)]
    keys = [f"prompt {p}" for p in range(300)]
    before = {k: ids("prefix_affinity", nodes, 1, prefix_key=k)[0] for k in keys}
    after = {k: ids("prefix_affinity", nodes[:-1], 1, prefix_key=k)[0] for k in keys}
    moved = [k for k in keys if before[k] != after[k]]
    assert moved and all(before[k] == "node_4" for k in moved)  # only the keys of the node that left move


def test_prefix_affinity_bounded_load_spills_a_hot_prefix() -> None:
    key = "a very popular system prompt"
    nodes = [node(i) for i in range(4)]
    home = ids("prefix_affinity", nodes, 1, prefix_key=key)[0]
    # The home node is at the bound: ceil(1.25 × (total + 1) / 4) with total = 6 → 3; 2 + 1 ≤ 3 still fits.
    others = iter([2, 1, 1])
    loaded = [dataclasses.replace(n, in_flight=2 if n.id == home else next(others)) for n in nodes]
    assert ids("prefix_affinity", loaded, 1, prefix_key=key) == [home]
    # One more and it is over (1 + ε) × the mean: the next node in the key's order takes it, the same one each time.
    over = [dataclasses.replace(n, in_flight=5 if n.id == home else 1) for n in nodes]
    spill = set(ids("prefix_affinity", over, 5, prefix_key=key))
    assert len(spill) == 1 and home not in spill


def test_prefix_affinity_counts_engine_load() -> None:
    key = "another prompt"
    nodes = [node(i) for i in range(3)]
    home = ids("prefix_affinity", nodes, 1, prefix_key=key)[0]
    queued = [dataclasses.replace(n, **busy(running=8, waiting=4)) if n.id == home else n for n in nodes]
    assert ids("prefix_affinity", queued, 1, prefix_key=key) != [home]


def test_prefix_affinity_falls_back_to_session_then_least_load() -> None:
    nodes = [node(1, in_flight=2), node(2, in_flight=0), node(3, in_flight=1)]
    assert set(ids("prefix_affinity", nodes, 3)) == {"node_2"}  # no key: least load
    by_session = set(ids("prefix_affinity", [node(i) for i in range(4)], 5, session_id="user-42"))
    assert len(by_session) == 1
