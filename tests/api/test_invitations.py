"""Invitations by email: the real app, a real SMTP server on loopback, the link's token from the mail."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from api.app import create_app
from cic.models import AuditEvent, Invitation
from cic.models.types import utcnow
from cic.settings import Settings
from tests.conftest import CIC
from tests.factories import api_org, email, signup
from tests.fakes.smtp import SmtpServer

DASHBOARD = "http://dashboard.test"
LINK = re.compile(re.escape(DASHBOARD) + r"/invite/(clsi_[A-Za-z0-9_\-]+)")


@pytest.fixture
def mail_settings(settings: Settings, smtp_server: SmtpServer) -> Settings:
    return settings.model_copy(update={**smtp_server.settings(), "dashboard_url": DASHBOARD})


@pytest.fixture
def api(mail_settings: Settings, engine: Engine) -> Iterator[TestClient]:
    with TestClient(create_app(mail_settings)) as c:
        yield c


def invite(api: TestClient, headers: dict[str, str], org: str, address: str, role: str = "member") -> Any:
    return api.post(f"/api/v1/orgs/{org}/invitations", json={"email": address, "role": role}, headers=headers)


def token_from(mail: Any) -> str:
    m = LINK.search(mail.text)
    assert m, mail.text
    assert m.group(0) in (mail.html or "")
    return m.group(1)


def member(api: TestClient, smtp: SmtpServer, owner: dict[str, str], org: str, role: str) -> dict[str, str]:
    """A signed-up account that joined ``org`` with ``role`` through an invitation."""
    address = email(role)
    sent = len(smtp.messages)
    assert invite(api, owner, org, address, role).status_code == 201
    token = token_from(smtp.wait_for(sent + 1)[-1])
    headers = signup(api, address)
    assert api.post(f"/api/v1/invitations/{token}/accept", headers=headers).status_code == 200
    return headers


@pytest.fixture
def acme(api: TestClient) -> tuple[dict[str, str], str]:
    """An owner's session and their org's slug."""
    owner = signup(api, email("owner"))
    return owner, api_org(api, owner, "Acme Labs")["slug"]


def test_invite_mail_link_accept(
    api: TestClient, smtp_server: SmtpServer, acme: tuple[dict[str, str], str], session: Session
) -> None:
    owner, org = acme
    invitee = email("bob")
    r = invite(api, owner, org, invitee.upper(), "admin")
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["email"] == invitee and body["role"] == "admin" and body["email_status"] == "sent"
    owner_id = api.get("/api/v1/auth/me", headers=owner).json()["user"]["id"]
    assert body["accept_url"] is None and body["invited_by"] == owner_id and body["inviter_name"]
    expires = body["expires_at"]

    [mail] = smtp_server.wait_for(1)
    assert mail.rcpt_tos == [invitee] and "Acme Labs" in mail.subject
    token = token_from(mail)
    # The token is in the mail only: never in an API answer, and only its HMAC in the database.
    assert token not in r.text
    listed = api.get(f"/api/v1/orgs/{org}/invitations", headers=owner)
    assert [i["id"] for i in listed.json()] == [body["id"]] and token not in listed.text
    row = session.get(Invitation, body["id"])
    assert row is not None and token not in row.model_dump_json() and len(row.token_hash) == 64
    assert (row.expires_at - row.created_at) == timedelta(days=7)

    preview = api.get(f"/api/v1/invitations/{token}")
    assert preview.status_code == 200
    assert {k: preview.json()[k] for k in ("org_name", "org_slug", "email", "role")} == {
        "org_name": "Acme Labs",
        "org_slug": org,
        "email": invitee,
        "role": "admin",
    }
    assert preview.json()["inviter_name"] and preview.json()["expires_at"] == expires

    bob = signup(api, invitee.capitalize())  # the address matches case-insensitively
    r = api.post(f"/api/v1/invitations/{token}/accept", headers=bob)
    assert r.status_code == 200, r.text
    assert r.json()["org"]["slug"] == org and r.json()["org"]["role"] == "admin"
    assert r.json()["member"]["role"] == "admin"
    members = {m["email"]: m["role"] for m in api.get(f"/api/v1/orgs/{org}/members", headers=owner).json()}
    assert members[invitee] == "admin"
    # Bob may now act as an admin of the org.
    assert api.get(f"/api/v1/orgs/{org}/invitations", headers=bob).status_code == 200

    # Spent: the link shows nothing, a second accept is 410, the list is empty.
    assert api.get(f"/api/v1/invitations/{token}").status_code == 404
    again = api.post(f"/api/v1/invitations/{token}/accept", headers=bob)
    assert again.status_code == 410 and again.json()["error"]["code"] == "invitation_used"
    assert api.get(f"/api/v1/orgs/{org}/invitations", headers=owner).json() == []
    actions = list(
        session.exec(select(AuditEvent.action).where(AuditEvent.target_id == body["id"]).order_by(col(AuditEvent.id)))
    )
    assert actions == ["invitation.created", "invitation.accepted"]


def test_someone_else_cannot_accept(api: TestClient, smtp_server: SmtpServer, acme: tuple[dict[str, str], str]) -> None:
    owner, org = acme
    invitee = email("carol")
    invite(api, owner, org, invitee)
    token = token_from(smtp_server.wait_for(1)[0])
    mallory = signup(api, email("mallory"))
    r = api.post(f"/api/v1/invitations/{token}/accept", headers=mallory)
    assert r.status_code == 403
    err = r.json()["error"]
    assert err["code"] == "invitation_email_mismatch" and invitee in err["message"]
    assert api.get(f"/api/v1/orgs/{org}", headers=mallory).status_code == 404
    # Still pending for the right person; signing in is required to accept at all.
    assert api.post(f"/api/v1/invitations/{token}/accept").status_code == 401
    carol = signup(api, invitee)
    assert api.post(f"/api/v1/invitations/{token}/accept", headers=carol).status_code == 200


def test_expired_invitation(
    api: TestClient, smtp_server: SmtpServer, acme: tuple[dict[str, str], str], session: Session
) -> None:
    owner, org = acme
    invitee = email("late")
    inv_id = invite(api, owner, org, invitee).json()["id"]
    token = token_from(smtp_server.wait_for(1)[0])
    row = session.get(Invitation, inv_id)
    assert row is not None
    row.expires_at = utcnow() - timedelta(seconds=1)
    session.add(row)
    session.commit()
    assert api.get(f"/api/v1/invitations/{token}").status_code == 404
    r = api.post(f"/api/v1/invitations/{token}/accept", headers=signup(api, invitee))
    assert r.status_code == 410 and r.json()["error"]["code"] == "invitation_expired"
    assert api.get(f"/api/v1/orgs/{org}/invitations", headers=owner).json() == []
    # An expired invitation does not block a new one.
    assert invite(api, owner, org, invitee).status_code == 201


def test_revoked_invitation(api: TestClient, smtp_server: SmtpServer, acme: tuple[dict[str, str], str]) -> None:
    owner, org = acme
    invitee = email("dave")
    inv_id = invite(api, owner, org, invitee).json()["id"]
    token = token_from(smtp_server.wait_for(1)[0])
    assert api.delete(f"/api/v1/orgs/{org}/invitations/{inv_id}", headers=owner).status_code == 204
    assert api.delete(f"/api/v1/orgs/{org}/invitations/{inv_id}", headers=owner).status_code == 204  # idempotent
    assert api.get(f"/api/v1/invitations/{token}").status_code == 404
    r = api.post(f"/api/v1/invitations/{token}/accept", headers=signup(api, invitee))
    assert r.status_code == 404 and r.json()["error"]["code"] == "invitation_not_found"
    assert api.get(f"/api/v1/orgs/{org}/invitations", headers=owner).json() == []
    assert api.delete(f"/api/v1/orgs/{org}/invitations/inv_nope", headers=owner).status_code == 404
    assert invite(api, owner, org, invitee).status_code == 201  # revoked: may invite again


def test_duplicates_are_refused(api: TestClient, smtp_server: SmtpServer, acme: tuple[dict[str, str], str]) -> None:
    owner, org = acme
    invitee = email("erin")
    assert invite(api, owner, org, invitee).status_code == 201
    r = invite(api, owner, org, invitee.upper(), "admin")
    assert r.status_code == 409 and r.json()["error"]["code"] == "invitation_pending"
    me = api.get("/api/v1/auth/me", headers=owner).json()["user"]["email"]
    r = invite(api, owner, org, me)
    assert r.status_code == 409 and r.json()["error"]["code"] == "already_member"
    r = invite(api, owner, org, "not-an-email")
    assert r.status_code == 422 and r.json()["error"]["param"] == "email"
    r = invite(api, owner, org, email(), "superuser")
    assert r.status_code == 422


def test_resend_replaces_the_link(api: TestClient, smtp_server: SmtpServer, acme: tuple[dict[str, str], str]) -> None:
    owner, org = acme
    invitee = email("fay")
    inv_id = invite(api, owner, org, invitee).json()["id"]
    old = token_from(smtp_server.wait_for(1)[0])
    r = api.post(f"/api/v1/orgs/{org}/invitations/{inv_id}/resend", headers=owner)
    assert r.status_code == 200 and r.json()["id"] == inv_id and r.json()["email_status"] == "sent"
    new = token_from(smtp_server.wait_for(2)[1])
    assert new != old
    assert api.get(f"/api/v1/invitations/{old}").status_code == 404
    assert api.post(f"/api/v1/invitations/{new}/accept", headers=signup(api, invitee)).status_code == 200
    r = api.post(f"/api/v1/orgs/{org}/invitations/{inv_id}/resend", headers=owner)
    assert r.status_code == 409 and r.json()["error"]["code"] == "invitation_closed"


def test_roles(api: TestClient, smtp_server: SmtpServer, acme: tuple[dict[str, str], str]) -> None:
    owner, org = acme
    admin = member(api, smtp_server, owner, org, "admin")
    plain = member(api, smtp_server, owner, org, "member")

    assert invite(api, admin, org, email(), "member").status_code == 201
    assert invite(api, admin, org, email(), "admin").status_code == 201
    r = invite(api, admin, org, email(), "owner")
    assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_role"
    owner_inv = invite(api, owner, org, email("co-owner"), "owner")
    assert owner_inv.status_code == 201
    r = api.delete(f"/api/v1/orgs/{org}/invitations/{owner_inv.json()['id']}", headers=admin)
    assert r.status_code == 403
    r = api.post(f"/api/v1/orgs/{org}/invitations/{owner_inv.json()['id']}/resend", headers=admin)
    assert r.status_code == 403

    for call in (
        lambda: invite(api, plain, org, email()),
        lambda: api.get(f"/api/v1/orgs/{org}/invitations", headers=plain),
        lambda: api.delete(f"/api/v1/orgs/{org}/invitations/{owner_inv.json()['id']}", headers=plain),
    ):
        r = call()
        assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_role"

    # The owner-invitation accepted makes an owner.
    token = LINK.findall(smtp_server.messages[-1].text)[-1]
    co = signup(api, owner_inv.json()["email"])
    assert api.post(f"/api/v1/invitations/{token}/accept", headers=co).json()["org"]["role"] == "owner"


def test_other_orgs_cannot_see_or_revoke(
    api: TestClient, smtp_server: SmtpServer, acme: tuple[dict[str, str], str]
) -> None:
    owner, org = acme
    inv_id = invite(api, owner, org, email()).json()["id"]
    rival = signup(api, email("rival"))
    rival_org = api_org(api, rival, "Rival")["slug"]
    assert api.get(f"/api/v1/orgs/{org}/invitations", headers=rival).status_code == 404
    assert api.delete(f"/api/v1/orgs/{org}/invitations/{inv_id}", headers=rival).status_code == 404
    assert api.delete(f"/api/v1/orgs/{rival_org}/invitations/{inv_id}", headers=rival).status_code == 404
    assert api.post(f"/api/v1/orgs/{rival_org}/invitations/{inv_id}/resend", headers=rival).status_code == 404
    assert [i["id"] for i in api.get(f"/api/v1/orgs/{org}/invitations", headers=owner).json()] == [inv_id]


def test_mail_failure_keeps_the_invitation(
    api: TestClient, smtp_server: SmtpServer, acme: tuple[dict[str, str], str]
) -> None:
    owner, org = acme
    smtp_server.refuse = "554 5.7.1 not today"
    invitee = email("gus")
    r = invite(api, owner, org, invitee)
    assert r.status_code == 201 and r.json()["email_status"] == "failed"
    url = r.json()["accept_url"]
    assert url.startswith(f"{DASHBOARD}/invite/clsi_")
    assert [i["email"] for i in api.get(f"/api/v1/orgs/{org}/invitations", headers=owner).json()] == [invitee]
    token = url.rsplit("/", 1)[1]
    assert api.post(f"/api/v1/invitations/{token}/accept", headers=signup(api, invitee)).status_code == 200


def test_without_a_mail_server_the_link_is_returned(client: TestClient) -> None:
    owner = signup(client)
    org = api_org(client, owner)["slug"]
    r = client.post(f"/api/v1/orgs/{org}/invitations", json={"email": email()}, headers=owner)
    assert r.status_code == 201 and r.json()["email_status"] == "logged"
    assert "/invite/clsi_" in r.json()["accept_url"]


def test_unknown_token(api: TestClient) -> None:
    for token in ("clsi_nope", "nope", "x" * 300):
        assert api.get(f"/api/v1/invitations/{token}").status_code == 404


# --- CLI ------------------------------------------------------------------------------------------


def cli(mail_settings: Settings, *args: str) -> Any:
    env = {
        **os.environ,
        "CIC_DATABASE_URL": mail_settings.database_url,
        "CIC_REDIS_URL": mail_settings.redis_url or "",
        "CIC_SMTP_HOST": mail_settings.smtp_host or "",
        "CIC_SMTP_PORT": str(mail_settings.smtp_port),
        "CIC_SMTP_SECURITY": "none",
        "CIC_DASHBOARD_URL": DASHBOARD,
    }
    p = subprocess.run([CIC, *args], capture_output=True, text=True, env=env, timeout=60, check=False)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_cli_invite_and_list(
    api: TestClient, mail_settings: Settings, smtp_server: SmtpServer, acme: tuple[dict[str, str], str]
) -> None:
    _, org = acme
    invitee = email("cli")
    out = cli(mail_settings, "members", "invite", "--org", org, "--email", invitee, "--role", "admin")
    assert out["email"] == invitee and out["role"] == "admin" and out["email_status"] == "sent"
    assert out["invited_by"] is None and out["accept_url"] is None
    token = token_from(smtp_server.wait_for(1)[0])
    listed = cli(mail_settings, "members", "list", "--org", org)
    assert [m["role"] for m in listed["members"]] == ["owner"]
    assert [i["email"] for i in listed["invitations"]] == [invitee]
    assert api.post(f"/api/v1/invitations/{token}/accept", headers=signup(api, invitee)).status_code == 200
    listed = cli(mail_settings, "members", "list", "--org", org)
    assert sorted(m["role"] for m in listed["members"]) == ["admin", "owner"] and listed["invitations"] == []
