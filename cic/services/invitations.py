"""Invitations: an owner or admin invites an email address into an org with a role; whoever signs in
with that address and opens the link becomes a member.

The link carries a token (``clsi_`` + 256 random bits) that only the email ever sees: the database keeps
its HMAC under the key pepper, like API keys and session tokens. An invitation is pending until it is
accepted (once), revoked, or expires (``CIC_INVITATION_TTL_DAYS``, 7 by default). One pending
invitation per org and address: a second is refused with 409 (``resend`` issues a fresh link instead).
Mail goes out after the invitation is committed (``deliver``); a mail failure loses nothing.
"""

from __future__ import annotations

import html
import logging
import secrets
from datetime import timedelta

from sqlalchemy import ColumnElement, and_, update
from sqlalchemy.engine import CursorResult
from sqlmodel import Session, col, select

from cic import notify, security
from cic.errors import Conflict, Gone, NotFound, PermissionDenied
from cic.models import Invitation, Membership, Org, Role, User
from cic.models.invitations import EmailStatus, InvitationPublic
from cic.models.types import utcnow
from cic.services import audit, users
from cic.services.authz import Actor, authorize_org, role_in
from cic.settings import Settings

log = logging.getLogger("cic.invitations")

TOKEN_PREFIX = "clsi"  # noqa: S105 - the token format, not a secret
OPERATOR_NAME = "A CrossLogic operator"


def generate_token() -> str:
    return f"{TOKEN_PREFIX}_{secrets.token_urlsafe(32)}"


def accept_url(settings: Settings, token: str) -> str:
    return f"{settings.dashboard_url}/invite/{token}"


def inviter_name(user: User | None) -> str:
    if user is None:
        return OPERATOR_NAME
    return user.name or user.email


def invitation_public(inv: Invitation, inviter: User | None) -> InvitationPublic:
    return InvitationPublic(
        id=inv.id,
        org_id=inv.org_id,
        email=inv.email,
        role=Role(inv.role),
        invited_by=inv.invited_by,
        inviter_name=inviter_name(inviter),
        created_at=inv.created_at,
        expires_at=inv.expires_at,
    )


def _pending() -> ColumnElement[bool]:
    """Neither accepted nor revoked (it may still have expired)."""
    return and_(col(Invitation.accepted_at).is_(None), col(Invitation.revoked_at).is_(None))


def _check_can_grant(actor_role: Role, role: Role) -> None:
    if role is Role.owner and actor_role is not Role.owner:
        raise PermissionDenied("Only an owner can invite an owner.", code="insufficient_role")


def create_invitation(
    session: Session, actor: Actor, ref: str, *, email: str, role: Role, pepper: str, ttl_days: int
) -> tuple[Invitation, Org, str]:
    """A new pending invitation; returns it, its org and the link's token (to mail, never to store)."""
    org, actor_role = authorize_org(session, actor, ref, Role.admin)
    _check_can_grant(actor_role, role)
    email = users.normalise_email(email)
    # One invitation at a time per org: two admins inviting the same address cannot both succeed.
    session.exec(select(Org.id).where(Org.id == org.id).with_for_update()).first()
    member = users.get_by_email(session, email)
    if member is not None and role_in(session, org.id, member.id) is not None:
        raise Conflict(f"'{email}' is already a member of '{org.slug}'.", param="email", code="already_member")
    now = utcnow()
    for old in session.exec(
        select(Invitation).where(Invitation.org_id == org.id, Invitation.email == email, _pending())
    ):
        if old.expires_at > now:
            raise Conflict(
                f"'{email}' already has a pending invitation to '{org.slug}' (id {old.id}); "
                "re-send it or revoke it first.",
                param="email",
                code="invitation_pending",
            )
        old.revoked_at = now  # an expired one is closed, so the new one is the only open invitation
        session.add(old)
    token = generate_token()
    inv = Invitation(
        org_id=org.id,
        email=email,
        role=role.value,
        token_hash=security.hash_secret(pepper, token),
        invited_by=actor.user_id,
        created_at=now,
        expires_at=now + timedelta(days=ttl_days),
    )
    session.add(inv)
    session.flush()
    audit.record(
        session,
        actor,
        "invitation.created",
        org_id=org.id,
        target_type="invitation",
        target_id=inv.id,
        email=email,
        role=role.value,
    )
    return inv, org, token


