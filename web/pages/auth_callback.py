"""``/auth/callback``: where the API sends the browser after an OAuth sign-in (token in the fragment)."""

# mypy: disable-error-code="attr-defined,operator,arg-type"
# (Reflex state attributes are Vars on the class, which mypy sees as their Python types.)

from __future__ import annotations

import reflex as rx

from web.components.layout import auth_page
from web.components.ui import error_callout
from web.state.auth import CallbackState


def page() -> rx.Component:
    return auth_page(
        rx.cond(
            CallbackState.callback_error != "",
            rx.vstack(
                rx.heading("Sign-in failed", size="5"),
                error_callout(CallbackState.callback_error),
                rx.link(rx.button("Back to log in", width="100%"), href="/login", width="100%"),
                spacing="4",
                width="100%",
            ),
            rx.hstack(rx.spinner(), rx.text("Signing you in…"), spacing="3", align="center"),
        )
    )
