"""The one seam between the fleet's logic and a cloud: start a cluster, tear it down, say how clusters are.

``SkyPilotLauncher`` (cic/fleet/skypilot.py) is the real one; ``FakeLauncher`` here stands in for it in
tests and development, and lets a test preempt or fail clusters at will.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from cic.errors import DependencyUnavailable, ValidationFailed
from cic.models.types import utcnow

DEFAULT_VLLM_VERSION = "0.11.0"
NODE_PORT = 8000


class LauncherError(DependencyUnavailable):
    """The launcher (SkyPilot, its API server, the cloud) could not do what was asked."""

    default_code = "launcher_error"


class FleetConfigError(ValidationFailed):
    """A launch cannot be described: unknown region mapping, bad accelerator spec, a missing value."""

    default_code = "fleet_config_error"


class ClusterState(StrEnum):
    """What the launcher knows of a cluster (SkyPilot: INIT, UP, STOPPED, or no record)."""

    launching = "launching"  # being provisioned or set up (INIT, never up yet)
    running = "running"  # up (UP)
    unhealthy = "unhealthy"  # was up, now abnormal (INIT after UP: a node died, the runtime is unhealthy)
    stopped = "stopped"  # stopped (GCP preempts spot VMs by stopping them; or someone stopped it)
    missing = "missing"  # no such cluster: never made, terminated, or preempted and cleaned up


@dataclass(frozen=True, slots=True, kw_only=True)
class LaunchSpec:
    """Everything one node launch needs. The two secrets are kept out of ``repr`` (and so out of logs)."""

    cluster_name: str
    model_id: str  # our catalog id, served under this name
    hf_repo: str  # the weights
    region: str  # our region code
    accelerators: str  # SkyPilot spec, e.g. "A10G:1"
    spot: bool
    control_plane_url: str
    bootstrap_token: str = field(repr=False)
    launch_id: str | None = None  # the Launch row; the agent registers with it
    vllm_version: str = DEFAULT_VLLM_VERSION
    max_model_len: int | None = None
    package_spec: str | None = None  # pip spec of our package on the node; None: the template's
    hf_token: str | None = field(default=None, repr=False)
    disk_size_gb: int | None = None  # None: the template's
    extra_envs: Mapping[str, str] = field(default_factory=dict)

    def secrets(self) -> dict[str, str]:
        out = {"CIC_NODE_TOKEN": self.bootstrap_token}
        if self.hf_token:
            out["HF_TOKEN"] = self.hf_token
        return out


@dataclass(frozen=True, slots=True)
class LaunchHandle:
    cluster_name: str
    request_id: str | None  # SkyPilot's request id (the launch runs on its API server), if any
    launched_at: datetime


class Launcher(Protocol):
    def launch(self, spec: LaunchSpec) -> LaunchHandle:
        """Start provisioning ``spec.cluster_name``; returns once the launch is accepted, not when it is up."""
        ...

    def down(self, cluster_name: str) -> None:
        """Tear the cluster down (idempotent: a cluster that does not exist is fine)."""
        ...

    def status(self, cluster_names: Iterable[str]) -> dict[str, ClusterState]:
        """The state of each named cluster (``missing`` for those the launcher does not know)."""
        ...


_NAME_JUNK = re.compile(r"[^a-z0-9]+")


def cluster_name_for(model_id: str, region: str, suffix: str | None = None) -> str:
    """``cic-<model>-<region>-<6 hex>``: unique, readable, and valid for SkyPilot and the clouds."""
    suffix = suffix or secrets.token_hex(3)
    model = _NAME_JUNK.sub("-", model_id.lower()).strip("-")[:20].strip("-")
    reg = _NAME_JUNK.sub("-", region.lower()).strip("-")[:12].strip("-")
    return f"cic-{model}-{reg}-{suffix}"


def gpu_count(accelerators: str) -> int:
    """``A10G:4`` → 4, ``H100`` → 1; raises FleetConfigError on anything else."""
    name, _, count = accelerators.partition(":")
    if not name.strip() or (count and not count.strip().isdigit()) or count.strip() == "0":
        raise FleetConfigError(f"Bad accelerator spec '{accelerators}' (expected e.g. A10G:1).", param="accelerators")
    return int(count) if count else 1


@dataclass
class FakeLauncher:
    """A launcher without a cloud: clusters are entries in a dict, a test moves them between states.

    ``launch`` puts the cluster in ``launching``; ``up``, ``preempt``, ``fail``, ``set_state`` move it;
    ``down`` forgets it. Every call is recorded; ``fail_next`` makes the next launch or down raise.
    """

    clusters: dict[str, ClusterState] = field(default_factory=dict)
    launched: list[LaunchSpec] = field(default_factory=list)
    downed: list[str] = field(default_factory=list)
    status_calls: int = 0
    fail_next: LauncherError | None = None
    fail_status: LauncherError | None = None

    def launch(self, spec: LaunchSpec) -> LaunchHandle:
        self._maybe_fail()
        if self.clusters.get(spec.cluster_name, ClusterState.missing) is not ClusterState.missing:
            raise LauncherError(f"Cluster '{spec.cluster_name}' already exists.")
        self.launched.append(spec)
        self.clusters[spec.cluster_name] = ClusterState.launching
        return LaunchHandle(spec.cluster_name, f"fake-{len(self.launched)}", utcnow())

    def down(self, cluster_name: str) -> None:
        self._maybe_fail()
        self.downed.append(cluster_name)
        self.clusters.pop(cluster_name, None)

    def status(self, cluster_names: Iterable[str]) -> dict[str, ClusterState]:
        self.status_calls += 1
        if self.fail_status is not None:
            raise self.fail_status
        return {name: self.clusters.get(name, ClusterState.missing) for name in cluster_names}

    # --- what the cloud does, for tests ---

    def up(self, cluster_name: str) -> None:
        self.set_state(cluster_name, ClusterState.running)

    def preempt(self, cluster_name: str, *, stopped: bool = False) -> None:
        """The cloud took the VM back: AWS terminates it (no record left), GCP stops it."""
        if stopped:
            self.set_state(cluster_name, ClusterState.stopped)
        else:
            self.clusters.pop(cluster_name, None)

    def fail(self, cluster_name: str) -> None:
        """Provisioning gave up (no capacity anywhere allowed): SkyPilot leaves no record."""
        self.clusters.pop(cluster_name, None)

    def set_state(self, cluster_name: str, state: ClusterState) -> None:
        if state is ClusterState.missing:
            self.clusters.pop(cluster_name, None)
        else:
            self.clusters[cluster_name] = state

    @property
    def live(self) -> list[str]:
        return sorted(self.clusters)

    def _maybe_fail(self) -> None:
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc
