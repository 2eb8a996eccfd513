from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine
from sqlmodel import Session

from api.sweeper import sweep_once
from cic.models import Node
from cic.models.nodes import Heartbeat, NodeRegister
from cic.models.types import utcnow
from cic.services import fleet_health, nodes
from cic.services.authz import Actor
from cic.services.fleet_health import MarkUnhealthy, NodeHealthSnapshot, TakeOffline
from cic.settings import Settings

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def snap(node_id: str, status: str, silent_s: float, managed: bool = True) -> NodeHealthSnapshot:
    return NodeHealthSnapshot(node_id, status, managed, NOW - timedelta(seconds=silent_s), NOW)


def test_evaluate_decisions() -> None:
    decisions = fleet_health.evaluate(
        [
            snap("fresh", "healthy", 3),
            snap("quiet", "healthy", 20),
            snap("gone", "unhealthy", 700),
            snap("draining-quiet", "draining", 20),
            snap("static", "healthy", 9999, managed=False),
            snap("already", "unhealthy", 30),
        ],
        NOW,
        heartbeat_timeout_s=15,
        offline_after_s=600,
    )
    assert decisions == [MarkUnhealthy("quiet", "no heartbeat for 20 s"), TakeOffline("gone", "no heartbeat for 700 s")]


def test_sweep_marks_silent_node_and_heartbeat_revives(
    session: Session, engine: Engine, settings: Settings, pepper: str
) -> None:
    token, _ = nodes.create_node_token(session, Actor.system(), pepper=pepper)
    node = nodes.register_node(
        session,
        token,
        NodeRegister(model="llama-3-8b", region="us-east", endpoint_url="http://127.0.0.1:9"),
        pepper=pepper,
    )
    node.last_heartbeat_at = utcnow() - timedelta(seconds=settings.heartbeat_timeout_s + 5)
    session.add(node)
    session.commit()
    assert sweep_once(engine, settings) == 1
    session.expire_all()
    assert session.get(Node, node.id).status == "unhealthy"  # type: ignore[union-attr]
    nodes.heartbeat(session, node.id, Heartbeat(load={}))
    session.commit()
    assert session.get(Node, node.id).status == "healthy"  # type: ignore[union-attr]
    assert sweep_once(engine, settings) == 0
