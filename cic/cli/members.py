"""``cic members invite | list``: invite by email with a role (the operator acts for the org), and see
who is in an org and who is invited."""

from __future__ import annotations

from typing import Annotated

import typer

from cic.cli.common import OPERATOR
from cic.cli.common import db as _db
from cic.cli.common import emit as _emit
from cic.models import Role
from cic.models.invitations import InvitationCreated
from cic.services import invitations, orgs
from cic.views import member_public

members_app = typer.Typer(help="Members of an organization and invitations.", no_args_is_help=True)


@members_app.command("invite")
def members_invite(
    org: Annotated[str, typer.Option(help="org slug or id")],
    email: Annotated[str, typer.Option(help="address to invite")],
    role: Annotated[Role, typer.Option(help="role on joining")] = Role.member,
) -> None:
    """Invite an email address; the link is mailed (CIC_SMTP_*) once the invitation is saved. Prints
    the invitation as JSON (``accept_url`` only when the mail did not go out)."""
    with _db() as (session, settings):
        inv, o, token = invitations.create_invitation(
            session,
            OPERATOR,
            org,
            email=email,
            role=role,
            pepper=settings.key_pepper.get_secret_value(),
            ttl_days=settings.invitation_ttl_days,
        )
    # Committed: now the mail (a failure leaves the invitation in place and says so).
    status = invitations.deliver(settings, inv, o, invitations.OPERATOR_NAME, token)
    out = InvitationCreated(
        **invitations.invitation_public(inv, None).model_dump(),
        email_status=status,
        accept_url=invitations.accept_url(settings, token) if status != "sent" else None,
    )
    _emit(out.model_dump(mode="json"))


@members_app.command("list")
def members_list(org: Annotated[str, typer.Option(help="org slug or id")]) -> None:
    """Members (with roles) and pending invitations, as JSON."""
    with _db() as (session, _):
        members = [member_public(m, u).model_dump(mode="json") for m, u in orgs.list_members(session, OPERATOR, org)]
        pending = [
            invitations.invitation_public(i, u).model_dump(mode="json")
            for i, u in invitations.list_pending(session, OPERATOR, org)
        ]
    _emit({"members": members, "invitations": pending})
