"""The node registry as the control plane stores it: static upstreams, agent-run nodes (bootstrap
tokens, registration, heartbeats, drain, deregistration) and the operator's drain / undrain."""

from __future__ import annotations

import secrets
import string
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlmodel import Session, col, select

from cic import security
from cic.errors import AuthenticationError, Conflict, Gone, NotFound, ValidationFailed
from cic.models import Node, NodeStatus, NodeToken
from cic.models.nodes import Heartbeat, NodeCreate, NodePublic, NodeRegister
from cic.models.types import utcnow
from cic.services import audit, catalog
from cic.services.authz import Actor

NODE_TOKEN_PREFIX = "clnt"  # noqa: S105 - a prefix, not a secret
_BASE62 = string.ascii_letters + string.digits


def _check_endpoint(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValidationFailed(f"'{url}' is not an http(s) URL.", param="endpoint_url")
    return parts.netloc


def _require_model(session: Session, model: str) -> None:
    try:
        catalog.get_model(session, model)
    except NotFound:
        raise ValidationFailed(
            f"Unknown model '{model}': it is not in the catalog.", param="model", code="unknown_model"
        ) from None


def _new_node(session: Session, data: NodeCreate | NodeRegister, **extra: Any) -> Node:
    """A healthy node from what an operator or an agent said about it, after checking model, region, URL."""
    _require_model(session, data.model)
    catalog.require_region(session, data.region)
    netloc = _check_endpoint(data.endpoint_url)
    return Node(
        name=data.name or f"{data.model}@{netloc}",
        provider=data.provider,
        region_code=data.region,
        model_id=data.model,
        endpoint_url=data.endpoint_url.rstrip("/").removesuffix("/v1"),
        engine=data.engine,
        served_model=data.served_model or data.model,
        gpu=data.gpu,
        spot=data.spot,
        status=NodeStatus.healthy.value,
        **extra,
    )


def add_static_node(session: Session, actor: Actor, data: NodeCreate) -> Node:
    """Register an upstream by hand: an existing OpenAI-compatible server, or a hosted provider via LiteLLM."""
    node = _new_node(session, data, api_key_env=data.api_key_env)
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
        price_per_hour=node.price_per_hour_micros / 1_000_000,
        load=node.load,
        last_heartbeat_at=node.last_heartbeat_at,
        created_at=node.created_at,
    )


# --- bootstrap tokens -----------------------------------------------------------------------------


def create_node_token(
    session: Session,
    actor: Actor,
    *,
    region: str | None = None,
    expires_in_hours: float = 24,
    max_uses: int | None = None,
    pepper: str,
) -> tuple[str, NodeToken]:
    """A token that can register nodes (in ``region`` only, if given) until it expires. Shown once."""
    if region is not None:
        catalog.require_region(session, region)
    if not 0 < expires_in_hours <= 24 * 30:
        raise ValidationFailed("Token lifetime must be between a minute and 30 days.", param="expires_in")
    plaintext = f"{NODE_TOKEN_PREFIX}_" + "".join(secrets.choice(_BASE62) for _ in range(40))
    row = NodeToken(
        token_hash=security.hash_secret(pepper, plaintext),
        prefix=plaintext[:12],
        region_code=region,
        created_by=actor.name,
        expires_at=utcnow() + timedelta(hours=expires_in_hours),
        max_uses=max_uses,
    )
    session.add(row)
    audit.record(
        session,
        actor,
        "node_token.created",
        target_type="node_token",
        target_id=row.id,
        region=region,
        expires_at=row.expires_at.isoformat(),
        max_uses=max_uses,
    )
    session.flush()
    return plaintext, row


