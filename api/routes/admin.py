"""Operator endpoints (platform admins only): the fleet, and every organization with its usage."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, status
from pydantic import BaseModel, Field
from sqlalchemy import func
from sqlmodel import col, select

from api.deps import AdminDep, SessionDep, SettingsDep
from cic.billing import pricing
from cic.models import BillingAccount, Membership, Org
from cic.models.nodes import NodePublic
from cic.models.types import utcnow
from cic.services import nodes, usage

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


class OrgOverview(BaseModel):
    id: str
    slug: str
    name: str
    plan: str
    members: int
    created_at: datetime
    month_requests: int
    month_tokens: int
    month_cost_usd: str
    billing_status: str


@router.get("/orgs", response_model=list[OrgOverview])
def list_orgs(_: AdminDep, session: SessionDep) -> list[OrgOverview]:
    """Every organization with its members and this month's usage (from the roll-ups), busiest first."""
    now = utcnow()
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    totals = usage.totals_by_org(session, month_start, now)
    members = dict(session.exec(select(Membership.org_id, func.count()).group_by(col(Membership.org_id))).all())
    accounts = dict(session.exec(select(BillingAccount.org_id, BillingAccount.status)).all())
    out = []
    for o in session.exec(select(Org)).all():
        t = totals.get(o.id, usage.OrgTotals())
        out.append(
            OrgOverview(
                id=o.id,
                slug=o.slug,
                name=o.name,
                plan=o.plan,
                members=int(members.get(o.id, 0)),
                created_at=o.created_at,
                month_requests=t.requests,
                month_tokens=t.tokens,
                month_cost_usd=format(pricing.usd(t.cost_picousd), "f"),
                billing_status=accounts.get(o.id, "none"),
            )
        )
    out.sort(key=lambda x: (-x.month_requests, x.slug))
    return out
