"""Reserved capacity (the seeds' second pricing mode): set by an operator, read by the org."""

from __future__ import annotations

from sqlmodel import Session, col, select

from cic import events
from cic.errors import NotFound, PermissionDenied
from cic.models import Reservation, Role
from cic.models.orgs import ReservationPublic
from cic.models.types import utcnow
from cic.services import audit, catalog
from cic.services.authz import Actor, authorize_org


def set_reservation(
    session: Session, actor: Actor, org_ref: str, *, model: str, region: str, tokens_per_s: int
) -> Reservation:
    if not actor.is_platform_admin:
        raise PermissionDenied("Reserved capacity is set by an operator (it is a contract).", code="not_platform_admin")
    org, _ = authorize_org(session, actor, org_ref, Role.owner)
    catalog.get_model(session, model)
    catalog.require_region(session, region)
    row = session.exec(
        select(Reservation).where(
            Reservation.org_id == org.id, Reservation.model_id == model, Reservation.region_code == region
        )
    ).first()
    row = row or Reservation(org_id=org.id, model_id=model, region_code=region, tokens_per_s=tokens_per_s)
    row.tokens_per_s, row.updated_at = tokens_per_s, utcnow()
    session.add(row)
    events.invalidate(session, orgs=(org.id,))
    audit.record(
        session,
        actor,
        "reservation.set",
        org_id=org.id,
        target_type="reservation",
        target_id=row.id,
        model=model,
        region=region,
        tokens_per_s=tokens_per_s,
    )
    session.flush()
    return row


def remove_reservation(session: Session, actor: Actor, org_ref: str, reservation_id: str) -> None:
    if not actor.is_platform_admin:
        raise PermissionDenied("Reserved capacity is set by an operator.", code="not_platform_admin")
    org, _ = authorize_org(session, actor, org_ref, Role.owner)
    row = session.get(Reservation, reservation_id)
    if row is None or row.org_id != org.id:
        raise NotFound(f"Reservation '{reservation_id}' not found.", code="reservation_not_found")
    session.delete(row)
    events.invalidate(session, orgs=(org.id,))
    audit.record(
        session, actor, "reservation.removed", org_id=org.id, target_type="reservation", target_id=reservation_id
    )


def list_reservations(session: Session, actor: Actor, org_ref: str) -> list[Reservation]:
    org, _ = authorize_org(session, actor, org_ref)
    return list(
        session.exec(select(Reservation).where(Reservation.org_id == org.id).order_by(col(Reservation.model_id)))
    )


def org_reservations(session: Session, org_id: str) -> dict[tuple[str, str], int]:
    """(model, region) -> reserved tokens per second, for the data plane."""
    rows = session.exec(select(Reservation).where(Reservation.org_id == org_id))
    return {(r.model_id, r.region_code): r.tokens_per_s for r in rows}


def public(row: Reservation) -> ReservationPublic:
    return ReservationPublic(
        id=row.id,
        org_id=row.org_id,
        model=row.model_id,
        region=row.region_code,
        tokens_per_s=row.tokens_per_s,
        created_at=row.created_at,
    )
