"""The reconciler's ``LaunchStore`` over the database: deployments, launches and nodes as tables."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, or_, select

from cic.db import session_scope
from cic.fleet.reconciler import DeploymentSpec, LaunchState, LaunchStatus, NewLaunch, NodeState
from cic.models import CatalogModel, Deployment, Launch, Node
from cic.models.types import utcnow
from cic.services import nodes
from cic.services.authz import Actor

TOKEN_HOURS = 3.0  # longer than the reconciler's launch timeout: provisioning, setup, weights, vLLM start


def _state(row: Launch) -> LaunchState:
    return LaunchState(
        id=row.id,
        cluster_name=row.cluster_name,
        deployment_id=row.deployment_id,
        spot=row.spot,
        status=LaunchStatus(row.status),
        created_at=row.created_at,
        updated_at=row.updated_at,
        node_id=row.node_id,
        detail=row.detail,
        model_id=row.model_id,
        region=row.region_code,
        accelerators=row.accelerators,
    )


class DbLaunchStore:
    def __init__(self, engine: Engine, pepper: str) -> None:
        self._engine = engine
        self._pepper = pepper

    def list_deployments(self) -> list[DeploymentSpec]:
        with Session(self._engine) as s:
            rows = s.exec(
                select(Deployment, CatalogModel).join(CatalogModel, col(CatalogModel.id) == col(Deployment.model_id))
            )
            return [
                DeploymentSpec(
                    id=d.id,
                    model_id=d.model_id,
                    region=d.region_code,
                    replicas=d.replicas,
                    accelerators=d.accelerators,
                    spot=d.spot,
                    on_demand_after_preemptions=d.on_demand_after_preemptions,
                    hf_repo=m.hf_repo,
                    max_model_len=m.context_length,
                )
                for d, m in rows
            ]

    def list_launches(self, since: datetime) -> list[LaunchState]:
        with Session(self._engine) as s:
            live = col(Launch.status).in_([LaunchStatus.launching.value, LaunchStatus.running.value])
            rows = s.exec(select(Launch).where(or_(live, col(Launch.updated_at) >= since)))
            return [_state(r) for r in rows]

    def list_nodes(self) -> list[NodeState]:
        with Session(self._engine) as s:
            rows = s.exec(select(Node).where(col(Node.deregistered_at).is_(None)))
            return [
                NodeState(
                    id=n.id,
                    launch_id=n.launch_id,
                    status=n.status,
                    in_flight=int((n.load or {}).get("num_requests_running", 0))
                    + int((n.load or {}).get("num_requests_waiting", 0)),
                )
                for n in rows
            ]

    def get_launch(self, launch_id: str) -> LaunchState | None:
        with Session(self._engine) as s:
            row = s.get(Launch, launch_id)
            return _state(row) if row else None

    def create_launch(self, launch: NewLaunch) -> str:
        with session_scope(self._engine) as s:
            row = Launch(
                cluster_name=launch.cluster_name,
                deployment_id=launch.deployment_id,
                model_id=launch.model_id,
                region_code=launch.region,
                accelerators=launch.accelerators,
                spot=launch.spot,
            )
            s.add(row)
            s.flush()
            return row.id

    def update_launch(
        self,
        launch_id: str,
        *,
        status: LaunchStatus | None = None,
        node_id: str | None = None,
        detail: str | None = None,
    ) -> None:
        with session_scope(self._engine) as s:
            row = s.get(Launch, launch_id)
            if row is None:
                return
            if status is not None:
                row.status = LaunchStatus(status).value
            if node_id is not None:
                row.node_id = node_id
            if detail is not None:
                row.detail = detail[:500]
            row.updated_at = utcnow()
            s.add(row)

    def issue_bootstrap_token(self, region: str, launch_id: str) -> str:
        with session_scope(self._engine) as s:
            token, _ = nodes.create_node_token(
                s,
                Actor.system("reconciler"),
                region=region,
                expires_in_hours=TOKEN_HOURS,
                max_uses=2,
                pepper=self._pepper,
            )
            return token
