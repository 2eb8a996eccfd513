"""``/orgs/{org}/usage``: charts per day by model or environment, latency and errors, a table and CSV."""

# mypy: disable-error-code="attr-defined,operator,arg-type"
# (Reflex state attributes are Vars on the class, which mypy sees as their Python types.)

from __future__ import annotations

import reflex as rx

from web.components.layout import signed_in_page
from web.components.ui import card, empty_state, error_callout, loading_rows, page_header, section_title, stat
from web.state.usage import UsageState

# Axis labels as JavaScript formatters: compact counts, dollars with sensible precision, short dates.
COMPACT = "(v) => new Intl.NumberFormat('en', {notation: 'compact'}).format(v)"
DOLLARS = (
    "(v) => v === 0 ? '$0' : v >= 0.01 ? '$' + Number(v).toFixed(2)"
    " : '$' + Number(Number(v).toPrecision(2)).toLocaleString('en', {maximumFractionDigits: 12})"
)
SHORT_DAY = (
    "(d) => new Date(d + 'T00:00:00Z').toLocaleDateString('en-US', {month: 'short', day: 'numeric', timeZone: 'UTC'})"
)


def stacked_bars(data: rx.Var, formatter: str, test_id: str, axis_width: int = 56) -> rx.Component:
    return rx.recharts.bar_chart(
        rx.recharts.cartesian_grid(stroke_dasharray="3 3", vertical=False),
        rx.recharts.x_axis(data_key="day", tick_line=False, font_size=11, tick_formatter=SHORT_DAY),
        rx.recharts.y_axis(tick_line=False, font_size=11, width=axis_width, tick_formatter=formatter),
        rx.recharts.graphing_tooltip(),
        rx.recharts.legend(),
        rx.foreach(
            UsageState.series,
            lambda s: rx.recharts.bar(
                data_key=s["key"], name=s["name"], stack_id="a", fill=s["color"], is_animation_active=False
            ),
        ),
        data=data,
        height=260,
        width="100%",
        data_testid=test_id,
    )


def latency_chart() -> rx.Component:
    return rx.recharts.line_chart(
        rx.recharts.cartesian_grid(stroke_dasharray="3 3", vertical=False),
        rx.recharts.x_axis(data_key="day", tick_line=False, font_size=11, tick_formatter=SHORT_DAY),
        rx.recharts.y_axis(tick_line=False, font_size=11, unit=" ms", width=64),
        rx.recharts.graphing_tooltip(),
        rx.recharts.legend(),
        rx.recharts.line(
            data_key="p50",
            name="p50",
            stroke="var(--indigo-9)",
            dot={"r": 3},
            is_animation_active=False,
            connect_nulls=True,
        ),
        rx.recharts.line(
            data_key="p95",
            name="p95",
            stroke="var(--orange-9)",
            dot={"r": 3},
            is_animation_active=False,
            connect_nulls=True,
        ),
        rx.recharts.line(
            data_key="ttft50",
            name="TTFT p50",
            stroke="var(--cyan-9)",
            stroke_dasharray="4 3",
            dot={"r": 3},
            is_animation_active=False,
            connect_nulls=True,
        ),
        rx.recharts.line(
            data_key="ttft95",
            name="TTFT p95",
            stroke="var(--amber-9)",
            stroke_dasharray="4 3",
            dot={"r": 3},
            is_animation_active=False,
            connect_nulls=True,
        ),
        data=UsageState.daily,
        height=220,
        width="100%",
    )


def error_chart() -> rx.Component:
    return rx.recharts.area_chart(
        rx.recharts.cartesian_grid(stroke_dasharray="3 3", vertical=False),
        rx.recharts.x_axis(data_key="day", tick_line=False, font_size=11, tick_formatter=SHORT_DAY),
        rx.recharts.y_axis(tick_line=False, font_size=11, unit="%", width=48),
        rx.recharts.graphing_tooltip(),
        rx.recharts.area(
            data_key="error_rate",
            name="error rate",
            stroke="var(--red-9)",
            fill="var(--red-4)",
            is_animation_active=False,
        ),
        data=UsageState.daily,
        height=220,
        width="100%",
    )


def custom_range() -> rx.Component:
    s = UsageState
    return rx.form(
        rx.hstack(
            rx.input(type="date", name="since", default_value=s.since, key=s.since, aria_label="From", size="2"),
            rx.text("→", color_scheme="gray"),
            rx.input(type="date", name="until", default_value=s.until, key=s.until, aria_label="To", size="2"),
            rx.button("Apply", type="submit", variant="soft", size="2"),
            spacing="2",
            align="center",
        ),
        on_submit=s.apply_custom,
        reset_on_submit=False,
    )


