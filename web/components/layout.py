"""The frame of every signed-in page: a sidebar (brand, org and environment switchers, navigation) and a
top bar (page title, the account menu); pages put their content in it."""

# mypy: disable-error-code="attr-defined,operator,arg-type"
# (Reflex state attributes are Vars on the class, which mypy sees as their Python types.)

from __future__ import annotations

import reflex as rx

from web.components.ui import empty_state
from web.state.session import SessionState

SIDEBAR_WIDTH = "15.5rem"

NAV = (
    ("environments", "Environments", "layers"),
    ("keys", "API keys", "key-round"),
    ("quickstart", "Quick start", "rocket"),
    ("usage", "Usage", "chart-column"),
    ("billing", "Billing", "credit-card"),
    ("members", "Members", "users"),
)


def brand() -> rx.Component:
    return rx.link(
        rx.hstack(
            rx.center(
                rx.icon("zap", size=16, color="white"),
                width="28px",
                height="28px",
                border_radius="8px",
                background=f"linear-gradient(135deg, {rx.color('indigo', 9)}, {rx.color('violet', 9)})",
            ),
            rx.text("CrossLogic", weight="bold", size="4"),
            spacing="2",
            align="center",
        ),
        href="/",
        underline="none",
        color=rx.color("gray", 12),
    )


def nav_item(slug: str, label: str, icon: str, active: str) -> rx.Component:
    selected = active == slug
    return rx.link(
        rx.hstack(rx.icon(icon, size=16), rx.text(label, size="2", weight="medium"), spacing="3", align="center"),
        href=f"/orgs/{SessionState.current_org}/{slug}",
        underline="none",
        padding_x="0.75rem",
        padding_y="0.5rem",
        border_radius="8px",
        width="100%",
        color=rx.color("gray", 12) if selected else rx.color("gray", 11),
        background=rx.color("accent", 4) if selected else "transparent",
        _hover={"background": rx.color("gray", 3)},
        aria_current="page" if selected else None,
        data_testid=f"nav-{slug}",
    )


def org_switcher() -> rx.Component:
    return rx.vstack(
        rx.text("Organization", size="1", color_scheme="gray", weight="medium"),
        rx.select.root(
            rx.select.trigger(
                width="100%",
                aria_label="Organization",
                placeholder="Choose an organization",
                data_testid="org-switcher",
            ),
            rx.select.content(
                rx.foreach(SessionState.orgs, lambda o: rx.select.item(o["name"], value=o["slug"])),
                rx.select.separator(),
                rx.select.group(rx.select.item("+ New organization", value="__new__")),
            ),
            value=rx.cond(SessionState.org_missing, "", SessionState.current_org),
            on_change=SessionState.switch_org,
        ),
        spacing="1",
        width="100%",
    )


def env_switcher() -> rx.Component:
    return rx.vstack(
        rx.text("Environment", size="1", color_scheme="gray", weight="medium"),
        rx.cond(
            SessionState.envs.length() > 0,
            rx.select(
                SessionState.env_names,
                value=SessionState.current_env,
                on_change=SessionState.switch_env,
                width="100%",
                aria_label="Environment",
                data_testid="env-switcher",
            ),
            rx.link(rx.text("Create an environment", size="2"), href=f"/orgs/{SessionState.current_org}/environments"),
        ),
        spacing="1",
        width="100%",
    )


def sidebar(active: str) -> rx.Component:
    return rx.vstack(
        brand(),
        rx.box(height="0.5rem"),
        org_switcher(),
        rx.cond(
            SessionState.org_missing,
            rx.fragment(),
            rx.vstack(
                env_switcher(),
                rx.separator(margin_y="0.5rem"),
                rx.vstack(*[nav_item(s, label, icon, active) for s, label, icon in NAV], spacing="1", width="100%"),
                spacing="3",
                width="100%",
            ),
        ),
        rx.spacer(),
        rx.cond(
            SessionState.is_platform_admin,
            rx.link(
                rx.hstack(rx.icon("shield", size=16), rx.text("Operator", size="2", weight="medium"), spacing="3"),
                href="/admin",
                underline="none",
                padding_x="0.75rem",
                padding_y="0.5rem",
                color=rx.color("gray", 11),
                data_testid="nav-admin",
            ),
        ),
        rx.link(
            rx.hstack(rx.icon("book-open", size=16), rx.text("API reference", size="2"), spacing="3"),
            href="/docs",
            is_external=True,
            underline="none",
            padding_x="0.75rem",
            color=rx.color("gray", 11),
        ),
        width=SIDEBAR_WIDTH,
        min_width=SIDEBAR_WIDTH,
        height="100vh",
        position="sticky",
        top="0",
        padding="1.25rem 1rem",
        spacing="3",
        border_right=f"1px solid {rx.color('gray', 5)}",
        background=rx.color("gray", 2),
        as_="nav",
        aria_label="Main",
    )


