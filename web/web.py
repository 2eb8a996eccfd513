"""The dashboard app: pages, theme, and (all-in-one) the platform app mounted on the same port."""

from __future__ import annotations

import reflex as rx

from cic.settings import get_settings
from web import mount
from web.pages import auth_callback, login, signup
from web.state.auth import CallbackState, LoginState, SignupState
from web.state.session import SessionState

TITLE = "CrossLogic"

STYLE = {
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
