"""Invitations to join an organization, sent by email with a role."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from sqlmodel import Field, SQLModel

from cic.models.base import ID_LEN
from cic.models.orgs import MemberPublic, OrgPublic, Role
from cic.models.types import UTCDateTime, new_id, utcnow


class Invitation(SQLModel, table=True):
    """Only the HMAC of the link's token is stored; the token itself is only ever in the email."""

    __tablename__ = "invitations"

    id: str = Field(default_factory=lambda: new_id("inv"), primary_key=True, max_length=ID_LEN)
    org_id: str = Field(foreign_key="orgs.id", ondelete="CASCADE", index=True, max_length=ID_LEN)
    email: str = Field(max_length=320)
    role: str = Field(max_length=16)
    token_hash: str = Field(max_length=64, unique=True)
    # None when an operator invited from the command line.
    invited_by: str | None = Field(default=None, foreign_key="users.id", ondelete="SET NULL", max_length=ID_LEN)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime)
    accepted_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    accepted_by: str | None = Field(default=None, foreign_key="users.id", ondelete="SET NULL", max_length=ID_LEN)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class InvitationCreate(SQLModel):
    email: str = Field(max_length=320)
    role: Role = Role.member


EmailStatus = Literal["sent", "logged", "failed"]


class InvitationPublic(SQLModel):
    id: str
    org_id: str
    email: str
    role: Role
    invited_by: str | None
    inviter_name: str
    created_at: datetime
    expires_at: datetime


class InvitationCreated(InvitationPublic):
    """The answer to a new invitation (or a re-send). ``email_status``: ``sent`` (handed to the mail
    server), ``logged`` (no mail server configured: the message went to the log) or ``failed``.
    ``accept_url`` is given only when the mail did not go out, so the inviter can pass the link on."""

    email_status: EmailStatus
    accept_url: str | None = None


class InvitationPreview(SQLModel):
    """What the invitation link shows before the invitee accepts (no sign-in needed)."""

    org_id: str
    org_name: str
    org_slug: str
    email: str
    role: Role
    inviter_name: str
    expires_at: datetime


class InvitationAccepted(SQLModel):
    """The org joined (with the caller's new role) and the membership."""

    org: OrgPublic
    member: MemberPublic
