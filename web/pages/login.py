"""``/login``: email + password, or an OAuth provider; comes back to ``?next=`` afterwards."""

# mypy: disable-error-code="attr-defined,operator,arg-type"
# (Reflex state attributes are Vars on the class, which mypy sees as their Python types.)

from __future__ import annotations

import reflex as rx

from web.components.forms import submit_button, text_input
from web.components.layout import auth_page
from web.components.ui import error_callout
from web.state.auth import AuthFormState, LoginState


def oauth_buttons(state: type[AuthFormState]) -> rx.Component:
    return rx.cond(
        state.oauth_links.length() > 0,
        rx.vstack(
            rx.foreach(
                state.oauth_links,
                # A document navigation: the browser leaves the app for the API and the provider (a
                # client-side route would try to render the API's path as a page).
                lambda p: rx.el.a(
                    rx.button(
                        rx.icon("log-in", size=16),
                        "Continue with " + p["name"],
                        variant="outline",
                        color_scheme="gray",
                        size="3",
                        width="100%",
                        type="button",
                    ),
                    href=p["href"],
                    reload_document=True,
                    style={"width": "100%"},
                    data_testid="oauth-" + p["id"],
                ),
            ),
            rx.hstack(
                rx.separator(size="4"),
                rx.text("or", size="1", color_scheme="gray"),
                rx.separator(size="4"),
                align="center",
                width="100%",
            ),
            spacing="3",
            width="100%",
        ),
    )


def page() -> rx.Component:
    return auth_page(
        rx.vstack(
            rx.heading("Log in", size="6"),
            rx.text("Welcome back. Sign in to manage your models, keys and usage.", color_scheme="gray", size="2"),
            spacing="1",
        ),
        error_callout(LoginState.form_error),
        oauth_buttons(LoginState),
        rx.form(
            rx.vstack(
                text_input(
                    "Email",
                    "email",
                    error=LoginState.email_error,
                    type_="email",
                    placeholder="you@company.com",
                    auto_focus=True,
                    auto_complete="email",
                ),
                text_input(
                    "Password",
                    "password",
                    error=LoginState.password_error,
                    type_="password",
                    auto_complete="current-password",
                ),
                submit_button("Log in", LoginState.busy, width="100%", data_testid="login-submit"),
                spacing="4",
                width="100%",
            ),
            on_submit=LoginState.submit,
            reset_on_submit=False,
            width="100%",
            no_validate=True,
        ),
        rx.text(
            "New here? ",
            rx.link("Create an account", href=LoginState.signup_href, data_testid="to-signup"),
            size="2",
            color_scheme="gray",
        ),
    )
