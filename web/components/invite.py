"""The invite form (email + role), used by onboarding and the Members page."""

# mypy: disable-error-code="attr-defined,operator,arg-type"
# (Reflex state attributes are Vars on the class, which mypy sees as their Python types.)

from __future__ import annotations

from typing import Any

import reflex as rx

from web.components.forms import text_input
from web.components.ui import copy_button, error_callout
from web.state.members import ROLES, InviteFormState


def invite_form(state: type[InviteFormState], on_submit: Any) -> rx.Component:
    return rx.form(
        rx.vstack(
            error_callout(state.invite_error),
            rx.hstack(
                rx.box(
                    text_input(
                        "Email",
                        "email",
                        error=state.invite_email_error,
                        type_="email",
                        placeholder="teammate@company.com",
                    ),
                    flex="1",
                ),
                rx.vstack(
                    rx.el.label(rx.text("Role", size="2", weight="medium"), html_for="f-role"),
                    rx.select(
                        ROLES,
                        value=state.invite_role,
                        on_change=state.set_invite_role,
                        size="3",
                        id="f-role",
                        aria_label="Role",
                    ),
                    spacing="1",
                ),
                rx.button(
                    rx.icon("send", size=16),
                    "Send invite",
                    type="submit",
                    size="3",
                    loading=state.invite_busy,
                    margin_top="1.5rem",
                    data_testid="invite-submit",
                ),
                spacing="3",
                align="start",
                width="100%",
            ),
            rx.cond(
                state.share_link != "",
                rx.callout(
                    rx.vstack(
                        rx.text("No mail was sent (no mail server is configured): pass this link on yourself."),
                        rx.hstack(
                            rx.code(
                                state.share_link, size="1", data_testid="invite-link", style={"wordBreak": "break-all"}
                            ),
                            copy_button(state.share_link, test_id="copy-invite-link"),
                            align="center",
                            spacing="2",
                        ),
                        spacing="2",
                    ),
                    icon="mail-warning",
                    color_scheme="amber",
                    width="100%",
                ),
            ),
            rx.text(
                "Members can view everything; admins manage environments, keys and members; owners also billing.",
                size="1",
                color_scheme="gray",
            ),
            spacing="2",
            width="100%",
        ),
        on_submit=on_submit,
        reset_on_submit=False,
        no_validate=True,
        width="100%",
    )
