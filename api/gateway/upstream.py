"""Forwarding to OpenAI-native nodes (vLLM, SGLang, any OpenAI-compatible server).

Keep-alive connections per node through the gateway's own HTTP/1.1 client (``api/gateway/h1.py``).
The request body goes out as the client sent it, except that a streamed request always asks for
``stream_options.include_usage`` (so metering gets exact counts) and a node that serves the model under
another name gets that name. A node registered with ``api_key_env`` gets ``Authorization: Bearer`` with
the key read from that environment variable.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from api.gateway.h1 import H1Pool, Response
from api.gateway.registry import NodeView


class UpstreamFailure(Exception):
    """The node could not be used (connection refused/reset, timeout, 5xx) before any byte reached the client."""

    def __init__(self, reason: str, status: int | None = None, body: bytes = b"") -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.body = body


@dataclass(frozen=True)
class Timeouts:
    connect_s: float = 3.0
    first_byte_s: float = 600.0  # a long generation is legitimate; also the longest wait between two chunks


class UpstreamPool:
    def __init__(self, timeouts: Timeouts | None = None) -> None:
        self.timeouts = timeouts or Timeouts()
        self._h1 = H1Pool(connect_timeout=self.timeouts.connect_s, read_timeout=self.timeouts.first_byte_s)

    async def open(
        self, node: NodeView, path: str, body: bytes, confirm: Callable[[], Awaitable[None]] | None = None
    ) -> Response:
        """POST and wait for the status line; raise ``UpstreamFailure`` on anything worth a retry elsewhere.
        ``confirm`` is awaited once the request is written, before the status line (see ``H1Pool.post``)."""
        try:
            resp = await self._h1.post(node.base_url, path, body, _auth_header(node.api_key_env), confirm)
        except (OSError, TimeoutError, ValueError) as exc:
            raise UpstreamFailure(f"{type(exc).__name__}: {exc}") from exc
        if resp.status >= 500:
            try:
                payload = await resp.read()
            except (OSError, TimeoutError):
                payload = b""
            resp.release()
            raise UpstreamFailure(f"HTTP {resp.status}", resp.status, payload)
        return resp

    async def close(self) -> None:
        await self._h1.close()


def _auth_header(env: str) -> bytes:
    if not env:
        return b""
    key = (os.environ.get(env) or "").strip()
    if not key or not key.isprintable():
        return b""
    return f"Authorization: Bearer {key}\r\n".encode()


def prepare_body(raw: bytes, parsed: dict[str, Any] | None, *, stream: bool, served_model: str, model: str) -> bytes:
    """The body to send upstream: the client's bytes untouched unless usage or the model name must change."""
    needs_usage = stream
    rename = served_model != model
    if not needs_usage and not rename:
        return raw
    if needs_usage and not rename and parsed is None and b'"stream_options"' not in raw:
        # The usual stream: no stream_options at all. The body is a JSON object (it was validated), so the
        # option goes in before its closing brace, without parsing and re-encoding the whole prompt.
        end = raw.rfind(b"}")
        if end > 0:
            return raw[:end] + b',"stream_options":{"include_usage":true}' + raw[end:]
    data = parsed if parsed is not None else orjson.loads(raw)
    if needs_usage:
        opts = data.get("stream_options") or {}
        if opts.get("include_usage") is not True:
            data["stream_options"] = {**opts, "include_usage": True}
        elif not rename:
            return raw
    if rename:
        data["model"] = served_model
    return orjson.dumps(data)


class SSEScanner:
    """Reads an OpenAI SSE stream as it passes: finds the usage chunk, counts generated chunks,
    and drops the usage chunk when the client did not ask for it. Works on whole events only."""

    __slots__ = ("_buf", "chunks", "client_wants_usage", "done", "model_from", "model_to", "usage")

    def __init__(self, *, client_wants_usage: bool, model_from: bytes = b"", model_to: bytes = b"") -> None:
        self._buf = b""
        self.client_wants_usage = client_wants_usage
        self.usage: dict[str, Any] | None = None
        self.chunks = 0
        self.done = False
        self.model_from = model_from
        self.model_to = model_to

    def feed(self, data: bytes) -> bytes:
        """Returns what can go to the client now (complete events)."""
        buf = self._buf + data if self._buf else data
        end = buf.rfind(b"\n\n")
        if end < 0:
            self._buf = buf
            return b""
        complete, self._buf = buf[: end + 2], buf[end + 2 :]
        if self.model_from:
            complete = complete.replace(self.model_from, self.model_to)
        if b"data: [DONE]" in complete:
            self.done = True
        # Counted over the whole piece: a usage-only chunk has no choices, so no content to count.
        self.chunks += _content_chunks(complete)
        # Only the events that carry a usage object are looked at one by one (a JSON string cannot hold
        # the bytes '"usage":{': its quotes would be escaped).
        at = _find_usage(complete, 0)
        if at < 0:
            return complete
        kept: list[bytes] = []
        copied = 0  # how much of `complete` is in `kept` or dropped
        while at >= 0:
            before = complete.rfind(b"\n\n", 0, at)
            start = 0 if before < 0 else before + 2
            stop = complete.find(b"\n\n", at) + 2
            event = complete[start:stop]
            brace = event.find(b"{")
            try:
                payload = orjson.loads(event[brace:]) if brace >= 0 else {}
            except orjson.JSONDecodeError:
                payload = {}
            if not isinstance(payload, dict):
                payload = {}
            if isinstance(payload.get("usage"), dict):
                self.usage = payload["usage"]
            if not payload.get("choices") and not self.client_wants_usage:
                kept.append(complete[copied:start])  # the usage-only chunk the client did not ask for
                copied = stop
            at = _find_usage(complete, stop)
        if not copied:
            return complete
        kept.append(complete[copied:])
        return b"".join(kept)

    def tail(self) -> bytes:
        rest, self._buf = self._buf, b""
        return rest


def _find_usage(events: bytes, start: int) -> int:
    """Where the next usage object begins (compact or spaced JSON), or -1."""
    compact = events.find(b'"usage":{', start)
    spaced = events.find(b'"usage": {', start)
    if compact < 0 or 0 <= spaced < compact:
        return spaced
    return compact


def _content_chunks(events: bytes) -> int:
    """Chunks that carried generated text (the role-only opening chunk and empty deltas excluded)."""
    return (
        events.count(b'"content":"')
        - events.count(b'"content":""')
        + events.count(b'"text":"')
        - events.count(b'"text":""')
    )
