"""The node registry as the control plane stores it. (The fleet issue adds agents, heartbeats and health.)"""

from __future__ import annotations

from urllib.parse import urlsplit

from sqlmodel import Session, col, select

from cic.errors import NotFound, ValidationFailed
from cic.models import Node, NodeStatus
from cic.models.nodes import NodeCreate, NodePublic
from cic.models.types import utcnow
from cic.services import audit, catalog
from cic.services.authz import Actor


def add_static_node(session: Session, actor: Actor, data: NodeCreate) -> Node:
    """Register an upstream by hand: an existing OpenAI-compatible server, or a hosted provider via LiteLLM."""
    catalog.get_model(session, data.model)
    catalog.require_region(session, data.region)
    parts = urlsplit(data.endpoint_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValidationFailed(f"'{data.endpoint_url}' is not an http(s) URL.", param="endpoint_url")
    node = Node(
        name=data.name or f"{data.model}@{parts.netloc}",
        provider=data.provider,
        region_code=data.region,
        model_id=data.model,
        endpoint_url=data.endpoint_url.rstrip("/").removesuffix("/v1"),
        engine=data.engine,
        served_model=data.served_model or data.model,
        api_key_env=data.api_key_env,
        gpu=data.gpu,
        spot=data.spot,
        status=NodeStatus.healthy.value,
    )
    session.add(node)
    audit.record(
        session,
        actor,
        "node.added",
        target_type="node",
        target_id=node.id,
        model=data.model,
        region=data.region,
        endpoint=node.endpoint_url,
        engine=data.engine,
    )
    session.flush()
    return node


def list_nodes(session: Session, *, include_gone: bool = False) -> list[Node]:
    q = select(Node)
    if not include_gone:
        q = q.where(col(Node.deregistered_at).is_(None))
    return list(session.exec(q.order_by(col(Node.region_code), col(Node.model_id), col(Node.created_at))))


def set_status(session: Session, actor: Actor, node_id: str, status: NodeStatus) -> Node:
    node = session.get(Node, node_id)
    if node is None or node.deregistered_at is not None:
        raise NotFound(f"Node '{node_id}' not found.", param="node_id", code="node_not_found")
    node.status = status.value
    node.updated_at = utcnow()
    if status is NodeStatus.offline:
        node.deregistered_at = node.updated_at
    session.add(node)
    audit.record(session, actor, f"node.{status.value}", target_type="node", target_id=node.id)
    return node


def node_public(node: Node) -> NodePublic:
    return NodePublic(
        id=node.id,
        name=node.name,
        provider=node.provider,
        region=node.region_code,
        model=node.model_id,
        endpoint_url=node.endpoint_url,
        engine=node.engine,
        served_model=node.served_model,
        status=node.status,
        gpu=node.gpu,
        spot=node.spot,
        load=node.load,
        last_heartbeat_at=node.last_heartbeat_at,
        created_at=node.created_at,
    )
