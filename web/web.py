"""The dashboard app: pages, theme, and (all-in-one) the platform app mounted on the same port."""

from __future__ import annotations

from typing import Any

import reflex as rx

from cic.settings import get_settings
from web import mount
from web.pages import (
    admin,
    auth_callback,
    billing,
    environments,
    invite,
    keys,
    login,
    members,
    onboarding,
    quickstart,
    signup,
    usage,
)
from web.state.admin import AdminState
from web.state.auth import CallbackState, LoginState, SignupState
from web.state.billing import BillingState
from web.state.environments import EnvironmentsState
from web.state.invite import InviteState
from web.state.keys import KeysState
from web.state.members import MembersState, OnboardingState
from web.state.quickstart import QuickstartState
from web.state.session import SessionState
from web.state.usage import UsageState

TITLE = "CrossLogic"

STYLE: dict[Any, Any] = {
    "font_family": "Inter, ui-sans-serif, system-ui, -apple-system, 'Segoe UI', sans-serif",
}


def _build_app() -> rx.App:
    settings = get_settings()
    platform = None
    if settings.dashboard_mount_api:
        from api.app import create_app

        platform = create_app(settings)
    app = rx.App(
        style=STYLE,
        api_transformer=mount.transformer(platform) if platform is not None else None,
    )
    if platform is not None:
        app.register_lifespan_task(mount.platform_lifespan(platform))
    return app


def _index() -> rx.Component:
    return rx.center(rx.spinner(size="3"), min_height="100vh")


app = _build_app()
app.add_page(_index, route="/", title=TITLE, on_load=SessionState.go_home)
app.add_page(login.page, route="/login", title=f"Log in · {TITLE}", on_load=LoginState.load)
app.add_page(signup.page, route="/signup", title=f"Sign up · {TITLE}", on_load=SignupState.load)
app.add_page(auth_callback.page, route="/auth/callback", title=f"Signing in · {TITLE}", on_load=CallbackState.load)
app.add_page(onboarding.page, route="/onboarding", title=f"Welcome · {TITLE}", on_load=OnboardingState.load)
app.add_page(invite.page, route="/invite/[invite]", title=f"Invitation · {TITLE}", on_load=InviteState.load)
app.add_page(admin.page, route="/admin", title=f"Operator · {TITLE}", on_load=AdminState.load)
for module, slug, label, state in (
    (environments, "environments", "Environments", EnvironmentsState),
    (keys, "keys", "API keys", KeysState),
    (quickstart, "quickstart", "Quick start", QuickstartState),
    (usage, "usage", "Usage", UsageState),
    (billing, "billing", "Billing", BillingState),
    (members, "members", "Members", MembersState),
):
    app.add_page(module.page, route=f"/orgs/[org]/{slug}", title=f"{label} · {TITLE}", on_load=state.load)
