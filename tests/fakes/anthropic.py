"""A local stand-in for Anthropic's Messages API (``POST /v1/messages``), speaking its wire format:
JSON messages, ``x-api-key`` auth, Anthropic's error body, and its SSE event sequence when streaming."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

API_KEY = "sk-ant-test-key"
WORDS = ["Bonjour", "from", "the", "overflow", "provider", "today"]


@dataclass
class FakeAnthropic:
    requests: list[dict[str, Any]] = field(default_factory=list)
    fail_with: int | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/messages", self.messages)
        return app

    @staticmethod
    def _error(status: int, kind: str, message: str) -> web.Response:
        return web.json_response({"type": "error", "error": {"type": kind, "message": message}}, status=status)

    async def messages(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("x-api-key") != API_KEY:
            return self._error(401, "authentication_error", "invalid x-api-key")
        if "anthropic-version" not in request.headers:
            return self._error(400, "invalid_request_error", "anthropic-version header is required")
        body = await request.json()
        self.requests.append(body)
        if self.fail_with:
            return self._error(self.fail_with, "api_error", "overloaded")
        max_tokens = int(body["max_tokens"])
        words = [WORDS[i % len(WORDS)] for i in range(min(max_tokens, 5))]
        input_tokens = sum(len(_text(m.get("content")).split()) for m in body["messages"]) + 3
        stop = "max_tokens" if len(words) == max_tokens else "end_turn"
        if not body.get("stream"):
            return web.json_response(
                {
                    "id": "msg_01",
                    "type": "message",
                    "role": "assistant",
                    "model": body["model"],
                    "content": [{"type": "text", "text": " ".join(words)}],
                    "stop_reason": stop,
                    "stop_sequence": None,
                    "usage": {"input_tokens": input_tokens, "output_tokens": len(words)},
                }
            )
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)

        async def event(name: str, data: dict[str, Any]) -> None:
            await resp.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())

        await event(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_02",
                    "type": "message",
                    "role": "assistant",
                    "model": body["model"],
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": input_tokens, "output_tokens": 1},
                },
            },
        )
        await event(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        )
        for i, w in enumerate(words):
            await event(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": (" " if i else "") + w},
                },
            )
        await event("content_block_stop", {"type": "content_block_stop", "index": 0})
        await event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": len(words)},
            },
        )
        await event("message_stop", {"type": "message_stop"})
        await resp.write_eof()
        return resp


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return " ".join(p.get("text", "") for p in content or [] if isinstance(p, dict))
