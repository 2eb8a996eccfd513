"""``/orgs/{org}/quickstart``: the base URL and snippets (curl, Python, JavaScript) for an environment."""

# mypy: disable-error-code="attr-defined,operator,arg-type"
# (Reflex state attributes are Vars on the class, which mypy sees as their Python types.)

from __future__ import annotations

import reflex as rx

from web.components.layout import signed_in_page
from web.components.ui import card, code_block, copy_button, empty_state, error_callout, loading_rows, page_header
from web.state.quickstart import QuickstartState


def step(n: str, title: str, *body: rx.Component) -> rx.Component:
    return rx.hstack(
        rx.center(
            rx.text(n, weight="bold", size="2"),
            width="28px",
            height="28px",
            min_width="28px",
            border_radius="50%",
            background=rx.color("accent", 3),
            color=rx.color("accent", 11),
        ),
        rx.vstack(rx.heading(title, size="3"), *body, spacing="3", width="100%"),
        spacing="4",
        align="start",
        width="100%",
    )


def content() -> rx.Component:
    s = QuickstartState
    return rx.vstack(
        card(
            step(
                "1",
                "Your endpoint",
                rx.hstack(
                    rx.code(s.env["base_url"], size="3", data_testid="qs-base-url"),
                    copy_button(s.env["base_url"], test_id="copy-base-url"),
                    spacing="3",
                    align="center",
                ),
                rx.text(
                    "Environment ",
                    rx.text.strong(s.env["name"]),
                    " in ",
                    rx.text.strong(s.env["region"]),
                    ". Switch environments in the sidebar.",
                    size="2",
                    color_scheme="gray",
                ),
            ),
        ),
        card(
            step(
                "2",
                "An API key",
                rx.text("Create one on the API keys page and export it:", size="2", color_scheme="gray"),
                code_block("export CROSSLOGIC_API_KEY=clsk_…", "bash", test_id="qs-export"),
                rx.link(rx.button("Create a key", variant="soft", size="2"), href="/orgs/" + s.current_org + "/keys"),
            ),
        ),
        card(
            step(
                "3",
                "Call a model",
                rx.hstack(
                    rx.text("Model", size="2", weight="medium"),
                    rx.select(
                        s.env_models,
                        value=s.chosen_model,
                        on_change=s.set_model,
                        size="2",
                        aria_label="Model",
                        data_testid="qs-model",
                    ),
                    spacing="3",
                    align="center",
                ),
                rx.tabs.root(
                    rx.tabs.list(
                        rx.tabs.trigger("Python", value="python"),
                        rx.tabs.trigger("JavaScript", value="js"),
                        rx.tabs.trigger("curl", value="curl"),
                    ),
                    rx.tabs.content(
                        rx.box(code_block(s.python_snippet, "python", test_id="qs-python"), padding_top="0.75rem"),
                        value="python",
                    ),
                    rx.tabs.content(
                        rx.box(code_block(s.js_snippet, "javascript", test_id="qs-js"), padding_top="0.75rem"),
                        value="js",
                    ),
                    rx.tabs.content(
                        rx.box(code_block(s.curl_snippet, "bash", test_id="qs-curl"), padding_top="0.75rem"),
                        value="curl",
                    ),
                    default_value="python",
                    width="100%",
                ),
                rx.text(
                    "pip install openai · npm install openai — the official SDKs work unchanged.",
                    size="1",
                    color_scheme="gray",
                ),
            ),
        ),
        spacing="4",
        width="100%",
    )


def page() -> rx.Component:
    s = QuickstartState
    return signed_in_page(
        "quickstart",
        page_header("Quick start", "From zero to a completion in three steps."),
        error_callout(s.error),
        rx.cond(
            s.loading,
            loading_rows(3),
            rx.cond(
                s.current_env != "",
                content(),
                empty_state(
                    "rocket",
                    "Create an environment first",
                    "The quick start fills in your environment's endpoint and models.",
                    rx.link(rx.button("Create an environment"), href="/orgs/" + s.current_org + "/environments"),
                ),
            ),
        ),
    )
