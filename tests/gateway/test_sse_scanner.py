"""The SSE scanner that reads a node's stream as it is relayed: usage found, usage-only chunk dropped unless
asked for, generated chunks counted, [DONE] seen, and events split anywhere across reads."""

from __future__ import annotations

import orjson

from api.gateway.upstream import SSEScanner


def _event(payload: dict[str, object]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def _stream(words: list[str], *, usage_with_choices: bool = False, spaced: bool = False) -> tuple[bytes, bytes]:
    """(the whole stream, its usage-only event)"""
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    events = [_event({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})]
    events += [_event({**base, "choices": [{"index": 0, "delta": {"content": w}}], "usage": None}) for w in words]
    usage = {"prompt_tokens": 7, "completion_tokens": len(words), "total_tokens": 7 + len(words)}
    choices = [{"index": 0, "delta": {}, "finish_reason": "length"}] if usage_with_choices else []
    last = _event({**base, "choices": choices, "usage": usage})
    if spaced:
        last = last.replace(b'"usage":{', b'"usage": {')
    return b"".join(events) + last + b"data: [DONE]\n\n", last


def _scan(data: bytes, *, wants_usage: bool, piece: int) -> tuple[SSEScanner, bytes]:
    scanner = SSEScanner(client_wants_usage=wants_usage)
    out = b"".join(scanner.feed(data[i : i + piece]) for i in range(0, len(data), piece))
    return scanner, out + scanner.tail()


def test_usage_only_chunk_dropped_unless_asked_for_whatever_the_read_sizes() -> None:
    words = ["Hello", ' wor\\"usage\\":{ld', "!"]  # text that looks like a usage key, escaped in JSON
    data, usage_event = _stream(words)
    for piece in (len(data), 1, 7, 64, 500):
        for wants in (False, True):
            scanner, out = _scan(data, wants_usage=wants, piece=piece)
            assert scanner.done, piece
            assert scanner.chunks == 3, piece
            assert scanner.usage == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}, piece
            assert out == (data if wants else data.replace(usage_event, b"")), (piece, wants)


def test_usage_on_a_chunk_with_choices_is_relayed_and_spaced_json_is_read() -> None:
    data, _ = _stream(["a", "b"], usage_with_choices=True, spaced=True)
    scanner, out = _scan(data, wants_usage=False, piece=len(data))
    assert out == data
    assert scanner.usage is not None and scanner.usage["completion_tokens"] == 2
    assert scanner.chunks == 2 and scanner.done


def test_served_model_name_is_rewritten_and_an_unfinished_stream_is_not_done() -> None:
    data, _ = _stream(["x"])
    cut = data[: data.index(b"data: [DONE]")]
    scanner = SSEScanner(client_wants_usage=True, model_from=b'"model":"m"', model_to=b'"model":"llama"')
    out = scanner.feed(cut[:-5]) + scanner.feed(cut[-5:])
    assert b'"model":"m"' not in out and out.count(b'"model":"llama"') == 3
    assert not scanner.done and scanner.chunks == 1 and scanner.usage is not None
