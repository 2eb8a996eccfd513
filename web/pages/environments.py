"""``/orgs/{org}/environments``: dev / staging / prod, each in a region with its models and quotas."""

# mypy: disable-error-code="attr-defined,operator,arg-type"
# (Reflex state attributes are Vars on the class, which mypy sees as their Python types.)

from __future__ import annotations

import reflex as rx

from web.components.layout import signed_in_page
from web.components.ui import (
    confirm_dialog,
    copy_button,
    empty_state,
    error_callout,
    field,
    info_callout,
    loading_rows,
    page_header,
)
from web.state.environments import QUOTAS, EnvironmentsState

QUOTA_LABELS = {
    "rpm": "Requests / minute",
    "tpm": "Tokens / minute",
    "tpd": "Tokens / day",
    "max_concurrency": "Requests in flight",
}


def env_card(e: dict[str, str]) -> rx.Component:
    return rx.card(
        rx.vstack(
            rx.hstack(
                rx.icon("layers", size=18, color=rx.color("accent", 10)),
                rx.heading(e["name"], size="4"),
                rx.badge(rx.icon("map-pin", size=12), e["region_name"], variant="soft", color_scheme="gray"),
                rx.spacer(),
                rx.cond(
                    EnvironmentsState.can_manage,
                    rx.hstack(
                        rx.button(
                            "Edit",
                            variant="soft",
                            size="1",
                            on_click=EnvironmentsState.open_edit(e["name"]),
                            data_testid="edit-env-" + e["name"],
                        ),
                        rx.button(
                            "Delete",
                            variant="ghost",
                            color_scheme="red",
                            size="1",
                            on_click=EnvironmentsState.ask_delete(e["name"]),
                        ),
                        spacing="2",
                    ),
                ),
                width="100%",
                align="center",
                spacing="3",
            ),
            rx.hstack(
                rx.text("Base URL", size="1", color_scheme="gray", width="6rem"),
                rx.code(e["base_url"], size="2", data_testid="base-url-" + e["name"]),
                copy_button(e["base_url"], "", test_id="copy-url-" + e["name"]),
                align="center",
                spacing="2",
            ),
            rx.hstack(
                rx.text("Models", size="1", color_scheme="gray", width="6rem"),
                rx.text(e["models"], size="2"),
                align="center",
            ),
            rx.hstack(
                rx.text("Quotas", size="1", color_scheme="gray", width="6rem"),
                rx.text(
                    e["rpm"]
                    + " req/min · "
                    + e["tpm"]
                    + " tok/min · "
                    + e["tpd"]
                    + " tok/day · "
                    + e["max_concurrency"]
                    + " in flight",
                    size="2",
                    color_scheme="gray",
                ),
                align="center",
            ),
            spacing="3",
            width="100%",
        ),
        width="100%",
        data_testid="env-" + e["name"],
    )


def model_checkbox(m: dict[str, str]) -> rx.Component:
    return rx.el.label(
        rx.hstack(
            rx.checkbox(
                checked=EnvironmentsState.form_models.contains(m["id"]),
                on_change=lambda on: EnvironmentsState.toggle_model(m["id"], on),
                name="model-" + m["id"],
            ),
            rx.vstack(
                rx.text(m["name"], size="2", weight="medium"),
                rx.text(m["id"] + " · " + m["kind"] + " · " + m["context"] + " context", size="1", color_scheme="gray"),
                spacing="0",
            ),
            spacing="2",
            align="center",
            padding="0.5rem",
            border=f"1px solid {rx.color('gray', 5)}",
            border_radius="8px",
            width="100%",
            cursor="pointer",
        ),
        width="100%",
    )


