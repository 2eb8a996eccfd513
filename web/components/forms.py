"""Form controls with labels tied to them (keyboard and screen-reader friendly)."""

# mypy: disable-error-code="attr-defined,operator,arg-type"
# (Reflex state attributes are Vars on the class, which mypy sees as their Python types.)

from __future__ import annotations

from typing import Any

import reflex as rx

from web.components.ui import field


def text_input(
    label: str,
    name: str,
    *,
    error: Any = "",
    hint: str = "",
    type_: str = "text",
    placeholder: str = "",
    auto_focus: bool = False,
    auto_complete: str = "off",
    required: bool = False,
    default_value: Any = None,
    **props: Any,
) -> rx.Component:
    control_id = f"f-{name}"
    extra = {"default_value": default_value} if default_value is not None else {}
    return field(
        label,
        rx.input(
            id=control_id,
            name=name,
            type=type_,
            placeholder=placeholder,
            auto_focus=auto_focus,
            auto_complete=auto_complete,
            required=required,
            size="3",
            aria_invalid=rx.cond(error != "", "true", "false"),
            **extra,
            **props,
        ),
        error=error,
        hint=hint,
        html_for=control_id,
    )


def submit_button(label: str, busy: Any = False, **props: Any) -> rx.Component:
    return rx.button(label, type="submit", loading=busy, size="3", **props)
