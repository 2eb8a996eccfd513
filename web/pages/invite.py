"""``/invite/{token}``: join an organization."""

# mypy: disable-error-code="attr-defined,operator,arg-type"
# (Reflex state attributes are Vars on the class, which mypy sees as their Python types.)

from __future__ import annotations

import reflex as rx

from web.components.layout import auth_page
from web.components.ui import error_callout
from web.state.invite import InviteState


def details() -> rx.Component:
    s = InviteState
    return rx.vstack(
        rx.heading("Join " + s.invitation["org"], size="6"),
        rx.text(
            "You are invited to join as ",
            rx.badge(s.invitation["role"], variant="soft"),
            rx.cond(s.invitation["inviter"] != "", " by " + s.invitation["inviter"], ""),
            ".",
            size="2",
        ),
        rx.text("Invitation for ", rx.text.strong(s.invitation["email"]), size="2", color_scheme="gray"),
        rx.text("The link expires " + s.invitation["expires"] + ".", size="1", color_scheme="gray"),
        rx.cond(
            s.signed_in,
            rx.cond(
                s.email_matches,
                rx.button(
                    "Accept invitation",
                    on_click=s.accept,
                    loading=s.busy,
                    size="3",
                    width="100%",
                    data_testid="accept-invite",
                ),
                rx.vstack(
                    rx.callout(
                        "You are signed in as " + s.user_email + ". Log in as " + s.invitation["email"] + " to accept.",
                        icon="info",
                        width="100%",
                    ),
                    rx.button("Log out", on_click=InviteState.logout, variant="soft", width="100%"),
                    width="100%",
                ),
            ),
            rx.vstack(
                rx.link(rx.button("Log in to accept", size="3", width="100%"), href=s.login_href, width="100%"),
                rx.link(
                    rx.button("Create an account", variant="soft", size="3", width="100%"),
                    href=s.signup_href,
                    width="100%",
                ),
                width="100%",
                spacing="2",
            ),
        ),
        spacing="3",
        width="100%",
    )


def page() -> rx.Component:
    s = InviteState
    return auth_page(
        error_callout(s.error),
        rx.cond(
            s.loading,
            rx.center(rx.spinner(size="3"), padding="2rem"),
            rx.cond(
                s.invitation.length() > 0,
                details(),
                rx.link(rx.button("Go to the dashboard", width="100%"), href="/", width="100%"),
            ),
        ),
    )
