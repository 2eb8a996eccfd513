from __future__ import annotations

from fastapi import APIRouter, status
from pydantic import BaseModel, Field

from api.deps import ActorDep, CurrentUser, SessionDep, SettingsDep
from cic.billing import credits
from cic.models.audit import AuditEventPublic
from cic.models.orgs import OrgCreate, OrgPublic, OrgUpdate, ReservationPublic, Role
from cic.services import audit, orgs, reservations
from cic.services.authz import authorize_org
from cic.views import org_public

router = APIRouter(prefix="/orgs", tags=["orgs"])


@router.get("", response_model=list[OrgPublic])
def list_orgs(actor: ActorDep, session: SessionDep) -> list[OrgPublic]:
    """The organizations you belong to, with your role in each."""
    return [org_public(o, r) for o, r in orgs.list_orgs(session, actor)]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=OrgPublic)
def create_org(
    body: OrgCreate, user: CurrentUser, actor: ActorDep, session: SessionDep, settings: SettingsDep
) -> OrgPublic:
    """Create an organization; you become its owner. Your first organization gets the sign-up credit."""
    org = orgs.create_org(session, actor, name=body.name, owner=user, slug=body.slug, plan=body.plan)
    credits.grant_signup_bonus(session, org, user.id, settings)
    session.commit()
    return org_public(org, Role.owner)


@router.get("/{org}", response_model=OrgPublic)
def get_org(org: str, actor: ActorDep, session: SessionDep) -> OrgPublic:
    row, role = authorize_org(session, actor, org)
    return org_public(row, role)


@router.patch("/{org}", response_model=OrgPublic)
def update_org(org: str, body: OrgUpdate, actor: ActorDep, session: SessionDep) -> OrgPublic:
    """Rename, or set limits (rpm, tpm, tpd, max_concurrency): members may only tighten their plan's."""
    row = orgs.update_org(session, actor, org, body)
    session.commit()
    _, role = authorize_org(session, actor, org)
    return org_public(row, role)


@router.get("/{org}/audit", response_model=list[AuditEventPublic])
def audit_log(
    org: str, actor: ActorDep, session: SessionDep, limit: int = 100, before_id: int | None = None
) -> list[AuditEventPublic]:
    """Who changed what in this organization, newest first (owners and admins)."""
    row, _ = authorize_org(session, actor, org, Role.admin)
    events = audit.list_events(session, row.id, limit=max(1, min(limit, 500)), before_id=before_id)
    return [AuditEventPublic.model_validate(e, from_attributes=True) for e in events]


@router.get("/{org}/reservations", response_model=list[ReservationPublic])
def list_reservations(org: str, actor: ActorDep, session: SessionDep) -> list[ReservationPublic]:
    """Reserved capacity (tokens per second per model and region) the organization holds."""
    return [reservations.public(r) for r in reservations.list_reservations(session, actor, org)]


class ReservationSet(BaseModel):
    model: str
    region: str
    tokens_per_s: int = Field(ge=1)


@router.put("/{org}/reservations", response_model=ReservationPublic)
def set_reservation(org: str, body: ReservationSet, actor: ActorDep, session: SessionDep) -> ReservationPublic:
    """Set reserved capacity (platform operators)."""
    row = reservations.set_reservation(
        session, actor, org, model=body.model, region=body.region, tokens_per_s=body.tokens_per_s
    )
    session.commit()
    return reservations.public(row)