def env_dialog() -> rx.Component:
    s = EnvironmentsState
    return rx.dialog.root(
        rx.dialog.content(
            rx.dialog.title(rx.cond(s.editing != "", "Edit " + s.editing, "New environment")),
            rx.dialog.description(
                "An environment is pinned to a region (where its requests run and its data stays) "
                "with the models it may call.",
                size="2",
                color_scheme="gray",
                margin_bottom="1rem",
            ),
            rx.form(
                rx.vstack(
                    error_callout(s.form_error),
                    rx.cond(
                        s.editing == "",
                        field(
                            "Name",
                            rx.input(
                                id="f-env-name",
                                name="name",
                                default_value=s.suggested_name,
                                placeholder="prod",
                                size="3",
                                auto_focus=True,
                            ),
                            error=s.name_error,
                            hint="dev, staging, prod… lower-case letters, digits and '-'.",
                            html_for="f-env-name",
                        ),
                    ),
                    field(
                        "Region",
                        rx.select.root(
                            rx.select.trigger(id="f-env-region", width="100%", data_testid="region-select"),
                            rx.select.content(
                                rx.foreach(s.regions, lambda r: rx.select.item(r["label"], value=r["code"]))
                            ),
                            value=s.form_region,
                            on_change=s.set_form_region,
                            size="3",
                        ),
                        error=s.region_error,
                        html_for="f-env-region",
                    ),
                    rx.cond(s.residency_note != "", info_callout(s.residency_note, icon="shield-check")),
                    field(
                        "Models",
                        rx.grid(rx.foreach(s.catalog, model_checkbox), columns="2", spacing="2", width="100%"),
                        error=s.models_error,
                    ),
                    rx.text("Quotas", size="2", weight="medium"),
                    rx.grid(
                        *[
                            field(
                                QUOTA_LABELS[q],
                                rx.input(
                                    id=f"f-{q}",
                                    name=q,
                                    default_value=s.form_quotas[q],
                                    placeholder="inherit",
                                    input_mode="numeric",
                                    size="2",
                                ),
                                error=s.quota_errors[q],
                                html_for=f"f-{q}",
                            )
                            for q in QUOTAS
                        ],
                        columns="2",
                        spacing="3",
                        width="100%",
                    ),
                    rx.text(
                        "Blank inherits the organization's limits (plan: " + s.org_plan + "). "
                        "An environment can only narrow them.",
                        size="1",
                        color_scheme="gray",
                    ),
                    rx.hstack(
                        rx.dialog.close(rx.button("Cancel", variant="soft", color_scheme="gray", type="button")),
                        rx.button(
                            rx.cond(s.editing != "", "Save", "Create environment"),
                            type="submit",
                            loading=s.busy,
                            data_testid="env-submit",
                        ),
                        spacing="3",
                        justify="end",
                        width="100%",
                    ),
                    spacing="3",
                    width="100%",
                ),
                on_submit=s.save,
                reset_on_submit=False,
                no_validate=True,
            ),
            max_width="38rem",
        ),
        open=s.dialog_open,
        on_open_change=s.set_dialog_open,
    )


def page() -> rx.Component:
    s = EnvironmentsState
    new_button = rx.cond(
        s.can_manage,
        rx.button(rx.icon("plus", size=16), "New environment", on_click=s.open_create, data_testid="new-env"),
    )
    return signed_in_page(
        "environments",
        page_header(
            "Environments", "Separate dev, staging and prod: each with its region, models and quotas.", new_button
        ),
        error_callout(s.error),
        rx.cond(
            s.loading,
            loading_rows(3),
            rx.cond(
                s.rows.length() > 0,
                rx.vstack(rx.foreach(s.rows, env_card), spacing="3", width="100%"),
                empty_state(
                    "layers",
                    "No environments yet",
                    "Create your first environment: pick a region and the models it may call, "
                    "then create an API key for it.",
                    rx.cond(
                        s.can_manage,
                        rx.button(rx.icon("plus", size=16), "Create an environment", on_click=s.open_create),
                    ),
                ),
            ),
        ),
        env_dialog(),
        confirm_dialog(
            open_=s.delete_target != "",
            title="Delete this environment?",
            description="Every API key of “" + s.delete_target + "” stops working at once. Its usage history is kept.",
            confirm_label="Delete environment",
            on_confirm=s.confirm_delete,
            on_cancel=s.cancel_delete,
            busy=s.busy,
            test_id="delete-env",
        ),
    )
