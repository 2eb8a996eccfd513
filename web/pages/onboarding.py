"""``/onboarding``: the first organization in one step, then invite the team (optional)."""

# mypy: disable-error-code="attr-defined,operator,arg-type"
# (Reflex state attributes are Vars on the class, which mypy sees as their Python types.)

from __future__ import annotations

import reflex as rx

from web.components.forms import submit_button, text_input
from web.components.invite import invite_form
from web.components.layout import plain_page
from web.components.ui import card, error_callout
from web.state.members import OnboardingState


def step_badge(n: str, label: str, active: rx.Var[bool]) -> rx.Component:
    return rx.hstack(
        rx.center(
            rx.text(n, size="1", weight="bold"),
            width="22px",
            height="22px",
            border_radius="50%",
            background=rx.cond(active, rx.color("accent", 9), rx.color("gray", 7)),
            color="white",
        ),
        rx.text(label, size="2", weight="medium", color=rx.cond(active, rx.color("gray", 12), rx.color("gray", 10))),
        spacing="2",
        align="center",
    )


def org_step() -> rx.Component:
    return card(
        rx.heading("Create your organization", size="5"),
        rx.text(
            "Everything lives in an organization: environments, API keys, usage and billing. "
            "You can invite your team next.",
            color_scheme="gray",
            size="2",
        ),
        error_callout(OnboardingState.org_error),
        rx.form(
            rx.vstack(
                text_input(
                    "Organization name",
                    "name",
                    error=OnboardingState.org_name_error,
                    placeholder="Acme Inc.",
                    auto_focus=True,
                    hint="Your company or team. It also gives your endpoints their address.",
                ),
                submit_button("Create organization", OnboardingState.org_busy, data_testid="create-org"),
                spacing="4",
                align="start",
                width="100%",
            ),
            on_submit=OnboardingState.create_org,
            reset_on_submit=False,
            no_validate=True,
            width="100%",
        ),
    )


def invite_step() -> rx.Component:
    return card(
        rx.hstack(
            rx.icon("circle-check", color=rx.color("green", 9)),
            rx.heading(OnboardingState.created_name + " is ready", size="5"),
            spacing="2",
            align="center",
        ),
        rx.text(
            "Invite teammates by email. They get a link to join with the role you choose.",
            size="2",
            color_scheme="gray",
        ),
        invite_form(OnboardingState, OnboardingState.invite),
        rx.cond(
            OnboardingState.sent.length() > 0,
            rx.vstack(
                rx.foreach(
                    OnboardingState.sent,
                    lambda i: rx.hstack(
                        rx.icon("mail-check", size=16, color=rx.color("green", 9)),
                        rx.text(i["email"], size="2"),
                        rx.badge(i["role"], variant="soft"),
                        spacing="2",
                        align="center",
                    ),
                ),
                spacing="2",
            ),
        ),
        rx.hstack(
            rx.spacer(),
            rx.button(
                "Continue to the dashboard",
                rx.icon("arrow-right", size=16),
                on_click=OnboardingState.finish,
                size="3",
                data_testid="onboarding-done",
            ),
            width="100%",
        ),
    )


def page() -> rx.Component:
    return plain_page(
        rx.vstack(
            rx.vstack(
                rx.heading("Welcome to CrossLogic", size="8"),
                rx.text("Two quick steps and you are ready to call models.", color_scheme="gray"),
                spacing="2",
            ),
            rx.hstack(
                step_badge("1", "Organization", OnboardingState.step == "org"),
                rx.separator(size="2"),
                step_badge("2", "Team", OnboardingState.step == "invite"),
                spacing="3",
                align="center",
            ),
            rx.cond(OnboardingState.step == "org", org_step(), invite_step()),
            spacing="5",
            max_width="40rem",
            margin_x="auto",
            width="100%",
        )
    )
