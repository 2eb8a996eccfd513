from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Index
from sqlmodel import JSON, Field, SQLModel

from cic.models.base import ID_LEN, BigIntPK
from cic.models.types import UTCDateTime, utcnow


class AuditEvent(SQLModel, table=True):
    """Who did what to which object. Kept when the object (or its org) is gone, so no foreign keys."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_org_id_created_at", "org_id", "created_at"),)

    id: int | None = Field(default=None, primary_key=True, sa_type=BigIntPK)
    org_id: str | None = Field(default=None, max_length=ID_LEN)
    actor: str = Field(max_length=64, description="user id, 'cli', or 'node:<id>'")
    action: str = Field(max_length=64)
    target_type: str = Field(default="", max_length=32)
    target_id: str = Field(default="", max_length=64)
    details: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    ip: str = Field(default="", max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class AuditEventPublic(SQLModel):
    id: int
    actor: str
    action: str
    target_type: str
    target_id: str
    details: dict[str, Any]
    created_at: datetime
