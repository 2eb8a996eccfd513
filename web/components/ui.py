"""Stateless UI pieces shared by every page: cards, empty/error/loading states, form fields, copy buttons."""

# mypy: disable-error-code="attr-defined,operator,arg-type"
# (Reflex state attributes are Vars on the class, which mypy sees as their Python types.)

from __future__ import annotations

from typing import Any

import reflex as rx


def page_header(title: str, subtitle: str = "", *actions: rx.Component) -> rx.Component:
    return rx.hstack(
        rx.vstack(
            rx.heading(title, size="7", weight="bold"),
            rx.cond(subtitle != "", rx.text(subtitle, color_scheme="gray", size="2")),
            spacing="1",
            align="start",
        ),
        rx.spacer(),
        *actions,
        width="100%",
        align="center",
        margin_bottom="1.25rem",
    )


def card(*children: rx.Component, **props: Any) -> rx.Component:
    return rx.card(rx.vstack(*children, spacing="3", width="100%"), width="100%", size="2", **props)


def section_title(text: str, *right: rx.Component) -> rx.Component:
    return rx.hstack(rx.heading(text, size="4", weight="medium"), rx.spacer(), *right, width="100%", align="center")


def error_callout(message: Any) -> rx.Component:
    """A server or validation error, shown where it happened (never swallowed)."""
    return rx.cond(
        message != "",
        rx.callout(message, icon="triangle-alert", color_scheme="red", role="alert", width="100%"),
    )


def info_callout(message: Any, icon: str = "info") -> rx.Component:
    return rx.callout(message, icon=icon, color_scheme="blue", variant="surface", width="100%")


def empty_state(icon: str, title: str, text: str, *actions: rx.Component) -> rx.Component:
    return rx.center(
        rx.vstack(
            rx.center(
                rx.icon(icon, size=26, color=rx.color("accent", 11)),
                width="56px",
                height="56px",
                border_radius="50%",
                background=rx.color("accent", 3),
            ),
            rx.heading(title, size="4", weight="medium"),
            rx.text(text, color_scheme="gray", size="2", text_align="center", max_width="26rem"),
            rx.hstack(*actions, spacing="2", margin_top="0.5rem"),
            align="center",
            spacing="2",
        ),
        padding_y="3rem",
        width="100%",
        border=f"1px dashed {rx.color('gray', 6)}",
        border_radius="12px",
        class_name="empty-state",
    )


def loading_rows(rows: int = 3) -> rx.Component:
    return rx.vstack(
        *[rx.skeleton(rx.box(height="2.25rem", width="100%"), loading=True) for _ in range(rows)],
        spacing="2",
        width="100%",
        aria_busy="true",
    )


def stat(label: str, value: Any, hint: Any = "", icon: str = "") -> rx.Component:
    return rx.card(
        rx.vstack(
            rx.hstack(
                rx.cond(icon != "", rx.icon(icon, size=16, color=rx.color("gray", 10))),
                rx.text(label, size="2", color_scheme="gray", weight="medium"),
                spacing="2",
                align="center",
            ),
            rx.text(value, size="7", weight="bold", class_name="stat-value"),
            rx.cond(hint != "", rx.text(hint, size="1", color_scheme="gray")),
            spacing="1",
            align="start",
        ),
        width="100%",
        size="2",
    )


def field(
    label: str,
    control: rx.Component,
    *,
    error: Any = "",
    hint: str = "",
    html_for: str = "",
) -> rx.Component:
    """A labelled form control with its in-place validation message."""
    return rx.vstack(
        rx.el.label(rx.text(label, size="2", weight="medium"), html_for=html_for),
        control,
        rx.cond(
            error != "",
            rx.text(error, size="1", color_scheme="red", role="alert", class_name="field-error"),
            rx.cond(hint != "", rx.text(hint, size="1", color_scheme="gray")),
        ),
        spacing="1",
        width="100%",
        align="stretch",
    )


def copy_button(value: Any, label: str = "Copy", test_id: str = "copy") -> rx.Component:
    return rx.button(
        rx.icon("copy", size=14),
        label,
        on_click=[rx.set_clipboard(value), rx.toast.success("Copied to the clipboard", duration=1500)],
        variant="soft",
        size="1",
        type="button",
        data_testid=test_id,
    )


def code_block(code: Any, language: str, test_id: str = "") -> rx.Component:
    return rx.box(
        rx.box(
            copy_button(code, test_id=f"copy-{test_id}" if test_id else "copy"),
            position="absolute",
            top="8px",
            right="8px",
        ),
        rx.code_block(
            code,
            language=language,
            show_line_numbers=False,
            wrap_long_lines=True,
            custom_style={"margin": "0", "borderRadius": "8px", "fontSize": "13px", "paddingRight": "5rem"},
        ),
        position="relative",
        width="100%",
        data_testid=test_id,
    )


def status_badge(status: Any) -> rx.Component:
    return rx.match(
        status,
        ("active", rx.badge("active", color_scheme="green", variant="soft")),
        ("healthy", rx.badge("healthy", color_scheme="green", variant="soft")),
        ("rotating", rx.badge("rotating", color_scheme="amber", variant="soft")),
        ("draining", rx.badge("draining", color_scheme="amber", variant="soft")),
        ("expired", rx.badge("expired", color_scheme="gray", variant="soft")),
        ("revoked", rx.badge("revoked", color_scheme="red", variant="soft")),
        ("unhealthy", rx.badge("unhealthy", color_scheme="red", variant="soft")),
        ("open", rx.badge("open", color_scheme="blue", variant="soft")),
        ("closed", rx.badge("closed", color_scheme="gray", variant="soft")),
        rx.badge(status, color_scheme="gray", variant="soft"),
    )


def confirm_dialog(
    *,
    open_: Any,
    title: str,
    description: Any,
    confirm_label: str,
    on_confirm: Any,
    on_cancel: Any,
    busy: Any = False,
    test_id: str = "confirm",
) -> rx.Component:
    """A destructive action asks first."""
    return rx.alert_dialog.root(
        rx.alert_dialog.content(
            rx.alert_dialog.title(title),
            rx.alert_dialog.description(description, size="2"),
            rx.hstack(
                rx.alert_dialog.cancel(rx.button("Cancel", variant="soft", color_scheme="gray", on_click=on_cancel)),
                rx.button(
                    confirm_label,
                    color_scheme="red",
                    on_click=on_confirm,
                    loading=busy,
                    data_testid=f"{test_id}-yes",
                ),
                spacing="3",
                justify="end",
                margin_top="1rem",
            ),
            max_width="28rem",
        ),
        open=open_,
    )
