"""The body sent to a node: the client's bytes, with usage asked for on streams and the node's model name."""

from __future__ import annotations

import orjson
import pytest

from api.gateway.upstream import prepare_body

MESSAGES = [{"role": "user", "content": 'Say "hi" \u00e9\u4e2d {"stream_options": 1}'}]


@pytest.mark.parametrize(
    "body",
    [
        {"model": "m", "messages": MESSAGES, "stream": True},
        {"model": "m", "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": False}},
        {"model": "m", "messages": MESSAGES, "stream": True, "stream_options": {"continuous_usage_stats": True}},
        {"model": "m", "messages": [{"role": "user", "content": '"stream_options"'}], "stream": True},
    ],
)
@pytest.mark.parametrize("indent", [False, True])
def test_a_stream_always_asks_for_usage_and_keeps_everything_else(body: dict[str, object], indent: bool) -> None:
    raw = orjson.dumps(body, option=orjson.OPT_INDENT_2 if indent else 0) + (b"\n" if indent else b"")
    sent = orjson.loads(prepare_body(raw, None, stream=True, served_model="m", model="m"))
    opts = body.get("stream_options") or {}
    assert isinstance(opts, dict)
    assert sent == {**body, "stream_options": {**opts, "include_usage": True}}


def test_untouched_unless_needed_and_renamed_for_the_node() -> None:
    raw = orjson.dumps({"model": "m", "messages": MESSAGES})
    assert prepare_body(raw, None, stream=False, served_model="m", model="m") is raw
    asked = orjson.dumps(
        {"model": "m", "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}}
    )
    assert prepare_body(asked, None, stream=True, served_model="m", model="m") is asked
    renamed = orjson.loads(prepare_body(raw, None, stream=True, served_model="org/m-instruct", model="m"))
    assert renamed["model"] == "org/m-instruct" and renamed["stream_options"] == {"include_usage": True}