def _use_token(session: Session, plaintext: str, region: str, pepper: str) -> NodeToken:
    if not plaintext.startswith(f"{NODE_TOKEN_PREFIX}_"):
        raise AuthenticationError("Invalid bootstrap token.", code="invalid_node_token")
    row = session.exec(
        select(NodeToken).where(NodeToken.token_hash == security.hash_secret(pepper, plaintext)).with_for_update()
    ).first()
    now = utcnow()
    if row is None or row.revoked_at is not None:
        raise AuthenticationError("Invalid bootstrap token.", code="invalid_node_token")
    if row.expires_at <= now:
        raise AuthenticationError("This bootstrap token has expired; ask for a new one.", code="node_token_expired")
    if row.max_uses is not None and row.uses >= row.max_uses:
        raise AuthenticationError("This bootstrap token has been used up.", code="node_token_used")
    if row.region_code is not None and row.region_code != region:
        raise AuthenticationError(
            f"This bootstrap token is for region {row.region_code}, not {region}.", code="node_token_wrong_region"
        )
    row.uses += 1
    session.add(row)
    return row


# --- agent-run nodes ------------------------------------------------------------------------------


def register_node(session: Session, token: str, data: NodeRegister, *, pepper: str, ip: str = "") -> Node:
    """An agent's node joins the fleet (healthy: the agent registers once its engine answers)."""
    tok = _use_token(session, token, data.region, pepper)
    node = _new_node(
        session,
        data,
        price_per_hour_micros=round(data.price_per_hour * 1_000_000),
        managed=True,
        agent_version=data.agent_version,
        launch_id=data.launch_id,
        last_heartbeat_at=utcnow(),
    )
    session.add(node)
    audit.record(
        session,
        Actor(user_id=None, label=f"node:{node.id}", ip=ip),
        "node.registered",
        target_type="node",
        target_id=node.id,
        token=tok.id,
        model=data.model,
        region=data.region,
        endpoint=node.endpoint_url,
    )
    session.flush()
    return node


def _live_managed(session: Session, node_id: str) -> Node:
    node = session.get(Node, node_id)
    if node is None or not node.managed:
        raise NotFound(f"Node '{node_id}' not found.", param="node_id", code="node_not_found")
    if node.deregistered_at is not None:
        raise Gone(f"Node '{node_id}' was deregistered; register again.", code="node_deregistered")
    return node


def heartbeat(session: Session, node_id: str, hb: Heartbeat) -> Node:
    """Record a node's load. A node that reports a sick engine is unhealthy until it reports a good one."""
    node = _live_managed(session, node_id)
    node.load = hb.load
    node.last_heartbeat_at = node.updated_at = utcnow()
    if hb.draining or node.status == NodeStatus.draining.value:
        node.status = NodeStatus.draining.value
    else:
        node.status = (NodeStatus.healthy if hb.engine_healthy else NodeStatus.unhealthy).value
    session.add(node)
    return node


def node_drain(session: Session, node_id: str) -> Node:
    node = _live_managed(session, node_id)
    node.status = NodeStatus.draining.value
    node.updated_at = utcnow()
    session.add(node)
    audit.record(
        session, Actor(user_id=None, label=f"node:{node.id}"), "node.draining", target_type="node", target_id=node.id
    )
    return node


def node_deregister(session: Session, node_id: str) -> Node:
    node = _live_managed(session, node_id)
    node.status = NodeStatus.offline.value
    node.deregistered_at = node.updated_at = utcnow()
    session.add(node)
    audit.record(
        session,
        Actor(user_id=None, label=f"node:{node.id}"),
        "node.deregistered",
        target_type="node",
        target_id=node.id,
    )
    return node


def admin_drain(session: Session, actor: Actor, node_id: str) -> Node:
    return set_status(session, actor, node_id, NodeStatus.draining)


def admin_undrain(session: Session, actor: Actor, node_id: str) -> Node:
    node = session.get(Node, node_id)
    if node is not None and node.deregistered_at is None and node.status != NodeStatus.draining.value:
        raise Conflict(f"Node '{node_id}' is {node.status}, not draining.", code="node_not_draining")
    return set_status(session, actor, node_id, NodeStatus.healthy)


def record_auth_failure(session: Session, node_id: str, reason: str, ip: str) -> None:
    audit.record(
        session,
        Actor(user_id=None, label=f"node:{node_id}"[:64], ip=ip),
        "node.auth_failed",
        target_type="node",
        target_id=node_id[:64],
        reason=reason,
    )
