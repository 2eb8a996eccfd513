"""``/orgs/{org}/billing``: spend, forecast, credits, budget, statements, and Stripe when enabled."""

# mypy: disable-error-code="attr-defined,operator,arg-type"
# (Reflex state attributes are Vars on the class, which mypy sees as their Python types.)

from __future__ import annotations

import reflex as rx

from web.components.layout import signed_in_page
from web.components.ui import (
    card,
    empty_state,
    error_callout,
    field,
    loading_rows,
    page_header,
    section_title,
    stat,
    status_badge,
)
from web.state.billing import BillingState


def savings_card() -> rx.Component:
    s = BillingState
    return rx.card(
        rx.hstack(
            rx.center(
                rx.icon("piggy-bank", size=22, color="white"),
                width="44px",
                height="44px",
                border_radius="12px",
                background=rx.color("grass", 9),
            ),
            rx.vstack(
                rx.text("Savings vs OpenAI list price this month", size="2", color_scheme="gray"),
                rx.hstack(
                    rx.text(
                        s.summary["savings"],
                        size="7",
                        weight="bold",
                        color=rx.color("grass", 11),
                        data_testid="savings",
                    ),
                    rx.cond(
                        s.summary["savings_pct"] != "",
                        rx.badge(s.summary["savings_pct"] + " less", color_scheme="grass", variant="soft"),
                    ),
                    align="center",
                    spacing="3",
                ),
                rx.text(
                    "The same tokens at OpenAI's list prices would cost " + s.summary["reference"] + ".",
                    size="1",
                    color_scheme="gray",
                ),
                spacing="1",
            ),
            spacing="4",
            align="center",
        ),
        width="100%",
        size="3",
    )


def budget_card() -> rx.Component:
    s = BillingState
    return card(
        section_title("Monthly budget"),
        rx.cond(
            s.has_budget,
            rx.vstack(
                rx.hstack(
                    rx.text(s.summary["mtd"] + " of " + s.summary["budget"], size="2"),
                    rx.spacer(),
                    rx.text(s.summary["budget_used"], size="2", color_scheme="gray"),
                    width="100%",
                ),
                rx.progress(
                    value=(s.budget_fraction * 100).to(int),
                    color_scheme=rx.cond(s.budget_fraction >= 0.9, "red", "indigo"),
                ),
                width="100%",
                spacing="2",
            ),
            rx.text("No budget: spend is not capped.", size="2", color_scheme="gray"),
        ),
        rx.form(
            rx.hstack(
                rx.box(
                    field(
                        "Budget (USD per month)",
                        rx.input(
                            id="f-budget",
                            name="budget",
                            default_value=s.summary["budget_input"],
                            key=s.summary["budget_input"],
                            placeholder="none",
                            input_mode="decimal",
                            size="2",
                        ),
                        error=s.budget_error,
                        hint="Requests are refused once the month's spend reaches it. Blank removes it.",
                        html_for="f-budget",
                    ),
                    flex="1",
                ),
                rx.button(
                    "Save", type="submit", loading=s.budget_busy, size="2", margin_top="1.4rem", disabled=~s.can_manage
                ),
                align="start",
                spacing="3",
                width="100%",
            ),
            on_submit=s.save_budget,
            reset_on_submit=False,
            no_validate=True,
            width="100%",
        ),
    )


def payment_card() -> rx.Component:
    s = BillingState
    return card(
        section_title("Payment", status_badge(s.summary["status"])),
        error_callout(s.stripe_error),
        rx.cond(
            s.billing_enabled,
            rx.vstack(
                rx.text(
                    "Plan: ",
                    rx.text.strong(s.summary["plan"]),
                    " · payment method ",
                    s.summary["payment_method"],
                    size="2",
                ),
                rx.hstack(
                    rx.cond(
                        s.summary["payment_method"] == "none",
                        rx.button(
                            rx.icon("credit-card", size=14),
                            "Add a payment method",
                            on_click=s.checkout,
                            loading=s.stripe_busy,
                        ),
                        rx.button(
                            rx.icon("external-link", size=14),
                            "Manage billing",
                            on_click=s.portal,
                            variant="soft",
                            loading=s.stripe_busy,
                        ),
                    ),
                    spacing="2",
                ),
                rx.form(
                    rx.hstack(
                        rx.input(
                            name="amount", placeholder="50", aria_label="Credit amount in USD", size="2", width="8rem"
                        ),
                        rx.button("Buy credits", type="submit", variant="soft", size="2", loading=s.stripe_busy),
                        spacing="2",
                    ),
                    on_submit=s.buy_credits,
                    reset_on_submit=False,
                ),
                spacing="3",
                width="100%",
            ),
            rx.text(
                "Payments are not enabled on this installation: usage is metered and shown here, nothing is charged.",
                size="2",
                color_scheme="gray",
            ),
        ),
    )


