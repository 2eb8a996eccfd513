"""Signing in and who sees what: OAuth log-in against the local OpenID provider, an expired session sent
to the log-in page and back, another tenant's pages answering "not found", the operator's page."""

from __future__ import annotations

import re
import secrets

from playwright.sync_api import expect
from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col

from cic.models import User
from cic.models.types import utcnow
from cic.models.users import UserSession
from cic.services import users
from tests.e2e.conftest import PASSWORD, Platform, Shots
from tests.e2e.flows import create_org, log_in, sign_up
from tests.fakes.oidc_provider import OidcUser
from tests.gateway.conftest import add_node
from tests.servers import Sims


def test_oauth_log_in(platform: Platform, new_page, shots: Shots) -> None:
    email = f"ann-{secrets.token_hex(3)}@example.com"
    platform.oidc.user = OidcUser(sub=f"g-{secrets.token_hex(4)}", email=email, email_verified=True, name="Ann")
    platform.oidc.faults.deny = False
    page = new_page()
    page.goto(f"{platform.url}/login")
    google = page.get_by_test_id("oauth-google")
    expect(google).to_be_visible()
    shots(page, "login")
    google.click()
    # provider -> API callback -> /auth/callback#token=… -> the new account's first step
    page.wait_for_url("**/onboarding")
    assert "#" not in page.url and "token" not in page.url, page.url
    expect(page.get_by_text(email)).to_be_visible()
    shots(page, "after-oauth")
    create_org(page, "Ann's Lab")

    # A refusal at the provider comes back as a readable message on the log-in page.
    platform.oidc.faults.deny = True
    try:
        other = new_page()
        other.goto(f"{platform.url}/login")
        other.get_by_test_id("oauth-google").click()
        other.wait_for_url(re.compile(r"/login/?\?error=oauth_denied"))
        expect(other.get_by_role("alert")).to_contain_text("cancelled at the provider")
        shots(other, "oauth-denied")
    finally:
        platform.oidc.faults.deny = False


def test_expired_session_goes_to_log_in_and_back(
    platform: Platform, new_page, shots: Shots, e2e_engine: Engine
) -> None:
    page = new_page()
    email = f"eve-{secrets.token_hex(3)}@example.com"
    sign_up(page, platform.url, email)
    slug = create_org(page, "Eve Corp")
    expect(page.get_by_text("No environments yet")).to_be_visible()
    # The session ends behind the dashboard's back (expiry, revocation, a password change elsewhere).
    with Session(e2e_engine) as s:
        user = users.get_by_email(s, email)
        assert user is not None
        s.execute(update(UserSession).where(col(UserSession.user_id) == user.id).values(revoked_at=utcnow()))
        s.commit()
    page.get_by_test_id("nav-keys").click()
    page.wait_for_url(re.compile(r"/login/?\?next="))
    assert f"next=%2Forgs%2F{slug}%2Fkeys" in page.url, page.url
    shots(page, "session-expired")
    log_in(page, platform.url, email, path="")
    page.wait_for_url(f"**/orgs/{slug}/keys")
    expect(page.get_by_role("heading", name="API keys")).to_be_visible()


def test_another_tenants_pages_are_not_found(platform: Platform, new_page, shots: Shots) -> None:
    first = new_page()
    sign_up(first, platform.url, f"first-{secrets.token_hex(3)}@example.com")
    slug = create_org(first, "First Tenant")

    second = new_page()  # another browser context: another person
    sign_up(second, platform.url, f"second-{secrets.token_hex(3)}@example.com")
    create_org(second, "Second Tenant")
    for page_name in ("environments", "keys", "usage", "billing", "members"):
        second.goto(f"{platform.url}/orgs/{slug}/{page_name}")
        expect(second.get_by_text("Not found", exact=True)).to_be_visible()
        expect(second.get_by_text("First Tenant")).to_have_count(0)
    shots(second, "foreign-org")
    # Signed out, the same address asks for a log-in first.
    third = new_page()
    third.goto(f"{platform.url}/orgs/{slug}/keys")
    third.wait_for_url(re.compile(r"/login/?\?next="))


def test_operator_page(platform: Platform, new_page, shots: Shots, e2e_engine: Engine, e2e_sims: Sims) -> None:
    email = f"ops-{secrets.token_hex(3)}@example.com"
    with Session(e2e_engine) as s:
        users.create_user(s, email=email, password=PASSWORD, name="Ops", is_platform_admin=True)
        node_id = add_node(s, e2e_sims.start(model="mistral-7b"), model="mistral-7b", region="eu-west")
        s.commit()
    page = new_page()
    log_in(page, platform.url, email)
    page.wait_for_url("**/onboarding")
    page.goto(f"{platform.url}/admin")
    expect(page.get_by_test_id("admin-nodes")).to_contain_text("mistral-7b")
    shots(page, "admin-nodes")
    page.get_by_test_id(f"drain-{node_id}").click()
    expect(page.get_by_test_id("admin-nodes")).to_contain_text("draining")
    page.get_by_role("tab", name="Organizations").click()
    shots(page, "admin-orgs")
    page.get_by_role("tab", name="Model catalog").click()
    expect(page.get_by_test_id("admin-catalog")).to_contain_text("llama-3-8b")
    shots(page, "admin-catalog")
    with Session(e2e_engine) as s:
        assert s.get(User, users.get_by_email(s, email).id) is not None  # type: ignore[union-attr]

    # Someone who is not an operator sees that the page is not for them.
    other = new_page()
    sign_up(other, platform.url, f"cust-{secrets.token_hex(3)}@example.com")
    other.goto(f"{platform.url}/admin")
    expect(other.get_by_text("Operators only")).to_be_visible()


def test_invitation_by_link(platform: Platform, new_page, shots: Shots) -> None:
    owner = new_page()
    sign_up(owner, platform.url, f"lead-{secrets.token_hex(3)}@example.com")
    slug = create_org(owner, "Invite Co")
    owner.get_by_test_id("nav-members").click()
    owner.wait_for_url("**/members")
    invitee = f"new-{secrets.token_hex(3)}@example.com"
    owner.get_by_label("Email").fill("not an email")
    owner.get_by_test_id("invite-submit").click()
    expect(owner.get_by_text("Enter a valid email address", exact=False)).to_be_visible()
    owner.get_by_label("Email").fill(invitee)
    owner.get_by_test_id("invite-submit").click()
    # No mail server here: the page hands over the link instead.
    link = owner.get_by_test_id("invite-link").inner_text().strip()
    assert "/invite/" in link, link
    expect(owner.get_by_text(invitee, exact=True)).to_be_visible()
    shots(owner, "members-invited")

    guest = new_page()
    guest.goto(link)
    expect(guest.get_by_role("heading", name="Join Invite Co")).to_be_visible()
    shots(guest, "invitation")
    guest.get_by_role("link", name="Create an account").click()
    guest.get_by_label("Name").fill("Newcomer")
    guest.get_by_label("Work email").fill(invitee)
    guest.get_by_label("Password").fill(PASSWORD)
    guest.get_by_test_id("signup-submit").click()
    guest.wait_for_url("**/invite/*")
    guest.get_by_test_id("accept-invite").click()
    guest.wait_for_url(f"**/orgs/{slug}/environments")
    expect(guest.get_by_test_id("org-switcher")).to_contain_text("Invite Co")
