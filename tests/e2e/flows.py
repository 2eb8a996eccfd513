"""What a customer does in the dashboard, as steps the tests compose."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from tests.e2e.conftest import PASSWORD, Shots


def sign_up(page: Page, base: str, email: str, *, name: str = "Ada Lovelace", shots: Shots | None = None) -> None:
    page.goto(f"{base}/signup")
    page.get_by_label("Name").fill(name)
    page.get_by_label("Work email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_label("Password").press("Enter")  # the keyboard submits
    page.wait_for_url("**/onboarding")
    expect(page.get_by_role("heading", name="Create your organization")).to_be_visible()
    if shots:
        shots(page, "onboarding")


def log_in(page: Page, base: str, email: str, password: str = PASSWORD, *, path: str = "/login") -> None:
    if path:
        page.goto(base + path)
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_test_id("login-submit").click()


def create_org(page: Page, name: str, *, shots: Shots | None = None) -> str:
    """Onboarding's one step; skips the invitations; returns the org's slug from the address bar."""
    page.get_by_label("Organization name").fill(name)
    page.get_by_test_id("create-org").click()
    expect(page.get_by_text(f"{name} is ready")).to_be_visible()
    if shots:
        shots(page, "onboarding-invite")
    page.get_by_test_id("onboarding-done").click()
    page.wait_for_url("**/orgs/*/environments")
    match = re.search(r"/orgs/([^/]+)/environments", page.url)
    assert match, page.url
    return match.group(1)


def open_env_dialog(page: Page) -> None:
    page.get_by_test_id("new-env").click()
    expect(page.get_by_role("dialog")).to_be_visible()


def fill_env(page: Page, name: str, region: str, models: list[str]) -> None:
    """``region``: its label as listed ("US East (N. Virginia) (us-east)"); ``models``: display names."""
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Name", exact=True).fill(name)
    dialog.get_by_test_id("region-select").click()
    page.get_by_role("option", name=region).click()
    # Start from no model checked, then check the wanted ones.
    for box in dialog.get_by_role("checkbox").all():
        if box.get_attribute("aria-checked") == "true" or box.get_attribute("data-state") == "checked":
            box.click()
    for model in models:
        dialog.get_by_text(model, exact=True).click()


def create_key(page: Page, name: str, *, shots: Shots | None = None) -> str:
    """Create a key on the API keys page; read it from the dialog, then close it."""
    page.get_by_test_id("new-key-button").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Name").fill(name)
    dialog.get_by_label("Name").press("Enter")
    key = page.get_by_test_id("new-key").inner_text().strip()
    assert key.startswith("clsk_"), key
    if shots:
        shots(page, "key-created", full_page=False)
    page.get_by_test_id("key-done").click()
    expect(page.get_by_test_id("new-key")).to_have_count(0)
    return key