def _invitation_in(session: Session, org: Org, invitation_id: str) -> Invitation:
    inv = session.get(Invitation, invitation_id)
    if inv is None or inv.org_id != org.id:
        raise NotFound(f"Invitation '{invitation_id}' not found.", param="invitation_id", code="invitation_not_found")
    return inv


def resend(
    session: Session, actor: Actor, ref: str, invitation_id: str, *, pepper: str, ttl_days: int
) -> tuple[Invitation, Org, str]:
    """A fresh link (the old one stops working) and a new expiry for a pending invitation."""
    org, actor_role = authorize_org(session, actor, ref, Role.admin)
    inv = _invitation_in(session, org, invitation_id)
    _check_can_grant(actor_role, Role(inv.role))
    if inv.accepted_at is not None or inv.revoked_at is not None:
        raise Conflict("This invitation is no longer pending; send a new one.", code="invitation_closed")
    token = generate_token()
    inv.token_hash = security.hash_secret(pepper, token)
    inv.expires_at = utcnow() + timedelta(days=ttl_days)
    session.add(inv)
    audit.record(
        session, actor, "invitation.resent", org_id=org.id, target_type="invitation", target_id=inv.id, email=inv.email
    )
    session.flush()
    return inv, org, token


def list_pending(session: Session, actor: Actor, ref: str) -> list[tuple[Invitation, User | None]]:
    """Pending, unexpired invitations of an org, oldest first (owners and admins)."""
    org, _ = authorize_org(session, actor, ref, Role.admin)
    rows = session.exec(
        select(Invitation, User)
        .join(User, col(User.id) == col(Invitation.invited_by), isouter=True)
        .where(Invitation.org_id == org.id, col(Invitation.expires_at) > utcnow(), _pending())
        .order_by(col(Invitation.created_at))
    )
    return list(rows.all())


def revoke(session: Session, actor: Actor, ref: str, invitation_id: str) -> None:
    """Revoke a pending invitation (idempotent). An owner invitation only by an owner."""
    org, actor_role = authorize_org(session, actor, ref, Role.admin)
    inv = _invitation_in(session, org, invitation_id)
    if Role(inv.role) is Role.owner and actor_role is not Role.owner:
        raise PermissionDenied("Only an owner can revoke an owner invitation.", code="insufficient_role")
    if inv.accepted_at is not None:
        raise Conflict("This invitation was already accepted; remove the member instead.", code="invitation_accepted")
    if inv.revoked_at is not None:
        return
    inv.revoked_at = utcnow()
    session.add(inv)
    audit.record(
        session, actor, "invitation.revoked", org_id=org.id, target_type="invitation", target_id=inv.id, email=inv.email
    )


# --- the invitee's side -------------------------------------------------------------------------


def _by_token(session: Session, token: str, pepper: str) -> Invitation | None:
    if not token.startswith(TOKEN_PREFIX + "_") or len(token) > 128:
        return None
    return session.exec(select(Invitation).where(Invitation.token_hash == security.hash_secret(pepper, token))).first()


def _not_found() -> NotFound:
    return NotFound(
        "This invitation link is not valid: it may have been revoked, replaced by a newer one, or already used.",
        code="invitation_not_found",
    )


def preview(session: Session, token: str, *, pepper: str) -> tuple[Invitation, Org, User | None]:
    """A pending invitation by its link's token; 404 for unknown, used, expired or revoked ones."""
    inv = _by_token(session, token, pepper)
    if inv is None or inv.revoked_at is not None or inv.accepted_at is not None or inv.expires_at <= utcnow():
        raise _not_found()
    org = session.get(Org, inv.org_id)
    assert org is not None
    return inv, org, session.get(User, inv.invited_by) if inv.invited_by else None


