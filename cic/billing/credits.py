"""Credit grants: the sign-up bonus, promotional grants (operators) and prepaid credits (Checkout).

A grant's balance is its amount less what the ledger has taken from it (``credit_applications``);
credits are spent only by the accrual job, in the order ``cic.billing.pricing`` defines.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import ROUND_DOWN, Decimal, InvalidOperation

from pydantic import BaseModel
from sqlalchemy import func
from sqlmodel import Session, col, select

from cic.billing.pricing import PICO_PER_MICRO, usd
from cic.errors import PermissionDenied, ValidationFailed
from cic.models import CreditApplication, CreditGrant, Membership, Org, Role
from cic.models.billing import CreditKind
from cic.models.types import utcnow
from cic.services import audit
from cic.services.authz import Actor, authorize_org
from cic.settings import Settings

MAX_GRANT_USD = Decimal(1_000_000)


class CreditPublic(BaseModel):
    id: str
    kind: str
    amount_usd: str
    remaining_usd: str
    expires_at: datetime | None
    expired: bool
    created_at: datetime
    note: str


def to_micros(amount_usd: Decimal | float | str) -> int:
    try:
        amount = Decimal(str(amount_usd))
    except InvalidOperation as exc:
        raise ValidationFailed(f"'{amount_usd}' is not an amount in USD.", param="amount_usd") from exc
    if not amount.is_finite() or amount <= 0 or amount > MAX_GRANT_USD:
        raise ValidationFailed(
            f"A credit must be more than $0 and at most ${MAX_GRANT_USD:,}.", param="amount_usd", code="invalid_amount"
        )
    return int((amount * 1_000_000).to_integral_value(ROUND_DOWN))


def add_grant(
    session: Session,
    org_id: str,
    *,
    kind: CreditKind,
    amount_micros: int,
    expires_at: datetime | None = None,
    note: str = "",
    source_ref: str | None = None,
    actor: Actor | None = None,
) -> CreditGrant:
    """Record a grant (idempotent on ``source_ref``: a second grant from the same source is the first)."""
    if source_ref is not None:
        existing = session.exec(select(CreditGrant).where(CreditGrant.source_ref == source_ref)).first()
        if existing is not None:
            return existing
    grant = CreditGrant(
        org_id=org_id,
        kind=kind.value,
        amount_micros=amount_micros,
        expires_at=expires_at,
        note=note[:500],
        source_ref=source_ref,
        created_by=actor.user_id if actor else None,
    )
    session.add(grant)
    session.flush()
    audit.record(
        session,
        actor or Actor.system("billing"),
        "credit.granted",
        org_id=org_id,
        target_type="credit",
        target_id=grant.id,
        kind=kind.value,
        amount_usd=str(Decimal(amount_micros) / 1_000_000),
        note=note,
    )
    return grant


def grant(
    session: Session,
    actor: Actor,
    org_ref: str,
    *,
    amount_usd: Decimal | float | str,
    kind: CreditKind = CreditKind.promotional,
    expires_in_days: int | None = None,
    note: str = "",
) -> CreditGrant:
    """An operator's grant (promotional by default; ``prepaid`` records a payment taken elsewhere)."""
    if not actor.is_platform_admin:
        raise PermissionDenied("Only platform operators grant credits.", code="operator_only")
    org, _ = authorize_org(session, actor, org_ref)
    if expires_in_days is not None and expires_in_days < 1:
        raise ValidationFailed("expires_in_days must be at least 1.", param="expires_in_days")
    expires = utcnow() + timedelta(days=expires_in_days) if expires_in_days else None
    return add_grant(
        session, org.id, kind=kind, amount_micros=to_micros(amount_usd), expires_at=expires, note=note, actor=actor
    )


def grant_signup_bonus(session: Session, org: Org, owner_id: str, settings: Settings) -> CreditGrant | None:
    """The sign-up credit, once per person: only with the first org they own."""
    if settings.signup_credit_usd <= 0:
        return None
    owned = session.exec(
        select(func.count())
        .select_from(Membership)
        .where(Membership.user_id == owner_id, Membership.role == Role.owner.value)
    ).one()
    if owned > 1:
        return None
    return add_grant(
        session,
        org.id,
        kind=CreditKind.signup,
        amount_micros=to_micros(settings.signup_credit_usd),
        expires_at=utcnow() + timedelta(days=settings.signup_credit_days),
        note="Sign-up bonus",
        source_ref=f"signup:{owner_id}",
    )


def used_by_grant(session: Session, grant_ids: list[str]) -> dict[str, int]:
    if not grant_ids:
        return {}
    rows = session.exec(
        select(CreditApplication.grant_id, func.sum(CreditApplication.amount_picousd))
        .where(col(CreditApplication.grant_id).in_(grant_ids))
        .group_by(CreditApplication.grant_id)
    ).all()
    return {g: int(n or 0) for g, n in rows}


def list_credits(session: Session, actor: Actor, org_ref: str) -> list[CreditPublic]:
    org, _ = authorize_org(session, actor, org_ref)
    grants = session.exec(
        select(CreditGrant).where(CreditGrant.org_id == org.id).order_by(col(CreditGrant.created_at).desc())
    ).all()
    used = used_by_grant(session, [g.id for g in grants])
    now = utcnow()
    out = []
    for g in grants:
        remaining = g.amount_micros * PICO_PER_MICRO - used.get(g.id, 0)
        out.append(
            CreditPublic(
                id=g.id,
                kind=g.kind,
                amount_usd=format(usd(g.amount_micros * PICO_PER_MICRO).normalize(), "f"),
                remaining_usd=format(usd(remaining), "f"),
                expires_at=g.expires_at,
                expired=g.expires_at is not None and g.expires_at <= now,
                created_at=g.created_at,
                note=g.note,
            )
        )
    return out


def remaining_picousd(session: Session, org_id: str, at: datetime) -> int:
    """What the org's unexpired credits still hold."""
    grants = session.exec(select(CreditGrant).where(CreditGrant.org_id == org_id)).all()
    used = used_by_grant(session, [g.id for g in grants])
    return sum(
        max(0, g.amount_micros * PICO_PER_MICRO - used.get(g.id, 0))
        for g in grants
        if g.expires_at is None or g.expires_at > at
    )
