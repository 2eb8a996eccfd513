"""Operator endpoints (platform admins only): the fleet."""

from __future__ import annotations

from fastapi import APIRouter, status
from pydantic import BaseModel, Field

from api.deps import AdminDep, SessionDep, SettingsDep
from cic.models.nodes import NodePublic
from cic.services import nodes

router = APIRouter(prefix="/admin", tags=["admin"])


@router.get("/nodes", response_model=list[NodePublic])
def list_nodes(_: AdminDep, session: SessionDep, include_gone: bool = False) -> list[NodePublic]:
    return [nodes.node_public(n) for n in nodes.list_nodes(session, include_gone=include_gone)]


@router.post("/nodes/{node_id}/drain", response_model=NodePublic)
def drain(node_id: str, actor: AdminDep, session: SessionDep) -> NodePublic:
    """No new requests go to the node; those in flight finish."""
    node = nodes.admin_drain(session, actor, node_id)
    session.commit()
    return nodes.node_public(node)


@router.post("/nodes/{node_id}/undrain", response_model=NodePublic)
def undrain(node_id: str, actor: AdminDep, session: SessionDep) -> NodePublic:
    node = nodes.admin_undrain(session, actor, node_id)
    session.commit()
    return nodes.node_public(node)


class TokenCreate(BaseModel):
    region: str | None = None
    expires_in_hours: float = Field(default=24, gt=0, le=720)
    max_uses: int | None = Field(default=None, ge=1)


class TokenCreated(BaseModel):
    token: str
    id: str
    region: str | None
    expires_at: str


@router.post("/node-tokens", status_code=status.HTTP_201_CREATED, response_model=TokenCreated)
def create_token(body: TokenCreate, actor: AdminDep, session: SessionDep, settings: SettingsDep) -> TokenCreated:
    """A bootstrap token for `cic agent --token`; shown once."""
    plaintext, row = nodes.create_node_token(
        session,
        actor,
        region=body.region,
        expires_in_hours=body.expires_in_hours,
        max_uses=body.max_uses,
        pepper=settings.key_pepper.get_secret_value(),
    )
    session.commit()
    return TokenCreated(token=plaintext, id=row.id, region=row.region_code, expires_at=row.expires_at.isoformat())
