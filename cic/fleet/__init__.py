"""The GPU fleet: launching vLLM nodes with SkyPilot and keeping deployments at their replicas.

* ``launcher``   — the ``Launcher`` seam (launch / down / status), ``LaunchSpec``, ``FakeLauncher``.
* ``skypilot``   — the SkyPilot task from infra/skypilot/vllm-node.yaml, ``SkyPilotLauncher``
  (imports ``sky`` only when used: ``./scripts/install --fleet``).
* ``reconciler`` — ``evaluate`` (pure decisions), ``Executor``, ``LaunchStore``, ``reconcile_once``.
"""

from cic.fleet.launcher import (
    ClusterState,
    FakeLauncher,
    FleetConfigError,
    Launcher,
    LauncherError,
    LaunchHandle,
    LaunchSpec,
    cluster_name_for,
)
from cic.fleet.reconciler import (
    Decision,
    DeploymentSpec,
    Executor,
    FleetConfig,
    HoldDeployment,
    LaunchReplica,
    LaunchState,
    LaunchStatus,
    LaunchStore,
    MarkLaunch,
    MemoryLaunchStore,
    NewLaunch,
    NodeState,
    ReconcilePolicy,
    TerminateLaunch,
    evaluate,
    reconcile_once,
)

__all__ = [
    "ClusterState",
    "Decision",
    "DeploymentSpec",
    "Executor",
    "FakeLauncher",
    "FleetConfig",
    "FleetConfigError",
    "HoldDeployment",
    "LaunchHandle",
    "LaunchReplica",
    "LaunchSpec",
    "LaunchState",
    "LaunchStatus",
    "LaunchStore",
    "Launcher",
    "LauncherError",
    "MarkLaunch",
    "MemoryLaunchStore",
    "NewLaunch",
    "NodeState",
    "ReconcilePolicy",
    "TerminateLaunch",
    "cluster_name_for",
    "evaluate",
    "reconcile_once",
]
