"""The customer's whole journey in a real browser: sign up → org → environment → key → a call with the
openai SDK → the usage page shows it → revoke → the next call fails with 401."""

from __future__ import annotations

import secrets
from pathlib import Path

import openai
import pytest
from playwright.sync_api import expect
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from cic.billing import rollup
from cic.models import Org, UsageRecord
from tests.e2e.conftest import Platform, Shots
from tests.e2e.flows import create_key, create_org, fill_env, open_env_dialog, sign_up
from tests.gateway.conftest import add_node
from tests.servers import Sims, wait_until

US_EAST = "US East (N. Virginia) (us-east)"


def metered(engine: Engine, slug: str) -> int | None:
    """The org's usage records once its successful call is among them (a call refused before the node
    was routable would be metered too, and shown: the page must show every one)."""
    with Session(engine) as s:
        org = s.exec(select(Org).where(Org.slug == slug)).one()
        rows = list(s.exec(select(UsageRecord).where(UsageRecord.org_id == org.id)))
    return len(rows) if any(r.status == "ok" for r in rows) else None


def test_journey(platform: Platform, new_page, shots: Shots, e2e_engine: Engine, e2e_sims: Sims) -> None:
    base = platform.url
    # A node serving the model, in place long before the first call (the gateways refresh their view of
    # the fleet every 0.2 s here).
    with Session(e2e_engine) as s:
        add_node(s, e2e_sims.start(model="llama-3-8b"), model="llama-3-8b", region="us-east")
    page = new_page()

    # Sign up, with the form's in-place validation first.
    page.goto(f"{base}/signup")
    shots(page, "signup")
    page.get_by_label("Work email").fill("not-an-email")
    page.get_by_label("Password").fill("short")
    page.get_by_test_id("signup-submit").click()
    expect(page.get_by_text("Enter a valid email address, like you@company.com.")).to_be_visible()
    expect(page.get_by_text("Use at least 10 characters.")).to_be_visible()
    page.get_by_label("Work email").fill("owner@example.com")
    page.get_by_label("Password").fill("aaaaaaaaaaaa")  # long enough here, too weak for the API: its message
    page.get_by_test_id("signup-submit").click()
    expect(page.get_by_text("Password is too weak", exact=False)).to_be_visible()
    shots(page, "signup-errors")
    email = f"owner-{secrets.token_hex(3)}@example.com"
    sign_up(page, base, email, shots=shots)

    slug = create_org(page, "Acme Robotics", shots=shots)
    expect(page.get_by_text("No environments yet")).to_be_visible()
    shots(page, "environments-empty")

    # An environment in us-east with Llama 3 8B.
    open_env_dialog(page)
    fill_env(page, "prod", US_EAST, ["Llama 3 8B Instruct"])
    expect(page.get_by_text("Prompts and completions", exact=False)).to_be_visible()  # residency note
    shots(page, "environment-dialog", full_page=False)
    page.get_by_test_id("env-submit").click()
    expect(page.get_by_test_id("env-prod")).to_be_visible()
    expect(page.get_by_test_id("base-url-prod")).to_have_text(
        f"{base}/{slug}/prod/v1".replace("localhost", "localhost")
    )
    # A second environment with the same name: the API's 409, in place.
    open_env_dialog(page)
    fill_env(page, "prod", US_EAST, ["Llama 3 8B Instruct"])
    page.get_by_test_id("env-submit").click()
    expect(page.get_by_role("dialog").get_by_text("already", exact=False)).to_be_visible()
    shots(page, "environment-duplicate", full_page=False)
    page.keyboard.press("Escape")
    shots(page, "environments")

    # A key, read from the page.
    page.get_by_test_id("nav-keys").click()
    page.wait_for_url("**/keys")
    expect(page.get_by_text("No API keys yet")).to_be_visible()
    shots(page, "keys-empty")
    key = create_key(page, "backend", shots=shots)
    assert key not in page.content(), "the plaintext key stays on the page after its dialog closed"
    storage = page.evaluate("() => JSON.stringify({...localStorage}) + JSON.stringify({...sessionStorage})")
    assert key not in storage and key not in str(page.context.cookies())
    expect(page.get_by_test_id("key-row-backend")).to_be_visible()
    shots(page, "keys")

    # The call, through the official SDK.
    client = openai.OpenAI(base_url=f"{base}/{slug}/prod/v1", api_key=key, max_retries=0, timeout=30)

    def call() -> openai.types.chat.ChatCompletion | None:
        try:
            return client.chat.completions.create(
                model="llama-3-8b", messages=[{"role": "user", "content": "Hello!"}], max_tokens=8
            )
        except openai.APIStatusError as exc:
            if exc.status_code == 503:  # the node registry has not picked the node up yet
                return None
            raise

    reply = wait_until(call, timeout=20, what="a completion through the gateway")
    assert reply.usage is not None and reply.usage.completion_tokens > 0

    page.get_by_test_id("nav-quickstart").click()
    page.wait_for_url("**/quickstart")
    expect(page.get_by_test_id("qs-base-url")).to_have_text(f"{base}/{slug}/prod/v1")
    expect(page.get_by_test_id("qs-python")).to_contain_text('model="llama-3-8b"')
    shots(page, "quickstart")

    # The usage page draws from the roll-ups: fold the record in, then look.
    requests = wait_until(lambda: metered(e2e_engine, slug), timeout=15, what="the call's usage record")
    rollup.run(e2e_engine)
    page.get_by_test_id("nav-usage").click()
    page.wait_for_url("**/usage")
    expect(page.get_by_test_id("usage-requests")).to_have_text(str(requests))
    expect(page.get_by_test_id("usage-table")).to_contain_text("llama-3-8b")
    expect(page.get_by_test_id("usage-table")).to_contain_text("prod")
    page.wait_for_timeout(300)  # charts lay out
    shots(page, "usage")
    with page.expect_download() as download:
        page.get_by_test_id("export-csv").click()
    assert download.value.suggested_filename.endswith(".csv")
    csv_text = Path(download.value.path()).read_text()
    assert csv_text.splitlines()[0].startswith("day,model,environment,requests")
    assert f",llama-3-8b,prod,{requests}," in csv_text

    page.get_by_test_id("nav-billing").click()
    page.wait_for_url("**/billing")
    # Billing draws from the ledger: its summary, or (on a server without billing) the empty state.
    expect(page.get_by_text("Spend this month").or_(page.get_by_text("Billing is not available yet"))).to_be_visible()
    page.wait_for_timeout(300)
    shots(page, "billing")
    page.get_by_test_id("nav-members").click()
    page.wait_for_url("**/members")
    expect(page.get_by_text(email)).to_be_visible()
    shots(page, "members")

    # Revoke (with confirmation): the next call is refused.
    page.get_by_test_id("nav-keys").click()
    page.wait_for_url("**/keys")
    page.get_by_test_id("revoke-backend").click()
    expect(page.get_by_role("alertdialog")).to_contain_text("Revoke this key?")
    shots(page, "revoke-confirm", full_page=False)
    page.get_by_test_id("revoke-yes").click()
    expect(page.get_by_test_id("key-row-backend")).to_contain_text("revoked")
    with pytest.raises(openai.AuthenticationError) as refused:
        client.chat.completions.create(model="llama-3-8b", messages=[{"role": "user", "content": "again"}])
    assert refused.value.status_code == 401
    shots(page, "keys-revoked")
