"""The executor and whole passes (``reconcile_once``) with FakeLauncher and the in-memory store: no cloud, no DB."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest

from cic.fleet.launcher import ClusterState, FakeLauncher, LauncherError
from cic.fleet.reconciler import (
    DeploymentSpec,
    Executor,
    FleetConfig,
    HoldDeployment,
    LaunchReplica,
    LaunchStatus,
    MarkLaunch,
    MemoryLaunchStore,
    NewLaunch,
    NodeState,
    TerminateLaunch,
    reconcile_once,
)

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
CONFIG = FleetConfig(
    control_plane_url="https://cp.example.com",
    package_spec="crosslogic-inference-cloud @ https://dl.example.com/cic.whl",
    hf_token="hf_secret",
)


@dataclass
class Clock:
    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> MemoryLaunchStore:
    s = MemoryLaunchStore(clock)
    s.add_deployment(
        DeploymentSpec(
            id="dep_1",
            model_id="llama-3-8b",
            region="us-east",
            replicas=2,
            accelerators="A10G:1",
            spot=True,
            on_demand_after_preemptions=3,
            hf_repo="meta-llama/Meta-Llama-3-8B-Instruct",
            max_model_len=8192,
        )
    )
    return s


@pytest.fixture
def cloud() -> FakeLauncher:
    return FakeLauncher()


def executor(cloud: FakeLauncher, store: MemoryLaunchStore) -> Executor:
    return Executor(cloud, store, CONFIG)


def new_launch(store: MemoryLaunchStore, name: str = "cic-x", *, spot: bool = True) -> str:
    return store.create_launch(NewLaunch(name, "dep_1", "llama-3-8b", "us-east", "A10G:1", spot))


# --- the executor, decision by decision -------------------------------------------------------------


def test_launch_replica_records_the_launch_and_starts_the_cluster(cloud, store) -> None:
    [outcome] = executor(cloud, store).execute([LaunchReplica("dep_1", True, "scale up")])
    assert outcome.ok
    row = store.launches[outcome.launch_id]
    assert row.status is LaunchStatus.launching
    assert row.spot is True
    assert row.cluster_name.startswith("cic-llama-3-8b-us-east-")
    [spec] = cloud.launched
    assert spec.cluster_name == row.cluster_name
    assert spec.launch_id == row.id
    assert spec.bootstrap_token == store.tokens[row.id]
    assert (spec.model_id, spec.hf_repo, spec.region, spec.accelerators, spec.spot) == (
        "llama-3-8b",
        "meta-llama/Meta-Llama-3-8B-Instruct",
        "us-east",
        "A10G:1",
        True,
    )
    assert spec.max_model_len == 8192
    assert spec.control_plane_url == CONFIG.control_plane_url
    assert spec.package_spec == CONFIG.package_spec
    assert spec.hf_token == "hf_secret"
    assert cloud.clusters[row.cluster_name] is ClusterState.launching


def test_launch_failure_is_recorded_as_a_failed_launch(cloud, store) -> None:
    cloud.fail_next = LauncherError("no credentials for aws")
    [outcome] = executor(cloud, store).execute([LaunchReplica("dep_1", False, "scale up")])
    assert not outcome.ok
    assert outcome.error == "no credentials for aws"
    row = store.launches[outcome.launch_id]
    assert (row.status, row.detail, row.spot) == (LaunchStatus.failed, "no credentials for aws", False)


def test_launch_for_an_unknown_deployment_does_nothing(cloud, store) -> None:
    [outcome] = executor(cloud, store).execute([LaunchReplica("dep_nope", True, "x")])
    assert not outcome.ok
    assert store.launches == {}
    assert cloud.launched == []


def test_terminate_downs_the_cluster_and_marks_the_launch_down(cloud, store) -> None:
    lid = new_launch(store)
    cloud.clusters["cic-x"] = ClusterState.running
    [outcome] = executor(cloud, store).execute([TerminateLaunch(lid, "cic-x", "scale down to 1")])
    assert outcome.ok
    assert cloud.downed == ["cic-x"]
    assert (store.launches[lid].status, store.launches[lid].detail) == (LaunchStatus.down, "scale down to 1")


def test_terminate_keeps_the_status_of_a_lost_launch(cloud, store) -> None:
    lid = new_launch(store)
    ex = executor(cloud, store)
    ex.execute([MarkLaunch(lid, LaunchStatus.preempted, "spot cluster stopped"), TerminateLaunch(lid, "cic-x", "x")])
    assert store.launches[lid].status is LaunchStatus.preempted
    assert store.launches[lid].detail == "spot cluster stopped"


def test_failed_tear_down_leaves_the_launch_as_it_was(cloud, store) -> None:
    lid = new_launch(store)
    cloud.fail_next = LauncherError("API server unreachable")
    [outcome] = executor(cloud, store).execute([TerminateLaunch(lid, "cic-x", "scale down")])
    assert not outcome.ok
    assert store.launches[lid].status is LaunchStatus.launching


def test_mark_does_not_revive_a_launch_someone_ended(cloud, store) -> None:
    lid = new_launch(store)
    store.update_launch(lid, status=LaunchStatus.down, detail="cic nodes down")
    [outcome] = executor(cloud, store).execute([MarkLaunch(lid, LaunchStatus.running, "node registered", "node_1")])
    assert not outcome.ok
    assert store.launches[lid].status is LaunchStatus.down


def test_mark_records_status_node_and_detail(cloud, store, clock) -> None:
    lid = new_launch(store)
    clock.advance(minutes=9)
    executor(cloud, store).execute([MarkLaunch(lid, LaunchStatus.running, "node registered", "node_1")])
    row = store.launches[lid]
    assert (row.status, row.node_id, row.detail, row.updated_at) == (
        LaunchStatus.running,
        "node_1",
        "node registered",
        clock.now,
    )


def test_hold_is_only_reported(cloud, store) -> None:
    [outcome] = executor(cloud, store).execute([HoldDeployment("dep_1", "crash loop")])
    assert outcome.ok
    assert cloud.launched == [] and cloud.downed == []


# --- whole passes ------------------------------------------------------------------------------------


def register(store: MemoryLaunchStore, cloud: FakeLauncher, *, in_flight: int = 0) -> None:
    """Every launching cluster comes up and its agent registers."""
    for row in list(store.launches.values()):
        if row.status is LaunchStatus.launching and row.cluster_name in cloud.clusters:
            cloud.up(row.cluster_name)
            store.add_node(NodeState(f"node_{row.id}", row.id, "healthy", in_flight))


def preempt(store: MemoryLaunchStore, cloud: FakeLauncher, launch_id: str) -> None:
    """The cloud takes the VM back; the health sweeper has taken its node offline."""
    cloud.preempt(store.launches[launch_id].cluster_name)
    store.remove_node(f"node_{launch_id}")


def live(store: MemoryLaunchStore, *, spot: bool | None = None) -> list[str]:
    return sorted(
        x.id
        for x in store.launches.values()
        if x.status in (LaunchStatus.launching, LaunchStatus.running) and (spot is None or x.spot is spot)
    )


def test_a_day_in_the_life_of_a_spot_deployment(cloud, store, clock) -> None:
    def tick(minutes: float = 1) -> list:
        clock.advance(minutes=minutes)
        return reconcile_once(store, cloud, CONFIG, now=clock.now).decisions

    # Two spot replicas are launched, come up and are marked running.
    decisions = tick()
    assert [type(d) for d in decisions] == [LaunchReplica, LaunchReplica]
    assert len(cloud.launched) == 2 and all(s.spot for s in cloud.launched)
    register(store, cloud)
    tick(10)
    assert {x.status for x in store.launches.values()} == {LaunchStatus.running}
    assert tick() == []

    # Three preemptions within the hour: the first two are replaced with spot, the third with on-demand.
    for n in range(3):
        victim = live(store, spot=True)[0]
        preempt(store, cloud, victim)
        tick(5)
        assert store.launches[victim].status is LaunchStatus.preempted
        assert cloud.launched[-1].spot is (n < 2)
        register(store, cloud)
        tick()
    assert len(live(store, spot=True)) == 1
    assert len(live(store, spot=False)) == 1
    assert tick() == []  # stable during the fallback

    # An hour later the preemptions have aged out: a spot replica is launched next to the on-demand one,
    # which is torn down once the spot one serves.
    tick(61)
    assert cloud.launched[-1].spot is True
    on_demand = live(store, spot=False)
    assert len(live(store)) == 3
    register(store, cloud)
    tick()
    assert live(store, spot=False) == []
    assert len(live(store, spot=True)) == 2
    assert store.launches[on_demand[0]].status is LaunchStatus.down
    assert store.launches[on_demand[0]].cluster_name in cloud.downed
    assert tick() == []


def test_scale_down_and_stuck_launches_in_passes(cloud, store, clock) -> None:
    reconcile_once(store, cloud, CONFIG, now=clock.now)
    register(store, cloud)
    reconcile_once(store, cloud, CONFIG, now=clock.now)

    # Down to one replica: one cluster is torn down, the busier one stays.
    busy = live(store)[0]
    store.nodes[f"node_{busy}"] = NodeState(f"node_{busy}", busy, "healthy", 12)
    store.add_deployment(replace(store.deployments["dep_1"], replicas=1))
    reconcile_once(store, cloud, CONFIG, now=clock.now)
    assert live(store) == [busy]

    # Back to two: the new launch never comes up and is replaced after the timeout.
    store.add_deployment(replace(store.deployments["dep_1"], replicas=2))
    reconcile_once(store, cloud, CONFIG, now=clock.now)
    [stuck] = [x for x in live(store) if x != busy]
    cloud.up(store.launches[stuck].cluster_name)  # the VM is up, vLLM never gets going
    clock.advance(minutes=46)
    reconcile_once(store, cloud, CONFIG, now=clock.now)
    assert store.launches[stuck].status is LaunchStatus.failed
    assert store.launches[stuck].cluster_name in cloud.downed
    assert len(live(store)) == 2


def test_a_pass_survives_the_launcher_status_failing(cloud, store, clock) -> None:
    reconcile_once(store, cloud, CONFIG, now=clock.now)
    register(store, cloud)
    first = live(store)[0]
    cloud.preempt(store.launches[first].cluster_name)  # unseen: status fails this pass
    cloud.fail_status = LauncherError("API server unreachable")
    result = reconcile_once(store, cloud, CONFIG, now=clock.now)
    assert [d for d in result.decisions if not isinstance(d, MarkLaunch)] == []
    cloud.fail_status = None
    store.remove_node(f"node_{first}")
    result = reconcile_once(store, cloud, CONFIG, now=clock.now)
    assert store.launches[first].status is LaunchStatus.preempted


def test_failed_tear_down_is_retried_on_the_next_pass(cloud, store, clock) -> None:
    reconcile_once(store, cloud, CONFIG, now=clock.now)
    register(store, cloud)
    reconcile_once(store, cloud, CONFIG, now=clock.now)
    victim = live(store)[0]
    cloud.set_state(store.launches[victim].cluster_name, ClusterState.stopped)
    # The mark goes through, the tear-down fails (fail_next hits the first launcher call: down).
    cloud.fail_next = LauncherError("API server unreachable")
    reconcile_once(store, cloud, CONFIG, now=clock.now)
    assert store.launches[victim].status is LaunchStatus.preempted
    assert store.launches[victim].cluster_name in cloud.clusters
    clock.advance(minutes=1)
    result = reconcile_once(store, cloud, CONFIG, now=clock.now)
    assert TerminateLaunch(victim, store.launches[victim].cluster_name, "leftover cluster of a preempted launch") in (
        result.decisions
    )
    assert store.launches[victim].cluster_name not in cloud.clusters
