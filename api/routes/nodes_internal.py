"""The node-registration API agents call: register with a bootstrap token, then signed calls only."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel import Session

from api.deps import SessionDep, SettingsDep
from cic import nodeauth
from cic.db import session_scope
from cic.errors import AuthenticationError
from cic.models.nodes import Heartbeat, HeartbeatReply, NodeRegister, NodeRegistered
from cic.services import nodes

router = APIRouter(prefix="/internal/nodes", tags=["node agents"])
_bearer = HTTPBearer(auto_error=False)


def _ip(request: Request) -> str:
    return request.client.host if request.client else ""


@router.post("/register", status_code=status.HTTP_201_CREATED, response_model=NodeRegistered)
def register(
    body: NodeRegister,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> NodeRegistered:
    """Join the fleet with a bootstrap token (`cic nodes token`). The answer's secret signs every later call."""
    if creds is None:
        raise AuthenticationError(
            "Send the bootstrap token as 'Authorization: Bearer clnt_…'.", code="invalid_node_token"
        )
    node = nodes.register_node(
        session, creds.credentials, body, pepper=settings.key_pepper.get_secret_value(), ip=_ip(request)
    )
    session.commit()
    return NodeRegistered(
        node_id=node.id,
        secret=nodeauth.node_secret(settings.secret_key.get_secret_value(), node.id),
        heartbeat_interval_s=settings.heartbeat_interval_s,
    )


async def signed_node(node_id: str, request: Request) -> str:
    """Verify the caller is the node it claims to be; refusals are written to the audit log."""
    body = await request.body()
    settings = request.app.state.settings
    try:
        nodeauth.verify(
            settings.secret_key.get_secret_value(),
            node_id,
            request.method,
            request.url.path,
            body,
            request.headers,
            request.app.state.nonces,
        )
    except nodeauth.SignatureError as exc:
        with session_scope(request.app.state.engine) as s:
            nodes.record_auth_failure(s, node_id, str(exc), _ip(request))
        raise AuthenticationError("Node signature refused.", code="invalid_signature") from None
    return node_id


SignedNode = Annotated[str, Depends(signed_node)]


def _reply(session: Session, node_status: str, interval: float) -> HeartbeatReply:
    session.commit()
    return HeartbeatReply(status=node_status, heartbeat_interval_s=interval)


@router.post("/{node_id}/heartbeat", response_model=HeartbeatReply)
def heartbeat(node_id: SignedNode, body: Heartbeat, session: SessionDep, settings: SettingsDep) -> HeartbeatReply:
    """Load figures scraped from the engine. The reply tells the agent if an operator asked it to drain."""
    node = nodes.heartbeat(session, node_id, body)
    return _reply(session, node.status, settings.heartbeat_interval_s)


@router.post("/{node_id}/drain", response_model=HeartbeatReply)
def drain(node_id: SignedNode, session: SessionDep, settings: SettingsDep) -> HeartbeatReply:
    """Stop sending this node new requests (spot notice, shutdown)."""
    node = nodes.node_drain(session, node_id)
    return _reply(session, node.status, settings.heartbeat_interval_s)


@router.post("/{node_id}/deregister", response_model=HeartbeatReply)
def deregister(node_id: SignedNode, session: SessionDep, settings: SettingsDep) -> HeartbeatReply:
    node = nodes.node_deregister(session, node_id)
    return _reply(session, node.status, settings.heartbeat_interval_s)
