"""Spot-recovery orchestrator: ``evaluate`` turns a snapshot into decisions (pure); ``Executor`` carries them out.

Each pass (``reconcile_once``) reads the deployments (desired replicas of a model in a region), the recent
launches with the launcher's view of their clusters, and the live nodes, then decides:

Per launch (``launching`` or ``running``):
  * cluster **stopped** → lost (``preempted`` if spot, else ``failed``) and torn down (a stopped VM still
    bills its disk);
  * cluster **missing** and no live node: a ``running`` launch is lost (spot: ``preempted``, AWS terminates
    preempted VMs); a ``launching`` one is ``failed`` once ``missing_grace`` has passed since its launch
    (SkyPilot leaves no record when provisioning fails everywhere it may look);
  * ``running`` launch whose node is gone (deregistered or offline, e.g. taken offline by the health
    sweeper) while the cluster is still there → ``failed`` and torn down;
  * ``launching`` launch whose node has registered → ``running`` (with the node id); a ``running`` launch
    whose agent registered again gets the new node id;
  * ``launching`` for longer than ``launch_timeout`` (provisioning + setup + weights + vLLM start) →
    ``failed`` and torn down.
  A node that is alive outweighs a cluster the launcher cannot see (another SkyPilot API server, a stale
  record); an unknown cluster state (the launcher failed) disables the cluster rules for that pass.
  Terminal launches (preempted / failed / down) whose cluster is still there are torn down (a down that
  failed before is retried).

Per deployment, over its launches still live after that:
  * **Spot fallback**: ``on_demand_after_preemptions`` spot losses (preempted, or failed: mostly no spot
    capacity) within ``preemption_window`` switch new launches to on-demand until enough of those losses
    age out of the window; then new launches are spot again.
  * **Replicas**: launches of the wanted kind (spot unless falling back or the deployment is on-demand;
    during the fallback both kinds count) are kept at ``replicas``: the shortfall is launched, the surplus
    terminated.
  * **Back to spot**: when spot is wanted again, on-demand launches are retired as spot ones start
    serving: as many on-demand as ``replicas`` minus the serving spot replicas are kept, the rest go (the
    same the other way round for an on-demand deployment that has spot replicas).
  * Victims, first to last: not carrying requests, then (during the fallback) spot before on-demand, not
    serving (launching, node unhealthy) before serving, fewer requests in flight, newer before older.
  * **Crash-loop guard**: ``max_failures_per_window`` failed launches within the window hold the
    deployment (``HoldDeployment``; no new launches) until they age out.

Launches made by hand (``deployment_id`` None) get the per-launch rules only: never replaced nor scaled.
Live launches of a deployment that no longer exists are terminated.

Run one pass at a time (one process, or under a lock): two concurrent passes would both launch the
shortfall.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol

from cic.errors import CICError
from cic.fleet.launcher import (
    DEFAULT_VLLM_VERSION,
    ClusterState,
    Launcher,
    LauncherError,
    LaunchSpec,
    cluster_name_for,
)
from cic.models.types import new_id, utcnow

log = logging.getLogger(__name__)


class LaunchStatus(StrEnum):
    launching = "launching"
    running = "running"
    preempted = "preempted"
    failed = "failed"
    down = "down"


ACTIVE = frozenset({LaunchStatus.launching, LaunchStatus.running})
LOST = frozenset({LaunchStatus.preempted, LaunchStatus.failed})
NODE_GONE_STATUSES = frozenset({"offline"})
NODE_SERVING_STATUSES = frozenset({"healthy"})


# --- the snapshot -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeploymentSpec:
    id: str
    model_id: str
    region: str
    replicas: int
    accelerators: str
    spot: bool = True
    on_demand_after_preemptions: int = 3
    hf_repo: str = ""  # the model's weights (models.hf_repo)
    max_model_len: int | None = None


@dataclass(frozen=True, slots=True)
class LaunchState:
    id: str
    cluster_name: str
    deployment_id: str | None
    spot: bool
    status: LaunchStatus
    created_at: datetime
    updated_at: datetime  # for a preempted/failed launch: when it was lost
    node_id: str | None = None
    cluster: ClusterState | None = None  # None: unknown (not asked, or the launcher failed)
    detail: str = ""
    model_id: str = ""
    region: str = ""
    accelerators: str = ""

    def __post_init__(self) -> None:
        # Stores read text columns: take "running" as LaunchStatus.running (and refuse anything unknown).
        object.__setattr__(self, "status", LaunchStatus(self.status))


@dataclass(frozen=True, slots=True)
class NodeState:
    id: str
    launch_id: str | None
    status: str  # NodeStatus value: registering, healthy, unhealthy, draining, offline
    in_flight: int = 0  # requests running + waiting on the node


@dataclass(frozen=True, slots=True)
class ReconcilePolicy:
    launch_timeout: timedelta = timedelta(minutes=45)
    missing_grace: timedelta = timedelta(minutes=5)
    preemption_window: timedelta = timedelta(hours=1)
    max_failures_per_window: int = 6


DEFAULT_POLICY = ReconcilePolicy()


# --- the decisions ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MarkLaunch:
    launch_id: str
    status: LaunchStatus
    detail: str
    node_id: str | None = None


@dataclass(frozen=True, slots=True)
class TerminateLaunch:
    launch_id: str
    cluster_name: str
    reason: str


@dataclass(frozen=True, slots=True)
class LaunchReplica:
    deployment_id: str
    spot: bool
    reason: str


@dataclass(frozen=True, slots=True)
class HoldDeployment:
    """Nothing to do but say why a deployment below its replicas is not being launched."""

    deployment_id: str
    reason: str


Decision = MarkLaunch | TerminateLaunch | LaunchReplica | HoldDeployment


# --- evaluate -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Live:
    launch: LaunchState
    running: bool
    node: NodeState | None

    @property
    def serving(self) -> bool:
        return self.running and self.node is not None and self.node.status in NODE_SERVING_STATUSES

    @property
    def in_flight(self) -> int:
        return self.node.in_flight if self.node is not None else 0


@dataclass(frozen=True, slots=True)
class _Loss:
    launch_id: str
    spot: bool
    status: LaunchStatus
    fresh: bool  # lost in this pass


@dataclass(frozen=True, slots=True)
class _Verdict:
    lost: LaunchStatus | None = None
    detail: str = ""
    terminate: bool = False
    mark: MarkLaunch | None = None
    node: NodeState | None = None


def evaluate(
    deployments: Sequence[DeploymentSpec],
    launches: Sequence[LaunchState],
    nodes: Sequence[NodeState],
    now: datetime,
    policy: ReconcilePolicy = DEFAULT_POLICY,
) -> list[Decision]:
    """Decisions for one pass, in the order to carry them out: marks, terminations, holds, launches."""
    alive: dict[str, list[NodeState]] = defaultdict(list)
    for n in nodes:
        if n.launch_id and n.status not in NODE_GONE_STATUSES:
            alive[n.launch_id].append(n)
    since = now - policy.preemption_window
    marks: list[Decision] = []
    terminations: list[Decision] = []
    live: dict[str | None, list[_Live]] = defaultdict(list)
    losses: dict[str, list[_Loss]] = defaultdict(list)

    for launch in sorted(launches, key=lambda x: (x.created_at, x.id)):
        if launch.status not in ACTIVE:
            if launch.cluster not in (None, ClusterState.missing):
                terminations.append(
                    TerminateLaunch(launch.id, launch.cluster_name, f"leftover cluster of a {launch.status} launch")
                )
            if launch.deployment_id and launch.status in LOST and launch.updated_at >= since:
                losses[launch.deployment_id].append(_Loss(launch.id, launch.spot, launch.status, fresh=False))
            continue
        verdict = _judge(launch, alive.get(launch.id, []), now, policy)
        if verdict.lost is not None:
            marks.append(MarkLaunch(launch.id, verdict.lost, verdict.detail))
            if verdict.terminate:
                terminations.append(TerminateLaunch(launch.id, launch.cluster_name, verdict.detail))
            if launch.deployment_id:
                losses[launch.deployment_id].append(_Loss(launch.id, launch.spot, verdict.lost, fresh=True))
            continue
        if verdict.mark is not None:
            marks.append(verdict.mark)
        running = launch.status == LaunchStatus.running or verdict.mark is not None
        live[launch.deployment_id].append(_Live(launch, running, verdict.node))

    holds: list[Decision] = []
    new_launches: list[Decision] = []
    known = {d.id for d in deployments}
    for dep in deployments:
        dep_terminations, dep_holds, dep_launches = _compose(dep, live.get(dep.id, []), losses.get(dep.id, []), policy)
        terminations += dep_terminations
        holds += dep_holds
        new_launches += dep_launches
    for dep_id, items in live.items():
        if dep_id is not None and dep_id not in known:
            terminations += [TerminateLaunch(x.launch.id, x.launch.cluster_name, "deployment removed") for x in items]
    return [*marks, *terminations, *holds, *new_launches]


def _judge(launch: LaunchState, nodes: list[NodeState], now: datetime, policy: ReconcilePolicy) -> _Verdict:
    age = now - launch.created_at
    cluster = launch.cluster
    kind = "spot" if launch.spot else "on-demand"
    lost_kind = LaunchStatus.preempted if launch.spot else LaunchStatus.failed
    if cluster == ClusterState.stopped:
        return _Verdict(lost_kind, f"{kind} cluster stopped", terminate=True)
    if cluster == ClusterState.missing and not nodes:
        if launch.status == LaunchStatus.running:
            return _Verdict(lost_kind, f"{kind} cluster gone")
        if age > policy.missing_grace:
            return _Verdict(LaunchStatus.failed, f"no cluster {_minutes(age)} after launch (provisioning failed)")
    if launch.status == LaunchStatus.running and launch.node_id and not nodes:
        return _Verdict(
            LaunchStatus.failed,
            f"node {launch.node_id} gone while the cluster is {cluster or 'unknown'}",
            terminate=cluster != ClusterState.missing,
        )
    if nodes:
        node = max(nodes, key=lambda n: (n.status in NODE_SERVING_STATUSES, n.id == launch.node_id))
        if launch.status == LaunchStatus.launching:
            return _Verdict(mark=MarkLaunch(launch.id, LaunchStatus.running, "node registered", node.id), node=node)
        if all(n.id != launch.node_id for n in nodes):
            again = MarkLaunch(launch.id, LaunchStatus.running, "node registered again", node.id)
            return _Verdict(mark=again, node=node)
        return _Verdict(node=node)
    if launch.status == LaunchStatus.launching and age > policy.launch_timeout:
        return _Verdict(
            LaunchStatus.failed,
            f"still launching after {_minutes(age)}",
            terminate=cluster != ClusterState.missing,
        )
    return _Verdict()


def _compose(
    dep: DeploymentSpec, live: list[_Live], losses: list[_Loss], policy: ReconcilePolicy
) -> tuple[list[Decision], list[Decision], list[Decision]]:
    """(terminations, holds, launches) for one deployment."""
    window = _minutes(policy.preemption_window)
    spot_losses = sum(1 for x in losses if x.spot)
    failures = sum(1 for x in losses if x.status == LaunchStatus.failed)
    fallback = dep.spot and spot_losses >= dep.on_demand_after_preemptions
    new_spot = dep.spot and not fallback
    # The kind to retire as the wanted kind comes up: on-demand for a spot deployment, spot for an
    # on-demand one; during the fallback neither (spot replicas still up are welcome).
    retire_spot: bool | None = None if fallback else not dep.spot
    good = [x for x in live if retire_spot is None or x.launch.spot != retire_spot]
    bad = [x for x in live if retire_spot is not None and x.launch.spot == retire_spot]
    terminations: list[Decision] = []
    holds: list[Decision] = []
    launches: list[Decision] = []

    def victim_key(x: _Live) -> tuple[bool, bool, bool, int, float]:
        on_demand_last = fallback and not x.launch.spot  # during the fallback, spot replicas go first
        return (x.in_flight > 0, on_demand_last, x.serving, x.in_flight, -x.launch.created_at.timestamp())

    shortfall = dep.replicas - len(good)
    if shortfall > 0:
        if failures >= policy.max_failures_per_window:
            holds.append(
                HoldDeployment(dep.id, f"{failures} failed launches in the last {window}: holding until they age out")
            )
        else:
            suffix = f"; on-demand fallback: {spot_losses} spot losses in the last {window}" if fallback else ""
            fresh = [x for x in losses if x.fresh]
            for i in range(shortfall):
                if i < len(fresh):
                    why = f"replaces {fresh[i].status} {fresh[i].launch_id}"
                else:
                    why = f"scale up to {dep.replicas} replicas ({len(good)} live)"
                launches.append(LaunchReplica(dep.id, new_spot, why + suffix))
    elif shortfall < 0:
        for x in sorted(good, key=victim_key)[:-shortfall]:
            terminations.append(TerminateLaunch(x.launch.id, x.launch.cluster_name, f"scale down to {dep.replicas}"))
    if bad:
        serving = sum(1 for x in good if x.serving)
        keep = max(0, dep.replicas - serving)
        what = "back to spot" if dep.spot else "on-demand deployment"
        for x in sorted(bad, key=victim_key)[: max(0, len(bad) - keep)]:
            terminations.append(
                TerminateLaunch(x.launch.id, x.launch.cluster_name, f"{what}: {serving} wanted replicas serving")
            )
    return terminations, holds, launches


def _minutes(delta: timedelta) -> str:
    return f"{delta.total_seconds() / 60:.0f} min"


# --- carrying decisions out ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FleetConfig:
    """What launches need beyond a deployment: where nodes report, what they install."""

    control_plane_url: str
    vllm_version: str = DEFAULT_VLLM_VERSION
    package_spec: str | None = None
    hf_token: str | None = field(default=None, repr=False)
    extra_envs: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class NewLaunch:
    cluster_name: str
    deployment_id: str | None
    model_id: str
    region: str
    accelerators: str
    spot: bool


class LaunchStore(Protocol):
    """Where deployments, launches and nodes live (the database; ``MemoryLaunchStore`` in tests)."""

    def list_deployments(self) -> list[DeploymentSpec]: ...

    def list_launches(self, since: datetime) -> list[LaunchState]:
        """Every launching/running launch, and the others updated since ``since``."""
        ...

    def list_nodes(self) -> list[NodeState]:
        """Nodes not deregistered."""
        ...

    def get_launch(self, launch_id: str) -> LaunchState | None: ...

    def create_launch(self, launch: NewLaunch) -> str:
        """A new launch row in status ``launching``; returns its id."""
        ...

    def update_launch(
        self,
        launch_id: str,
        *,
        status: LaunchStatus | None = None,
        node_id: str | None = None,
        detail: str | None = None,
    ) -> None:
        """Change the given fields (None: leave as is) and ``updated_at``."""
        ...

    def issue_bootstrap_token(self, region: str, launch_id: str) -> str:
        """A fresh bootstrap token for the node of ``launch_id`` (plaintext; only the launch sees it)."""
        ...


@dataclass(frozen=True, slots=True)
class Outcome:
    decision: Decision
    ok: bool
    launch_id: str | None = None
    error: str | None = None


class Executor:
    """Carries decisions out with a ``Launcher`` and records them in a ``LaunchStore``.

    Launcher failures are recorded and reported (the next pass sees the state and decides again);
    store failures propagate and end the pass.
    """

    def __init__(
        self,
        launcher: Launcher,
        store: LaunchStore,
        config: FleetConfig,
        *,
        cluster_name: Callable[[str, str], str] = cluster_name_for,
    ) -> None:
        self.launcher = launcher
        self.store = store
        self.config = config
        self.cluster_name = cluster_name

    def execute(
        self, decisions: Iterable[Decision], deployments: Iterable[DeploymentSpec] | None = None
    ) -> list[Outcome]:
        deps = {d.id: d for d in (self.store.list_deployments() if deployments is None else deployments)}
        outcomes: list[Outcome] = []
        for d in decisions:
            if isinstance(d, MarkLaunch):
                outcomes.append(self._mark(d))
            elif isinstance(d, TerminateLaunch):
                outcomes.append(self._terminate(d))
            elif isinstance(d, LaunchReplica):
                outcomes.append(self._launch(d, deps.get(d.deployment_id)))
            else:
                log.warning("deployment held", extra={"deployment_id": d.deployment_id, "reason": d.reason})
                outcomes.append(Outcome(d, True))
        return outcomes

    def _mark(self, d: MarkLaunch) -> Outcome:
        current = self.store.get_launch(d.launch_id)
        if current is None or current.status not in ACTIVE:
            # Someone else (an operator's `cic nodes down`) got there first; their word stands.
            return Outcome(d, False, d.launch_id, "launch no longer active")
        self.store.update_launch(d.launch_id, status=d.status, node_id=d.node_id, detail=d.detail)
        log.info("launch marked", extra={"launch_id": d.launch_id, "status": str(d.status), "detail": d.detail})
        return Outcome(d, True, d.launch_id)

    def _terminate(self, d: TerminateLaunch) -> Outcome:
        try:
            self.launcher.down(d.cluster_name)
        except LauncherError as exc:
            log.warning("tear-down failed", extra={"cluster": d.cluster_name, "error": exc.message})
            return Outcome(d, False, d.launch_id, exc.message)
        current = self.store.get_launch(d.launch_id)
        if current is not None and current.status in ACTIVE:
            self.store.update_launch(d.launch_id, status=LaunchStatus.down, detail=d.reason)
        log.info("cluster torn down", extra={"cluster": d.cluster_name, "launch_id": d.launch_id, "reason": d.reason})
        return Outcome(d, True, d.launch_id)

    def _launch(self, d: LaunchReplica, dep: DeploymentSpec | None) -> Outcome:
        if dep is None:
            return Outcome(d, False, None, f"unknown deployment {d.deployment_id}")
        name = self.cluster_name(dep.model_id, dep.region)
        launch_id = self.store.create_launch(
            NewLaunch(name, dep.id, dep.model_id, dep.region, dep.accelerators, d.spot)
        )
        try:
            spec = LaunchSpec(
                cluster_name=name,
                launch_id=launch_id,
                model_id=dep.model_id,
                hf_repo=dep.hf_repo,
                region=dep.region,
                accelerators=dep.accelerators,
                spot=d.spot,
                control_plane_url=self.config.control_plane_url,
                bootstrap_token=self.store.issue_bootstrap_token(dep.region, launch_id),
                vllm_version=self.config.vllm_version,
                max_model_len=dep.max_model_len,
                package_spec=self.config.package_spec,
                hf_token=self.config.hf_token,
                extra_envs=self.config.extra_envs,
            )
            self.launcher.launch(spec)
        except CICError as exc:  # LauncherError, FleetConfigError (a spec the template cannot take)
            self.store.update_launch(launch_id, status=LaunchStatus.failed, detail=exc.message[:500])
            log.warning("launch failed", extra={"cluster": name, "launch_id": launch_id, "error": exc.message})
            return Outcome(d, False, launch_id, exc.message)
        log.info(
            "replica launched",
            extra={"cluster": name, "launch_id": launch_id, "spot": d.spot, "reason": d.reason},
        )
        return Outcome(d, True, launch_id)


@dataclass(frozen=True, slots=True)
class ReconcileResult:
    decisions: list[Decision]
    outcomes: list[Outcome]


def reconcile_once(
    store: LaunchStore,
    launcher: Launcher,
    config: FleetConfig,
    *,
    policy: ReconcilePolicy = DEFAULT_POLICY,
    now: datetime | None = None,
) -> ReconcileResult:
    """Snapshot → ``evaluate`` → ``Executor``: one pass of the orchestrator."""
    now = now or utcnow()
    deployments = store.list_deployments()
    launches = store.list_launches(since=now - policy.preemption_window)
    try:
        clusters = launcher.status([x.cluster_name for x in launches])
    except LauncherError as exc:
        log.warning("cluster status unavailable; cluster rules skipped this pass", extra={"error": exc.message})
        clusters = {}
    launches = [replace(x, cluster=clusters.get(x.cluster_name)) for x in launches]
    decisions = evaluate(deployments, launches, store.list_nodes(), now, policy)
    outcomes = Executor(launcher, store, config).execute(decisions, deployments)
    return ReconcileResult(decisions, outcomes)


# --- in memory ----------------------------------------------------------------------------------


class MemoryLaunchStore:
    """``LaunchStore`` in dicts, for tests and development."""

    def __init__(self, clock: Callable[[], datetime] = utcnow) -> None:
        self.clock = clock
        self.deployments: dict[str, DeploymentSpec] = {}
        self.launches: dict[str, LaunchState] = {}
        self.nodes: dict[str, NodeState] = {}
        self.tokens: dict[str, str] = {}  # launch id → token issued for it

    def add_deployment(self, dep: DeploymentSpec) -> DeploymentSpec:
        self.deployments[dep.id] = dep
        return dep

    def add_node(self, node: NodeState) -> NodeState:
        self.nodes[node.id] = node
        return node

    def remove_node(self, node_id: str) -> None:
        self.nodes.pop(node_id, None)

    def list_deployments(self) -> list[DeploymentSpec]:
        return list(self.deployments.values())

    def list_launches(self, since: datetime) -> list[LaunchState]:
        return [x for x in self.launches.values() if x.status in ACTIVE or x.updated_at >= since]

    def list_nodes(self) -> list[NodeState]:
        return list(self.nodes.values())

    def get_launch(self, launch_id: str) -> LaunchState | None:
        return self.launches.get(launch_id)

    def create_launch(self, launch: NewLaunch) -> str:
        now = self.clock()
        row = LaunchState(
            id=new_id("lch"),
            cluster_name=launch.cluster_name,
            deployment_id=launch.deployment_id,
            spot=launch.spot,
            status=LaunchStatus.launching,
            created_at=now,
            updated_at=now,
            model_id=launch.model_id,
            region=launch.region,
            accelerators=launch.accelerators,
        )
        self.launches[row.id] = row
        return row.id

    def update_launch(
        self,
        launch_id: str,
        *,
        status: LaunchStatus | None = None,
        node_id: str | None = None,
        detail: str | None = None,
    ) -> None:
        row = self.launches[launch_id]
        self.launches[launch_id] = replace(
            row,
            status=status if status is not None else row.status,
            node_id=node_id if node_id is not None else row.node_id,
            detail=detail if detail is not None else row.detail,
            updated_at=self.clock(),
        )

    def issue_bootstrap_token(self, region: str, launch_id: str) -> str:
        token = f"cnt_{new_id('test')}"
        self.tokens[launch_id] = token
        return token
