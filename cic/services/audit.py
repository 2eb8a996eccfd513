from __future__ import annotations

from typing import Any

from sqlmodel import Session, col, select

from cic.models import AuditEvent
from cic.services.authz import Actor


def record(
    session: Session,
    actor: Actor,
    action: str,
    *,
    org_id: str | None = None,
    target_type: str = "",
    target_id: str = "",
    **details: Any,
) -> None:
    """Add an audit event to the caller's transaction: it lands exactly when the change does."""
    session.add(
        AuditEvent(
            org_id=org_id,
            actor=actor.name,
            action=action,
            target_type=target_type,
            target_id=target_id,
            details=details,
            ip=actor.ip,
        )
    )


def list_events(session: Session, org_id: str, *, limit: int = 100, before_id: int | None = None) -> list[AuditEvent]:
    q = select(AuditEvent).where(AuditEvent.org_id == org_id)
    if before_id is not None:
        q = q.where(col(AuditEvent.id) < before_id)
    return list(session.exec(q.order_by(col(AuditEvent.id).desc()).limit(limit)))
