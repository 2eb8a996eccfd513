"""``/orgs/{org}/keys``: create (shown once), list, revoke and rotate API keys."""

# mypy: disable-error-code="attr-defined,operator,arg-type"
# (Reflex state attributes are Vars on the class, which mypy sees as their Python types.)

from __future__ import annotations

import reflex as rx

from web.components.forms import text_input
from web.components.layout import signed_in_page
from web.components.ui import (
    confirm_dialog,
    copy_button,
    empty_state,
    error_callout,
    field,
    loading_rows,
    page_header,
    status_badge,
)
from web.state.keys import KeysState


def key_row(k: dict[str, str]) -> rx.Component:
    live = (k["status"] == "active") | (k["status"] == "rotating")
    return rx.table.row(
        rx.table.cell(rx.text(k["name"], weight="medium", size="2")),
        rx.table.cell(rx.code(k["display"], size="1", variant="ghost")),
        rx.table.cell(rx.badge(k["environment"], variant="outline", color_scheme="gray")),
        rx.table.cell(status_badge(k["status"])),
        rx.table.cell(rx.text(k["created"], size="2", color_scheme="gray")),
        rx.table.cell(rx.text(k["last_used"], size="2", color_scheme="gray")),
        rx.table.cell(rx.text(k["expires"], size="2", color_scheme="gray")),
        rx.table.cell(
            rx.cond(
                KeysState.can_manage & live,
                rx.hstack(
                    rx.button("Rotate", variant="soft", size="1", on_click=KeysState.ask_rotate(k["id"], k["name"])),
                    rx.button(
                        "Revoke",
                        variant="soft",
                        color_scheme="red",
                        size="1",
                        on_click=KeysState.ask_revoke(k["id"], k["name"]),
                        data_testid="revoke-" + k["name"],
                    ),
                    spacing="2",
                    justify="end",
                ),
            ),
        ),
        align="center",
        data_testid="key-row-" + k["name"],
    )


def keys_table() -> rx.Component:
    return rx.table.root(
        rx.table.header(
            rx.table.row(
                *[
                    rx.table.column_header_cell(h)
                    for h in ("Name", "Key", "Environment", "Status", "Created", "Last used", "Expires", "")
                ]
            )
        ),
        rx.table.body(rx.foreach(KeysState.visible_keys, key_row)),
        width="100%",
        variant="surface",
        size="2",
    )


def create_dialog() -> rx.Component:
    s = KeysState
    return rx.dialog.root(
        rx.dialog.content(
            rx.dialog.title("Create an API key"),
            rx.dialog.description(
                "Keys call the OpenAI-compatible endpoint of one environment.",
                size="2",
                color_scheme="gray",
                margin_bottom="1rem",
            ),
            rx.form(
                rx.vstack(
                    error_callout(s.create_error),
                    text_input(
                        "Name",
                        "name",
                        error=s.name_error,
                        placeholder="backend",
                        auto_focus=True,
                        hint="What uses it: a service, a notebook, CI…",
                    ),
                    field(
                        "Environment",
                        rx.select(
                            s.env_names,
                            value=s.key_env,
                            on_change=s.set_key_env,
                            size="3",
                            id="f-key-env",
                            width="100%",
                        ),
                        html_for="f-key-env",
                    ),
                    field(
                        "Expires",
                        rx.select(
                            s.expiry_choices,
                            value=s.key_expiry,
                            on_change=s.set_key_expiry,
                            size="3",
                            id="f-key-expiry",
                            width="100%",
                        ),
                        html_for="f-key-expiry",
                    ),
                    rx.hstack(
                        rx.dialog.close(rx.button("Cancel", variant="soft", color_scheme="gray", type="button")),
                        rx.button("Create key", type="submit", loading=s.busy, data_testid="key-submit"),
                        spacing="3",
                        justify="end",
                        width="100%",
                    ),
                    spacing="4",
                    width="100%",
                ),
                on_submit=s.create,
                reset_on_submit=False,
                no_validate=True,
            ),
            max_width="30rem",
        ),
        open=s.create_open,
        on_open_change=s.set_create_open,
    )


def reveal_dialog() -> rx.Component:
    s = KeysState
    return rx.dialog.root(
        rx.dialog.content(
            rx.dialog.title("Save your key: " + s.revealed_name),
            rx.callout(
                "This is the only time the key is shown. Store it in a secret manager now; "
                "if you lose it, rotate it to get a new one.",
                icon="triangle-alert",
                color_scheme="amber",
                margin_y="1rem",
            ),
            rx.hstack(
                rx.code(s.revealed_key, size="3", data_testid="new-key", style={"wordBreak": "break-all"}),
                copy_button(s.revealed_key, "Copy", test_id="copy-key"),
                align="center",
                spacing="3",
                padding="0.75rem",
                border_radius="8px",
                background=rx.color("gray", 3),
                width="100%",
            ),
            rx.hstack(
                rx.button("I have saved it", on_click=s.close_reveal, data_testid="key-done"),
                justify="end",
                width="100%",
                margin_top="1.25rem",
            ),
            max_width="36rem",
        ),
        open=s.revealed_key != "",
        on_open_change=s.reveal_open_change,
    )


def page() -> rx.Component:
    s = KeysState
    new_button = rx.cond(
        s.can_manage,
        rx.button(
            rx.icon("plus", size=16),
            "Create key",
            on_click=s.open_create,
            data_testid="new-key-button",
            disabled=s.envs.length() == 0,
        ),
    )
    return signed_in_page(
        "keys",
        page_header("API keys", "Keys authenticate calls to your environments' endpoints.", new_button),
        error_callout(s.error),
        rx.hstack(
            rx.switch(checked=s.show_all_envs, on_change=s.set_show_all_envs, id="all-envs"),
            rx.el.label(rx.text("Show keys of every environment", size="2"), html_for="all-envs"),
            spacing="2",
            align="center",
            margin_bottom="1rem",
        ),
        rx.cond(
            s.loading,
            loading_rows(4),
            rx.cond(
                s.envs.length() == 0,
                empty_state(
                    "layers",
                    "Create an environment first",
                    "Keys belong to an environment (dev, staging, prod).",
                    rx.link(rx.button("Go to environments"), href="/orgs/" + s.current_org + "/environments"),
                ),
                rx.cond(
                    s.visible_keys.length() > 0,
                    keys_table(),
                    empty_state(
                        "key-round",
                        "No API keys yet",
                        "Create a key to call models from your code with any OpenAI SDK.",
                        rx.cond(
                            s.can_manage, rx.button(rx.icon("plus", size=16), "Create key", on_click=s.open_create)
                        ),
                    ),
                ),
            ),
        ),
        create_dialog(),
        reveal_dialog(),
        confirm_dialog(
            open_=s.revoke_target != "",
            title="Revoke this key?",
            description="“"
            + s.revoke_name
            + "” stops working immediately; calls with it get 401. This cannot be undone.",
            confirm_label="Revoke key",
            on_confirm=s.confirm_revoke,
            on_cancel=s.cancel_revoke,
            busy=s.busy,
            test_id="revoke",
        ),
        confirm_dialog(
            open_=s.rotate_target != "",
            title="Rotate this key?",
            description="A new key replaces “" + s.rotate_name + "”. The old one keeps working for 24 hours, "
            "so you can roll it out without downtime.",
            confirm_label="Rotate key",
            on_confirm=s.confirm_rotate,
            on_cancel=s.cancel_rotate,
            busy=s.busy,
            test_id="rotate",
        ),
    )