def accept(session: Session, user: User, token: str, *, pepper: str, ip: str = "") -> tuple[Membership, Org]:
    """Join the org with the invitation's role. The signed-in account's email must be the invited
    one (case-insensitively): 403 otherwise. 404 unknown or revoked, 410 used or expired."""
    inv = _by_token(session, token, pepper)
    if inv is None or inv.revoked_at is not None:
        raise _not_found()
    if inv.accepted_at is not None:
        raise Gone("This invitation has already been used.", code="invitation_used")
    if inv.expires_at <= utcnow():
        raise Gone("This invitation has expired; ask for a new one.", code="invitation_expired")
    if user.email.lower() != inv.email.lower():
        raise PermissionDenied(
            f"This invitation is for {inv.email}, and you are signed in as {user.email}. "
            f"Sign in as {inv.email} to accept it.",
            code="invitation_email_mismatch",
        )
    org = session.get(Org, inv.org_id)
    assert org is not None
    if role_in(session, org.id, user.id) is not None:
        raise Conflict(f"You are already a member of '{org.slug}'.", code="already_member")
    # Spend it with one conditional UPDATE: of two concurrent accepts, one wins.
    now = utcnow()
    result = session.exec(
        update(Invitation).where(col(Invitation.id) == inv.id, _pending()).values(accepted_at=now, accepted_by=user.id)
    )
    assert isinstance(result, CursorResult)
    if result.rowcount != 1:
        raise Gone("This invitation has already been used.", code="invitation_used")
    membership = Membership(org_id=org.id, user_id=user.id, role=inv.role)
    session.add(membership)
    actor = Actor.user(user.id, ip=ip)
    audit.record(
        session, actor, "invitation.accepted", org_id=org.id, target_type="invitation", target_id=inv.id, role=inv.role
    )
    audit.record(
        session,
        actor,
        "member.added",
        org_id=org.id,
        target_type="user",
        target_id=user.id,
        role=inv.role,
        invitation=inv.id,
    )
    session.flush()
    return membership, org


# --- mail ---------------------------------------------------------------------------------------


def deliver(settings: Settings, inv: Invitation, org: Org, inviter: str, token: str) -> EmailStatus:
    """Mail the link (after the invitation is committed). Never raises for a mail failure: the
    invitation stands, the failure is logged and reported as ``failed``."""
    url = accept_url(settings, token)
    days = max(1, round((inv.expires_at - utcnow()).total_seconds() / 86400))
    subject = f"{inviter} invited you to {org.name} on CrossLogic"
    text = (
        f"{inviter} invited you to join the organization {org.name} on CrossLogic Inference Cloud "
        f"as {inv.role}.\n\n"
        f"Accept the invitation: {url}\n\n"
        f"Sign in (or sign up) as {inv.email} to accept. The link works once and expires in {days} days.\n"
        "If you did not expect this invitation, ignore this message.\n"
    )
    page = (
        f"<p>{html.escape(inviter)} invited you to join the organization <b>{html.escape(org.name)}</b> "
        f"on CrossLogic Inference Cloud as <b>{html.escape(inv.role)}</b>.</p>"
        f'<p><a href="{html.escape(url, quote=True)}">Accept the invitation</a></p>'
        f"<p>Sign in (or sign up) as {html.escape(inv.email)} to accept. The link works once and expires in "
        f"{days} days. If you did not expect this invitation, ignore this message.</p>"
    )
    try:
        notify.email_sender(settings).send(to=[inv.email], subject=subject, text=text, html=page)
    except notify.NotificationError as exc:
        log.warning("invitation mail not sent: %s", exc.message, extra={"invitation": inv.id, "org_id": org.id})
        return "failed"
    return "sent" if settings.smtp_host else "logged"