def statements_card() -> rx.Component:
    s = BillingState
    return card(
        section_title("Statements"),
        rx.cond(
            s.statements.length() > 0,
            rx.table.root(
                rx.table.header(
                    rx.table.row(
                        *[rx.table.column_header_cell(h) for h in ("Month", "Status", "Usage", "Amount due", "")]
                    )
                ),
                rx.table.body(
                    rx.foreach(
                        s.statements,
                        lambda st: rx.table.row(
                            rx.table.cell(st["month"]),
                            rx.table.cell(status_badge(st["status"])),
                            rx.table.cell(st["gross"]),
                            rx.table.cell(st["due"]),
                            rx.table.cell(
                                rx.button("View", variant="ghost", size="1", on_click=s.open_statement(st["month"]))
                            ),
                            align="center",
                        ),
                    )
                ),
                width="100%",
                variant="ghost",
            ),
            rx.text("Your first statement appears at the end of this month.", size="2", color_scheme="gray"),
        ),
    )


def credits_card() -> rx.Component:
    s = BillingState
    return card(
        section_title("Credits", rx.text(s.summary["credits_left"] + " left", size="2", color_scheme="gray")),
        rx.cond(
            s.credits.length() > 0,
            rx.table.root(
                rx.table.header(
                    rx.table.row(
                        *[rx.table.column_header_cell(h) for h in ("Kind", "Granted", "Remaining", "Expires", "Note")]
                    )
                ),
                rx.table.body(
                    rx.foreach(
                        s.credits,
                        lambda c: rx.table.row(
                            rx.table.cell(rx.badge(c["kind"], variant="soft")),
                            rx.table.cell(c["amount"]),
                            rx.table.cell(c["remaining"]),
                            rx.table.cell(c["expires"]),
                            rx.table.cell(rx.text(c["note"], size="1", color_scheme="gray")),
                        ),
                    )
                ),
                width="100%",
                variant="ghost",
            ),
            rx.text("No credits.", size="2", color_scheme="gray"),
        ),
    )


def statement_dialog() -> rx.Component:
    s = BillingState
    return rx.dialog.root(
        rx.dialog.content(
            rx.dialog.title("Statement " + s.statement["month"]),
            rx.table.root(
                rx.table.header(
                    rx.table.row(
                        *[
                            rx.table.column_header_cell(h)
                            for h in ("Environment", "Model", "Region", "Requests", "Tokens", "Amount")
                        ]
                    )
                ),
                rx.table.body(
                    rx.foreach(
                        s.statement_lines,
                        lambda line: rx.table.row(
                            *[
                                rx.table.cell(line[k])
                                for k in ("environment", "model", "region", "requests", "tokens", "gross")
                            ]
                        ),
                    )
                ),
                width="100%",
                size="1",
            ),
            rx.data_list.root(
                *[
                    rx.data_list.item(rx.data_list.label(label), rx.data_list.value(s.statement[k]))
                    for label, k in (
                        ("Usage", "gross"),
                        ("Free allowance", "allowance"),
                        ("Discount", "discount"),
                        ("Credits", "credits"),
                        ("Amount due", "due"),
                    )
                ],
                margin_top="1rem",
            ),
            rx.hstack(rx.dialog.close(rx.button("Close", variant="soft")), justify="end", margin_top="1rem"),
            max_width="44rem",
        ),
        open=s.statement_open,
        on_open_change=s.set_statement_open,
    )


def overview() -> rx.Component:
    s = BillingState
    return rx.vstack(
        rx.cond(
            s.keys_blocked,
            rx.callout(
                "Payment is overdue: API keys are refusing requests until it is settled.",
                icon="octagon-alert",
                color_scheme="red",
                width="100%",
            ),
        ),
        rx.grid(
            stat("Spend this month", s.summary["mtd"], "Month " + s.summary["month"], icon="receipt"),
            stat("Forecast", s.summary["forecast"], "at the current pace", icon="trending-up"),
            stat("Credits left", s.summary["credits_left"], "applied before charges", icon="gift"),
            stat("Amount due", s.summary["due"], "after allowance and credits", icon="wallet"),
            columns=rx.breakpoints(initial="2", md="4"),
            spacing="4",
            width="100%",
        ),
        savings_card(),
        rx.grid(budget_card(), payment_card(), columns=rx.breakpoints(initial="1", md="2"), spacing="4", width="100%"),
        rx.grid(
            statements_card(), credits_card(), columns=rx.breakpoints(initial="1", md="2"), spacing="4", width="100%"
        ),
        statement_dialog(),
        spacing="4",
        width="100%",
    )


def page() -> rx.Component:
    s = BillingState
    return signed_in_page(
        "billing",
        page_header("Billing", "What this month costs, and what it would cost elsewhere."),
        error_callout(s.error),
        rx.cond(
            s.loading,
            loading_rows(5),
            rx.cond(
                s.unavailable,
                empty_state(
                    "credit-card",
                    "Billing is not available yet",
                    "This server does not serve billing yet. Usage is still metered: see the Usage page.",
                    rx.link(rx.button("See usage"), href="/orgs/" + s.current_org + "/usage"),
                ),
                overview(),
            ),
        ),
    )
