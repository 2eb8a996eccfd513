"""Invitations: owners and admins invite by email with a role; the invitee opens the emailed link
(``{dashboard}/invite/{token}``), signs in with the invited address and accepts."""

from __future__ import annotations

from fastapi import APIRouter, Request, status

from api.deps import ActorDep, CurrentUser, SessionDep, SettingsDep
from cic.models import Invitation, Org, Role, User
from cic.models.invitations import (
    InvitationAccepted,
    InvitationCreate,
    InvitationCreated,
    InvitationPreview,
    InvitationPublic,
)
from cic.services import invitations
from cic.settings import Settings
from cic.views import member_public, org_public

router = APIRouter(tags=["invitations"])


def _created(settings: Settings, session: SessionDep, inv: Invitation, org: Org, token: str) -> InvitationCreated:
    inviter = session.get(User, inv.invited_by) if inv.invited_by else None
    name = invitations.inviter_name(inviter)
    status_ = invitations.deliver(settings, inv, org, name, token)
    return InvitationCreated(
        **invitations.invitation_public(inv, inviter).model_dump(),
        email_status=status_,
        accept_url=invitations.accept_url(settings, token) if status_ != "sent" else None,
    )


@router.post("/orgs/{org}/invitations", status_code=status.HTTP_201_CREATED, response_model=InvitationCreated)
def create_invitation(
    org: str, body: InvitationCreate, actor: ActorDep, session: SessionDep, settings: SettingsDep
) -> InvitationCreated:
    """Invite an email address with a role (owners and admins; only owners invite owners). The link
    is mailed after the invitation is saved; ``email_status`` says whether the mail went out, and
    ``accept_url`` is returned only when it did not."""
    inv, o, token = invitations.create_invitation(
        session,
        actor,
        org,
        email=body.email,
        role=body.role,
        pepper=settings.key_pepper.get_secret_value(),
        ttl_days=settings.invitation_ttl_days,
    )
    session.commit()
    return _created(settings, session, inv, o, token)


@router.get("/orgs/{org}/invitations", response_model=list[InvitationPublic])
def list_invitations(org: str, actor: ActorDep, session: SessionDep) -> list[InvitationPublic]:
    """Pending invitations (owners and admins)."""
    return [invitations.invitation_public(i, u) for i, u in invitations.list_pending(session, actor, org)]


@router.post("/orgs/{org}/invitations/{invitation_id}/resend", response_model=InvitationCreated)
def resend_invitation(
    org: str, invitation_id: str, actor: ActorDep, session: SessionDep, settings: SettingsDep
) -> InvitationCreated:
    """Mail a fresh link for a pending invitation (the previous link stops working) and restart its
    expiry."""
    inv, o, token = invitations.resend(
        session,
        actor,
        org,
        invitation_id,
        pepper=settings.key_pepper.get_secret_value(),
        ttl_days=settings.invitation_ttl_days,
    )
    session.commit()
    return _created(settings, session, inv, o, token)


@router.delete("/orgs/{org}/invitations/{invitation_id}", status_code=status.HTTP_204_NO_CONTENT)
def revoke_invitation(org: str, invitation_id: str, actor: ActorDep, session: SessionDep) -> None:
    """Revoke a pending invitation; its link stops working."""
    invitations.revoke(session, actor, org, invitation_id)
    session.commit()


@router.get("/invitations/{token}", response_model=InvitationPreview)
def preview_invitation(token: str, session: SessionDep, settings: SettingsDep) -> InvitationPreview:
    """What an invitation link offers (public; 404 for unknown, used, expired or revoked links)."""
    inv, org, inviter = invitations.preview(session, token, pepper=settings.key_pepper.get_secret_value())
    return InvitationPreview(
        org_id=org.id,
        org_name=org.name,
        org_slug=org.slug,
        email=inv.email,
        role=Role(inv.role),
        inviter_name=invitations.inviter_name(inviter),
        expires_at=inv.expires_at,
    )


@router.post("/invitations/{token}/accept", response_model=InvitationAccepted)
def accept_invitation(
    token: str, request: Request, user: CurrentUser, session: SessionDep, settings: SettingsDep
) -> InvitationAccepted:
    """Join the org as the signed-in user, whose email must be the invited one."""
    membership, org = invitations.accept(
        session,
        user,
        token,
        pepper=settings.key_pepper.get_secret_value(),
        ip=request.client.host if request.client else "",
    )
    session.commit()
    role = Role(membership.role)
    return InvitationAccepted(org=org_public(org, role), member=member_public(membership, user))