def controls() -> rx.Component:
    s = UsageState
    return rx.vstack(
        rx.hstack(
            rx.segmented_control.root(
                rx.segmented_control.item("7 days", value="7d"),
                rx.segmented_control.item("30 days", value="30d"),
                rx.segmented_control.item("90 days", value="90d"),
                rx.segmented_control.item("Custom", value="custom"),
                value=s.range_preset,
                on_change=s.set_range,
                aria_label="Date range",
            ),
            rx.cond(s.range_preset == "custom", custom_range()),
            rx.spacer(),
            rx.select(
                s.env_choices, value=s.env_filter, on_change=s.set_env_filter, aria_label="Environment", size="2"
            ),
            rx.segmented_control.root(
                rx.segmented_control.item("By model", value="model"),
                rx.segmented_control.item("By environment", value="environment"),
                value=s.breakdown,
                on_change=s.set_breakdown,
                aria_label="Break down by",
            ),
            spacing="3",
            align="center",
            width="100%",
            wrap="wrap",
        ),
        rx.cond(s.range_error != "", rx.text(s.range_error, color_scheme="red", size="1", role="alert")),
        width="100%",
        spacing="1",
        margin_bottom="1rem",
    )


def usage_table() -> rx.Component:
    s = UsageState
    return card(
        section_title(
            "Daily detail",
            rx.button(
                rx.icon("download", size=14),
                "Export CSV",
                variant="soft",
                size="1",
                on_click=s.export_csv,
                data_testid="export-csv",
            ),
        ),
        rx.table.root(
            rx.table.header(
                rx.table.row(
                    *[
                        rx.table.column_header_cell(h)
                        for h in ("Day", "Model", "Environment", "Requests", "Tokens", "Errors", "Cost")
                    ]
                )
            ),
            rx.table.body(
                rx.foreach(
                    s.table,
                    lambda r: rx.table.row(
                        rx.table.cell(r["day"]),
                        rx.table.cell(r["model"]),
                        rx.table.cell(r["environment"]),
                        rx.table.cell(r["requests"], data_testid="usage-requests"),
                        rx.table.cell(r["tokens"]),
                        rx.table.cell(r["errors"]),
                        rx.table.cell(r["cost"]),
                    ),
                )
            ),
            width="100%",
            size="1",
            variant="ghost",
            data_testid="usage-table",
        ),
    )


def dashboard() -> rx.Component:
    s = UsageState
    return rx.vstack(
        rx.grid(
            stat("Requests", s.totals["requests"], icon="activity"),
            stat("Tokens", s.totals["tokens"], icon="hash"),
            stat("Cost", s.totals["cost"], icon="dollar-sign"),
            stat("Error rate", s.totals["error_rate"], icon="circle-alert"),
            columns="4",
            spacing="4",
            width="100%",
        ),
        rx.grid(
            card(section_title("Requests per day"), stacked_bars(s.requests_data, COMPACT, "chart-requests")),
            card(section_title("Tokens per day"), stacked_bars(s.tokens_data, COMPACT, "chart-tokens")),
            card(section_title("Cost per day (USD)"), stacked_bars(s.cost_data, DOLLARS, "chart-cost", axis_width=100)),
            card(
                section_title("Latency and time to first token"),
                rx.cond(
                    s.has_latency,
                    latency_chart(),
                    rx.center(
                        rx.text("Latency percentiles appear with the next roll-up.", size="2", color_scheme="gray"),
                        height="220px",
                    ),
                ),
            ),
            card(section_title("Error rate"), error_chart()),
            columns=rx.breakpoints(initial="1", md="2"),
            spacing="4",
            width="100%",
        ),
        usage_table(),
        rx.cond(
            s.as_of != "",
            rx.text("Data as of " + s.as_of + " UTC; refreshed every minute.", size="1", color_scheme="gray"),
        ),
        spacing="4",
        width="100%",
    )


def page() -> rx.Component:
    s = UsageState
    return signed_in_page(
        "usage",
        page_header("Usage", "Requests, tokens and cost across your environments."),
        controls(),
        error_callout(s.error),
        rx.cond(
            s.loading,
            loading_rows(6),
            rx.cond(
                s.has_data,
                dashboard(),
                empty_state(
                    "chart-column",
                    "No usage in this period",
                    "Calls to your endpoints show up here within a minute or two.",
                    rx.link(rx.button("Open the quick start"), href="/orgs/" + s.current_org + "/quickstart"),
                ),
            ),
        ),
    )