def account_menu() -> rx.Component:
    return rx.menu.root(
        rx.menu.trigger(
            rx.button(
                rx.avatar(fallback=SessionState.user_initial, size="1", radius="full"),
                rx.text(SessionState.user_email, size="2"),
                rx.icon("chevron-down", size=14),
                variant="ghost",
                color_scheme="gray",
                data_testid="account-menu",
            )
        ),
        rx.menu.content(
            rx.menu.item("Create an organization", on_click=rx.redirect("/onboarding")),
            rx.menu.separator(),
            rx.menu.item("Log out", on_click=SessionState.logout, color_scheme="red", data_testid="logout"),
        ),
    )


def top_bar() -> rx.Component:
    return rx.hstack(
        rx.hstack(
            rx.text(SessionState.current_org_name, weight="medium", size="2"),
            rx.cond(
                SessionState.current_env != "",
                rx.hstack(
                    rx.text("/", color_scheme="gray", size="2"),
                    rx.badge(SessionState.current_env, variant="soft", radius="full"),
                    spacing="2",
                    align="center",
                ),
            ),
            spacing="2",
            align="center",
        ),
        rx.spacer(),
        account_menu(),
        width="100%",
        padding_x="2rem",
        height="3.5rem",
        align="center",
        border_bottom=f"1px solid {rx.color('gray', 4)}",
        background=rx.color("gray", 1),
        position="sticky",
        top="0",
        z_index="5",
    )


def not_found() -> rx.Component:
    return empty_state(
        "search-x",
        "Not found",
        "This organization does not exist, or you are not a member of it.",
        rx.link(rx.button("Go to my dashboard"), href="/"),
    )


def signed_in_page(active: str, *content: rx.Component) -> rx.Component:
    """An org page: nothing is drawn until the session and org are known; a foreign org is 'Not found'."""
    return rx.hstack(
        sidebar(active),
        rx.vstack(
            top_bar(),
            rx.box(
                rx.cond(
                    SessionState.signed_in,
                    rx.cond(SessionState.org_missing, not_found(), rx.fragment(*content)),
                    rx.center(rx.spinner(size="3"), padding="4rem"),
                ),
                padding="2rem",
                width="100%",
                max_width="76rem",
            ),
            spacing="0",
            width="100%",
            min_height="100vh",
            as_="main",
        ),
        spacing="0",
        width="100%",
        align="start",
    )


def plain_page(*content: rx.Component) -> rx.Component:
    """Pages outside an org (onboarding, admin): the brand and the account menu, no org navigation."""
    return rx.vstack(
        rx.hstack(
            brand(),
            rx.spacer(),
            rx.cond(SessionState.signed_in, account_menu()),
            width="100%",
            align="center",
            padding="1rem 2rem",
            border_bottom=f"1px solid {rx.color('gray', 4)}",
        ),
        rx.box(
            rx.cond(SessionState.signed_in, rx.fragment(*content), rx.center(rx.spinner(size="3"), padding="4rem")),
            padding="2rem",
            width="100%",
            max_width="76rem",
            margin_x="auto",
        ),
        spacing="0",
        width="100%",
        min_height="100vh",
    )


def auth_page(*content: rx.Component) -> rx.Component:
    """Log-in / sign-up: a centered card on a soft background."""
    return rx.center(
        rx.vstack(
            brand(),
            rx.card(rx.vstack(*content, spacing="4", width="100%"), size="4", width="100%"),
            spacing="5",
            align="center",
            width="100%",
            max_width="26rem",
        ),
        min_height="100vh",
        width="100%",
        padding="2rem",
        background=f"radial-gradient(circle at 30% 0%, {rx.color('indigo', 3)}, {rx.color('gray', 1)} 60%)",
    )
