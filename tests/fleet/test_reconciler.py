"""The orchestrator's decisions, rule by rule: ``evaluate`` is pure, so each case is a snapshot and a list."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from cic.fleet.launcher import ClusterState
from cic.fleet.reconciler import (
    DeploymentSpec,
    HoldDeployment,
    LaunchReplica,
    LaunchState,
    LaunchStatus,
    MarkLaunch,
    NodeState,
    ReconcilePolicy,
    TerminateLaunch,
    evaluate,
)

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
DEP = "dep_llama_us"


def dep(replicas: int = 2, *, spot: bool = True, after: int = 3, id: str = DEP) -> DeploymentSpec:
    return DeploymentSpec(
        id=id,
        model_id="llama-3-8b",
        region="us-east",
        replicas=replicas,
        accelerators="A10G:1",
        spot=spot,
        on_demand_after_preemptions=after,
        hf_repo="meta-llama/Meta-Llama-3-8B-Instruct",
    )


def launch(
    id: str,
    *,
    status: str = "running",
    spot: bool = True,
    age_min: float = 60,
    lost_min_ago: float | None = None,
    cluster: ClusterState | None = ClusterState.running,
    node_id: str | None = "auto",
    deployment_id: str | None = DEP,
) -> LaunchState:
    created = NOW - timedelta(minutes=age_min)
    updated = NOW - timedelta(minutes=lost_min_ago) if lost_min_ago is not None else created
    if node_id == "auto":
        node_id = f"node_{id}" if status == "running" else None
    return LaunchState(
        id=id,
        cluster_name=f"cic-{id}",
        deployment_id=deployment_id,
        spot=spot,
        status=LaunchStatus(status),
        created_at=created,
        updated_at=updated,
        node_id=node_id,
        cluster=cluster,
    )


def node(launch_id: str, *, status: str = "healthy", in_flight: int = 0, id: str | None = None) -> NodeState:
    return NodeState(id=id or f"node_{launch_id}", launch_id=launch_id, status=status, in_flight=in_flight)


def preempted(id: str, minutes_ago: float, *, spot: bool = True) -> LaunchState:
    return launch(id, status="preempted", spot=spot, age_min=minutes_ago + 30, lost_min_ago=minutes_ago, cluster=None)


def failed(id: str, minutes_ago: float, *, spot: bool = False) -> LaunchState:
    return launch(id, status="failed", spot=spot, age_min=minutes_ago + 30, lost_min_ago=minutes_ago, cluster=None)


def run(deployments, launches, nodes, policy: ReconcilePolicy | None = None):
    if policy is None:
        return evaluate(deployments, launches, nodes, NOW)
    return evaluate(deployments, launches, nodes, NOW, policy)


def of(kind, decisions):
    return [d for d in decisions if isinstance(d, kind)]


# --- steady state and replicas --------------------------------------------------------------------


def test_steady_state_decides_nothing() -> None:
    launches = [launch("a"), launch("b")]
    assert run([dep(2)], launches, [node("a"), node("b")]) == []


def test_scale_up_from_nothing_launches_spot() -> None:
    decisions = run([dep(2)], [], [])
    assert decisions == [
        LaunchReplica(DEP, True, "scale up to 2 replicas (0 live)"),
        LaunchReplica(DEP, True, "scale up to 2 replicas (0 live)"),
    ]


def test_launching_counts_as_live() -> None:
    launches = [launch("a"), launch("b", status="launching", age_min=10, cluster=ClusterState.launching)]
    assert run([dep(2)], launches, [node("a")]) == []


def test_on_demand_deployment_launches_on_demand() -> None:
    assert run([dep(1, spot=False)], [], []) == [LaunchReplica(DEP, False, "scale up to 1 replicas (0 live)")]


def test_scale_down_prefers_not_serving_then_idle_and_spares_loaded() -> None:
    launches = [
        launch("busy", age_min=300),
        launch("idle-old", age_min=200),
        launch("idle-new", age_min=100),
        launch("booting", status="launching", age_min=5, cluster=ClusterState.launching),
    ]
    nodes = [node("busy", in_flight=7), node("idle-old"), node("idle-new")]
    decisions = run([dep(1)], launches, nodes)
    assert decisions == [
        TerminateLaunch("booting", "cic-booting", "scale down to 1"),
        TerminateLaunch("idle-new", "cic-idle-new", "scale down to 1"),
        TerminateLaunch("idle-old", "cic-idle-old", "scale down to 1"),
    ]


def test_scale_down_takes_the_least_loaded_when_all_are_loaded() -> None:
    launches = [launch("a"), launch("b"), launch("c")]
    nodes = [node("a", in_flight=9), node("b", in_flight=2), node("c", in_flight=4)]
    assert [d.launch_id for d in of(TerminateLaunch, run([dep(2)], launches, nodes))] == ["b"]


def test_unhealthy_node_goes_before_a_serving_one() -> None:
    launches = [launch("a", age_min=100), launch("b", age_min=50)]
    nodes = [node("a"), node("b", status="unhealthy")]
    assert [d.launch_id for d in of(TerminateLaunch, run([dep(1)], launches, nodes))] == ["b"]


def test_zero_replicas_terminates_everything() -> None:
    launches = [launch("a"), launch("b", spot=False)]
    decisions = run([dep(0)], launches, [node("a", in_flight=3), node("b")])
    assert {d.launch_id for d in of(TerminateLaunch, decisions)} == {"a", "b"}
    assert of(LaunchReplica, decisions) == []


# --- launch lifecycle -----------------------------------------------------------------------------


def test_registered_node_marks_launch_running() -> None:
    launches = [launch("a", status="launching", age_min=12, cluster=ClusterState.running)]
    assert run([dep(1)], launches, [node("a", status="registering", id="node_x")]) == [
        MarkLaunch("a", LaunchStatus.running, "node registered", "node_x")
    ]


def test_node_registering_again_updates_the_node_id() -> None:
    launches = [launch("a", node_id="node_old")]
    assert run([dep(1)], launches, [node("a", id="node_new")]) == [
        MarkLaunch("a", LaunchStatus.running, "node registered again", "node_new")
    ]


def test_stuck_launch_fails_is_torn_down_and_replaced() -> None:
    launches = [launch("a", status="launching", age_min=50, cluster=ClusterState.running)]
    decisions = run([dep(1)], launches, [])
    assert decisions == [
        MarkLaunch("a", LaunchStatus.failed, "still launching after 50 min"),
        TerminateLaunch("a", "cic-a", "still launching after 50 min"),
        LaunchReplica(DEP, True, "replaces failed a"),
    ]


def test_launch_timeout_is_a_policy() -> None:
    launches = [launch("a", status="launching", age_min=50, cluster=ClusterState.launching)]
    assert run([dep(1)], launches, [], ReconcilePolicy(launch_timeout=timedelta(hours=2))) == []


def test_missing_cluster_of_a_young_launch_is_given_time() -> None:
    launches = [launch("a", status="launching", age_min=2, cluster=ClusterState.missing)]
    assert run([dep(1)], launches, []) == []


def test_missing_cluster_after_the_grace_is_a_failed_launch() -> None:
    launches = [launch("a", status="launching", age_min=8, cluster=ClusterState.missing)]
    decisions = run([dep(1)], launches, [])
    assert decisions == [
        MarkLaunch("a", LaunchStatus.failed, "no cluster 8 min after launch (provisioning failed)"),
        LaunchReplica(DEP, True, "replaces failed a"),
    ]


def test_node_gone_while_cluster_up_fails_and_replaces() -> None:
    launches = [launch("a"), launch("b")]
    decisions = run([dep(2)], launches, [node("b")])  # a's node deregistered
    assert decisions == [
        MarkLaunch("a", LaunchStatus.failed, "node node_a gone while the cluster is running"),
        TerminateLaunch("a", "cic-a", "node node_a gone while the cluster is running"),
        LaunchReplica(DEP, True, "replaces failed a"),
    ]


def test_offline_node_counts_as_gone() -> None:
    decisions = run([dep(1)], [launch("a")], [node("a", status="offline")])
    assert of(MarkLaunch, decisions)[0].status is LaunchStatus.failed


def test_a_live_node_outweighs_a_cluster_the_launcher_does_not_see() -> None:
    launches = [launch("a", cluster=ClusterState.missing)]
    assert run([dep(1)], launches, [node("a")]) == []


def test_unknown_cluster_state_disables_cluster_rules() -> None:
    launches = [launch("a", cluster=None), launch("b", status="launching", age_min=20, cluster=None)]
    assert run([dep(2)], launches, [node("a")]) == []


def test_leftover_cluster_of_a_lost_launch_is_torn_down() -> None:
    launches = [launch("a"), launch("old", status="failed", age_min=90, lost_min_ago=10, cluster=ClusterState.running)]
    assert run([dep(1)], launches, [node("a")]) == [
        TerminateLaunch("old", "cic-old", "leftover cluster of a failed launch")
    ]


def test_decisions_come_marks_first_then_terminations_then_launches() -> None:
    launches = [
        launch("gone", cluster=ClusterState.stopped),
        launch("new", status="launching", age_min=3, cluster=ClusterState.launching),
    ]
    decisions = run([dep(2)], launches, [node("new")])
    kinds = [type(d).__name__ for d in decisions]
    assert kinds == ["MarkLaunch", "MarkLaunch", "TerminateLaunch", "LaunchReplica"]


# --- preemption and the on-demand fallback ----------------------------------------------------------


def test_preempted_spot_launch_is_replaced_with_spot() -> None:
    launches = [launch("a", cluster=ClusterState.missing), launch("b")]
    decisions = run([dep(2)], launches, [node("b")])
    assert decisions == [
        MarkLaunch("a", LaunchStatus.preempted, "spot cluster gone"),
        LaunchReplica(DEP, True, "replaces preempted a"),
    ]


def test_stopped_spot_cluster_is_preempted_and_torn_down() -> None:
    decisions = run([dep(1)], [launch("a", cluster=ClusterState.stopped)], [node("a")])
    assert decisions == [
        MarkLaunch("a", LaunchStatus.preempted, "spot cluster stopped"),
        TerminateLaunch("a", "cic-a", "spot cluster stopped"),
        LaunchReplica(DEP, True, "replaces preempted a"),
    ]


def test_gone_on_demand_cluster_is_a_failure() -> None:
    decisions = run([dep(1, spot=False)], [launch("a", spot=False, cluster=ClusterState.missing)], [])
    assert decisions == [
        MarkLaunch("a", LaunchStatus.failed, "on-demand cluster gone"),
        LaunchReplica(DEP, False, "replaces failed a"),
    ]


def test_repeated_preemptions_switch_replacements_to_on_demand() -> None:
    launches = [
        preempted("p1", 50),
        preempted("p2", 20),
        launch("a", cluster=ClusterState.missing),  # the third, now
        launch("b"),
    ]
    decisions = run([dep(2, after=3)], launches, [node("b")])
    assert decisions == [
        MarkLaunch("a", LaunchStatus.preempted, "spot cluster gone"),
        LaunchReplica(DEP, False, "replaces preempted a; on-demand fallback: 3 spot losses in the last 60 min"),
    ]


def test_preemptions_outside_the_window_do_not_count() -> None:
    launches = [preempted("p1", 90), preempted("p2", 61), launch("a", cluster=ClusterState.missing)]
    decisions = run([dep(1, after=3)], launches, [])
    assert of(LaunchReplica, decisions) == [LaunchReplica(DEP, True, "replaces preempted a")]


def test_failed_spot_launches_count_as_spot_losses() -> None:
    launches = [failed("f1", 30, spot=True), failed("f2", 20, spot=True)]
    decisions = run([dep(1, after=2)], launches, [])
    assert of(LaunchReplica, decisions)[0].spot is False


def test_threshold_is_per_deployment() -> None:
    launches = [preempted("p1", 10), launch("a", cluster=ClusterState.missing)]
    assert of(LaunchReplica, run([dep(1, after=2)], launches, []))[0].spot is False
    assert of(LaunchReplica, run([dep(1, after=3)], launches, []))[0].spot is True


def test_during_the_fallback_spot_replicas_still_count() -> None:
    launches = [preempted("p1", 30), preempted("p2", 20), preempted("p3", 10), launch("s"), launch("o", spot=False)]
    assert run([dep(2)], launches, [node("s"), node("o")]) == []


def test_during_the_fallback_scale_down_drops_spot_first() -> None:
    launches = [preempted("p1", 30), preempted("p2", 20), preempted("p3", 10), launch("s"), launch("o", spot=False)]
    decisions = run([dep(1)], launches, [node("s"), node("o")])
    assert [d.launch_id for d in of(TerminateLaunch, decisions)] == ["s"]


def test_after_the_window_spot_replicas_are_launched_alongside_on_demand() -> None:
    launches = [preempted("p1", 90), preempted("p2", 80), preempted("p3", 70), launch("o1", spot=False)]
    launches.append(launch("o2", spot=False))
    decisions = run([dep(2)], launches, [node("o1"), node("o2")])
    # On-demand replicas keep serving until spot ones do.
    assert decisions == [
        LaunchReplica(DEP, True, "scale up to 2 replicas (0 live)"),
        LaunchReplica(DEP, True, "scale up to 2 replicas (0 live)"),
    ]


def test_on_demand_is_retired_as_spot_replicas_start_serving() -> None:
    launches = [
        launch("o-busy", spot=False, age_min=200),
        launch("o-idle", spot=False, age_min=150),
        launch("s1", age_min=20),
        launch("s2", status="launching", age_min=10, cluster=ClusterState.running),
    ]
    nodes = [node("o-busy", in_flight=4), node("o-idle"), node("s1")]
    decisions = run([dep(2)], launches, nodes)
    assert decisions == [TerminateLaunch("o-idle", "cic-o-idle", "back to spot: 1 wanted replicas serving")]


def test_on_demand_all_retired_once_spot_serves_every_replica() -> None:
    launches = [launch("o1", spot=False), launch("s1"), launch("s2")]
    decisions = run([dep(2)], launches, [node("o1", in_flight=2), node("s1"), node("s2")])
    assert decisions == [TerminateLaunch("o1", "cic-o1", "back to spot: 2 wanted replicas serving")]


def test_on_demand_deployment_replaces_spot_replicas() -> None:
    launches = [launch("s1"), launch("o1", spot=False, status="launching", age_min=5, cluster=ClusterState.launching)]
    decisions = run([dep(2, spot=False)], launches, [node("s1")])
    assert decisions == [LaunchReplica(DEP, False, "scale up to 2 replicas (1 live)")]  # s1 still covers


# --- guards -------------------------------------------------------------------------------------


def test_crash_loop_holds_the_deployment() -> None:
    launches = [failed(f"f{i}", 5 + i) for i in range(6)]
    decisions = run([dep(2, spot=False)], launches, [])
    assert decisions == [HoldDeployment(DEP, "6 failed launches in the last 60 min: holding until they age out")]


def test_crash_loop_threshold_is_a_policy() -> None:
    launches = [failed(f"f{i}", 5 + i) for i in range(6)]
    decisions = run([dep(1, spot=False)], launches, [], ReconcilePolicy(max_failures_per_window=10))
    assert of(LaunchReplica, decisions) != []


def test_launches_by_hand_are_watched_but_never_replaced() -> None:
    launches = [
        launch("manual", deployment_id=None, cluster=ClusterState.missing),
        launch("manual2", deployment_id=None, status="launching", age_min=3, cluster=ClusterState.launching),
    ]
    decisions = run([], launches, [node("manual2")])
    assert decisions == [
        MarkLaunch("manual", LaunchStatus.preempted, "spot cluster gone"),
        MarkLaunch("manual2", LaunchStatus.running, "node registered", "node_manual2"),
    ]


def test_launches_of_a_removed_deployment_are_terminated() -> None:
    launches = [launch("a", deployment_id="dep_gone")]
    assert run([], launches, [node("a")]) == [TerminateLaunch("a", "cic-a", "deployment removed")]


def test_status_strings_from_a_database_work_too() -> None:
    row = launch("a", cluster=ClusterState.missing)
    as_text = replace(row, status="running")  # type: ignore[arg-type]  # a store reading a text column
    decisions = run([dep(1)], [as_text], [])
    assert as_text.status is LaunchStatus.running
    assert of(MarkLaunch, decisions)[0].status is LaunchStatus.preempted
    with pytest.raises(ValueError, match="'sleeping' is not a valid LaunchStatus"):
        replace(row, status="sleeping")  # type: ignore[arg-type]


@pytest.mark.parametrize("state", [ClusterState.launching, ClusterState.unhealthy, ClusterState.running])
def test_cluster_states_that_need_no_action(state: ClusterState) -> None:
    assert run([dep(1)], [launch("a", cluster=state)], [node("a")]) == []
