"""Node health: decisions from a snapshot of the registry (pure), carried out by a separate executor.

A node run by an agent that has not sent a heartbeat for ``heartbeat_timeout_s`` is marked unhealthy
and gets no traffic; one unhealthy (or silent) for ``offline_after_s`` is taken offline for good (its
agent must register again). A heartbeat that comes back in time makes the node healthy again (the
heartbeat handler does that). Static upstreams send no heartbeats and are left to the gateway's
per-node circuit breaker.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel import Session, col, select

from cic.models import Node, NodeStatus
from cic.models.types import utcnow
from cic.services import audit
from cic.services.authz import Actor


@dataclass(frozen=True, slots=True)
class NodeHealthSnapshot:
    id: str
    status: str
    managed: bool
    last_heartbeat_at: datetime | None
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class MarkUnhealthy:
    node_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class TakeOffline:
    node_id: str
    reason: str


Decision = MarkUnhealthy | TakeOffline


def evaluate(
    nodes: list[NodeHealthSnapshot], now: datetime, *, heartbeat_timeout_s: float, offline_after_s: float
) -> list[Decision]:
    decisions: list[Decision] = []
    for n in nodes:
        if not n.managed or n.status == NodeStatus.offline.value:
            continue
        silent_s = (now - (n.last_heartbeat_at or n.updated_at)).total_seconds()
        if silent_s > offline_after_s:
            decisions.append(TakeOffline(n.id, f"no heartbeat for {silent_s:.0f} s"))
        elif silent_s > heartbeat_timeout_s and n.status in (NodeStatus.healthy.value, NodeStatus.registering.value):
            decisions.append(MarkUnhealthy(n.id, f"no heartbeat for {silent_s:.0f} s"))
    return decisions


def snapshot(session: Session) -> list[NodeHealthSnapshot]:
    rows = session.exec(select(Node).where(col(Node.deregistered_at).is_(None), col(Node.managed).is_(True)))
    return [NodeHealthSnapshot(n.id, n.status, n.managed, n.last_heartbeat_at, n.updated_at) for n in rows]


def execute(session: Session, decisions: list[Decision]) -> int:
    """Apply decisions; a node whose heartbeat arrived meanwhile (row changed) is left alone."""
    actor = Actor.system("health-sweep")
    applied = 0
    for d in decisions:
        node = session.get(Node, d.node_id, with_for_update=True)
        if node is None or node.deregistered_at is not None:
            continue
        now = utcnow()
        if isinstance(d, MarkUnhealthy):
            if node.last_heartbeat_at and (now - node.last_heartbeat_at) < timedelta(seconds=1):
                continue  # it just came back
            node.status = NodeStatus.unhealthy.value
        else:
            node.status = NodeStatus.offline.value
            node.deregistered_at = now
        node.updated_at = now
        session.add(node)
        audit.record(session, actor, f"node.{node.status}", target_type="node", target_id=node.id, reason=d.reason)
        applied += 1
    return applied
