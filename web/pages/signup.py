"""``/signup``: a new account with email and password (or an OAuth provider), then onboarding."""

# mypy: disable-error-code="attr-defined,operator,arg-type"
# (Reflex state attributes are Vars on the class, which mypy sees as their Python types.)

from __future__ import annotations

import reflex as rx

from web.components.forms import submit_button, text_input
from web.components.layout import auth_page
from web.components.ui import error_callout
from web.pages.login import oauth_buttons
from web.state.auth import MIN_PASSWORD, SignupState


def page() -> rx.Component:
    return auth_page(
        rx.vstack(
            rx.heading("Create your account", size="6"),
            rx.text("OpenAI-compatible inference on your own fleet, in minutes.", color_scheme="gray", size="2"),
            spacing="1",
        ),
        error_callout(SignupState.form_error),
        oauth_buttons(SignupState),
        rx.form(
            rx.vstack(
                text_input(
                    "Name",
                    "name",
                    error=SignupState.name_error,
                    placeholder="Ada Lovelace",
                    auto_focus=True,
                    auto_complete="name",
                ),
                text_input(
                    "Work email",
                    "email",
                    error=SignupState.email_error,
                    type_="email",
                    placeholder="you@company.com",
                    auto_complete="email",
                ),
                text_input(
                    "Password",
                    "password",
                    error=SignupState.password_error,
                    type_="password",
                    auto_complete="new-password",
                    hint=f"At least {MIN_PASSWORD} characters, mixing letters, digits and symbols.",
                ),
                submit_button("Create account", SignupState.busy, width="100%", data_testid="signup-submit"),
                spacing="4",
                width="100%",
            ),
            on_submit=SignupState.submit,
            reset_on_submit=False,
            width="100%",
            no_validate=True,
        ),
        rx.text(
            "Already have an account? ",
            rx.link("Log in", href=SignupState.login_href),
            size="2",
            color_scheme="gray",
        ),
    )
