"""``/admin``: the operator's view: nodes, organizations, the model catalog."""

# mypy: disable-error-code="attr-defined,operator,arg-type"
# (Reflex state attributes are Vars on the class, which mypy sees as their Python types.)

from __future__ import annotations

import reflex as rx

from web.components.layout import plain_page
from web.components.ui import empty_state, error_callout, loading_rows, page_header, status_badge
from web.state.admin import AdminState


def table(headers: tuple[str, ...], rows: rx.Var, render: object, test_id: str) -> rx.Component:
    return rx.table.root(
        rx.table.header(rx.table.row(*[rx.table.column_header_cell(h) for h in headers])),
        rx.table.body(rx.foreach(rows, render)),
        width="100%",
        variant="surface",
        size="2",
        data_testid=test_id,
    )


def node_row(n: dict[str, str]) -> rx.Component:
    return rx.table.row(
        rx.table.cell(
            rx.vstack(
                rx.text(n["name"], weight="medium", size="2"),
                rx.text(n["id"], size="1", color_scheme="gray"),
                spacing="0",
            )
        ),
        rx.table.cell(n["region"]),
        rx.table.cell(n["model"]),
        rx.table.cell(status_badge(n["status"])),
        rx.table.cell(rx.text(n["load"], size="2")),
        rx.table.cell(rx.text(n["spot"] + " · " + n["price"], size="2")),
        rx.table.cell(rx.text(n["heartbeat"], size="1", color_scheme="gray")),
        rx.table.cell(
            rx.cond(
                n["status"] == "draining",
                rx.button("Undrain", size="1", variant="soft", on_click=AdminState.drain(n["id"], True)),
                rx.button(
                    "Drain",
                    size="1",
                    variant="soft",
                    color_scheme="amber",
                    on_click=AdminState.drain(n["id"], False),
                    data_testid="drain-" + n["id"],
                ),
            )
        ),
        align="center",
    )


def nodes_tab() -> rx.Component:
    return rx.cond(
        AdminState.nodes.length() > 0,
        table(
            ("Node", "Region", "Model", "Health", "Load", "Capacity", "Last heartbeat", ""),
            AdminState.nodes,
            node_row,
            "admin-nodes",
        ),
        empty_state("server", "No nodes", "Register one with `cic agent`, `cic node sim`, or `cic nodes add`."),
    )


def orgs_tab() -> rx.Component:
    return rx.vstack(
        rx.cond(AdminState.orgs_error != "", rx.callout(AdminState.orgs_error, icon="info", width="100%")),
        rx.cond(
            AdminState.orgs_usage.length() > 0,
            table(
                ("Organization", "Plan", "Members", "Requests (month)", "Tokens (month)", "Cost (month)", "Created"),
                AdminState.orgs_usage,
                lambda o: rx.table.row(
                    rx.table.cell(
                        rx.vstack(
                            rx.text(o["name"], weight="medium", size="2"),
                            rx.text(o["slug"], size="1", color_scheme="gray"),
                            spacing="0",
                        )
                    ),
                    rx.table.cell(rx.badge(o["plan"], variant="soft")),
                    rx.table.cell(o["members"]),
                    rx.table.cell(o["requests"]),
                    rx.table.cell(o["tokens"]),
                    rx.table.cell(o["cost"]),
                    rx.table.cell(rx.text(o["created"], size="1", color_scheme="gray")),
                    align="center",
                ),
                "admin-orgs",
            ),
            rx.cond(
                AdminState.orgs_error == "", empty_state("building-2", "No organizations", "Nobody signed up yet.")
            ),
        ),
        width="100%",
    )


def catalog_tab() -> rx.Component:
    return table(
        ("Model", "Kind", "Context", "Regions", "Price in / out per 1M", "OpenAI reference"),
        AdminState.models,
        lambda m: rx.table.row(
            rx.table.cell(
                rx.vstack(
                    rx.text(m["name"], weight="medium", size="2"),
                    rx.text(m["id"], size="1", color_scheme="gray"),
                    spacing="0",
                )
            ),
            rx.table.cell(rx.badge(m["kind"], variant="soft")),
            rx.table.cell(m["context"]),
            rx.table.cell(rx.text(m["regions"], size="1")),
            rx.table.cell(m["price"]),
            rx.table.cell(rx.text(m["reference"], size="1", color_scheme="gray")),
            align="center",
        ),
        "admin-catalog",
    )


def page() -> rx.Component:
    s = AdminState
    return plain_page(
        page_header("Operator", "The whole platform: fleet, tenants and catalog."),
        error_callout(s.error),
        rx.cond(
            s.loading,
            loading_rows(5),
            rx.cond(
                s.forbidden,
                empty_state(
                    "shield-off",
                    "Operators only",
                    "This page needs a platform operator account.",
                    rx.link(rx.button("Back to my dashboard"), href="/"),
                ),
                rx.tabs.root(
                    rx.tabs.list(
                        rx.tabs.trigger("Nodes", value="nodes"),
                        rx.tabs.trigger("Organizations", value="orgs"),
                        rx.tabs.trigger("Model catalog", value="catalog"),
                    ),
                    rx.tabs.content(rx.box(nodes_tab(), padding_top="1rem"), value="nodes"),
                    rx.tabs.content(rx.box(orgs_tab(), padding_top="1rem"), value="orgs"),
                    rx.tabs.content(rx.box(catalog_tab(), padding_top="1rem"), value="catalog"),
                    value=s.tab,
                    on_change=s.set_tab,
                    width="100%",
                ),
            ),
        ),
    )
