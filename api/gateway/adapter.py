"""LiteLLM as the request adapter for nodes that do not speak OpenAI's protocol natively.

A node whose ``engine`` is a LiteLLM provider (``anthropic``, ``cohere``, ``ollama_chat``, …) — an
overflow to a hosted provider, say — is called through ``litellm.acompletion`` / ``atext_completion`` /
``aembedding``, and its answer is turned back into OpenAI's shapes, streams included. LiteLLM costs
milliseconds of CPU per call, so OpenAI-native nodes never take this path, and LiteLLM is imported
only when the first such request arrives.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from api.gateway.calls import Call
from api.gateway.protocol import OpenAIError
from api.gateway.registry import NodeView
from api.gateway.upstream import UpstreamFailure

Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

# Fields of ours that must not be passed to LiteLLM as provider parameters.
_OWN_FIELDS = {"model", "stream", "stream_options", "messages", "prompt", "input"}


def _litellm() -> Any:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.drop_params = True  # a provider that lacks a sampling parameter ignores it instead of failing
    litellm.telemetry = False
    return litellm


class LiteLLMAdapter:
    def __init__(self) -> None:
        self._lib: Any = None

    @property
    def lib(self) -> Any:
        if self._lib is None:
            self._lib = _litellm()
        return self._lib

    async def forward(
        self, send: Send, call: Call, node: NodeView, tail: str, req: Any, headers: list[tuple[bytes, bytes]]
    ) -> None:
        lib = self.lib
        params = {k: v for k, v in req.model_dump(exclude_none=True).items() if k not in _OWN_FIELDS}
        common: dict[str, Any] = {
            "model": f"{node.engine}/{node.served_model}",
            "api_base": node.base_url,
            "api_key": os.environ.get(node.api_key_env) if node.api_key_env else None,
            "num_retries": 0,
        }
        try:
            if tail == "embeddings":
                result = await lib.aembedding(input=req.input, **common, **params)
            elif tail == "chat/completions":
                messages = [m.model_dump(exclude_none=True) for m in req.messages]
                result = await lib.acompletion(
                    messages=messages, stream=call.stream, **self._stream_opts(call), **common, **params
                )
            else:
                result = await lib.atext_completion(
                    prompt=req.prompt, stream=call.stream, **self._stream_opts(call), **common, **params
                )
        except Exception as exc:
            raise self._map(exc) from exc
        if call.stream:
            await self._relay_stream(send, call, result, headers)
        else:
            data = result.model_dump()
            data["model"] = call.model
            call.mark_first_byte()
            call.take_usage(data.get("usage"))
            body = orjson.dumps(data)
            call.response_started = True
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [*headers, (b"content-length", str(len(body)).encode())],
                }
            )
            await send({"type": "http.response.body", "body": body})

    @staticmethod
    def _stream_opts(call: Call) -> dict[str, Any]:
        return {"stream_options": {"include_usage": True}} if call.stream else {}

    async def _relay_stream(self, send: Send, call: Call, stream: Any, headers: list[tuple[bytes, bytes]]) -> None:
        sse_headers = [(k, v) for k, v in headers if k != b"content-type"]
        sse_headers += [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]
        chunks = 0
        try:
            async for chunk in stream:
                data = chunk.model_dump(exclude_none=True)
                data["model"] = call.model
                usage = data.pop("usage", None)
                if usage:
                    call.take_usage(usage)
                choices = data.get("choices") or []
                if any((c.get("delta") or {}).get("content") or c.get("text") for c in choices):
                    chunks += 1
                if not call.response_started:
                    call.mark_first_byte()
                    call.response_started = True
                    await send({"type": "http.response.start", "status": 200, "headers": sse_headers})
                if choices:
                    await send(
                        {
                            "type": "http.response.body",
                            "body": b"data: " + orjson.dumps(data) + b"\n\n",
                            "more_body": True,
                        }
                    )
        except Exception as exc:
            if not call.response_started:
                raise self._map(exc) from exc
            call.fail(502, "upstream_stream_broken")
        finally:
            if not call.usage_exact:
                call.completion_tokens = chunks
        if not call.response_started:
            call.response_started = True
            await send({"type": "http.response.start", "status": 200, "headers": sse_headers})
        tail = b""
        if call.client_wants_usage and call.usage_exact:
            usage_chunk = {
                "id": f"chatcmpl-{call.request_id}",
                "object": "chat.completion.chunk",
                "model": call.model,
                "choices": [],
                "usage": {
                    "prompt_tokens": call.prompt_tokens,
                    "completion_tokens": call.completion_tokens,
                    "total_tokens": call.prompt_tokens + call.completion_tokens,
                },
            }
            tail = b"data: " + orjson.dumps(usage_chunk) + b"\n\n"
        await send({"type": "http.response.body", "body": tail + b"data: [DONE]\n\n", "more_body": False})

    def _map(self, exc: Exception) -> Exception:
        """LiteLLM's exceptions to ours: retryable node trouble, or the provider's verdict on the request."""
        lib = self.lib
        retryable = (lib.APIConnectionError, lib.Timeout, lib.ServiceUnavailableError, lib.InternalServerError)
        if isinstance(exc, retryable):
            return UpstreamFailure(f"{type(exc).__name__}: {exc}"[:300])
        status = getattr(exc, "status_code", None)
        if isinstance(status, int) and 400 <= status < 500:
            kind = {
                401: "authentication_error",
                403: "permission_error",
                404: "invalid_request_error",
                429: "rate_limit_error",
            }.get(status, "invalid_request_error")
            if status in (401, 403):
                # The provider refused *our* credentials: the customer's request is fine.
                return UpstreamFailure(f"provider refused credentials ({status})")
            return OpenAIError(status, str(getattr(exc, "message", exc))[:1000], kind)
        return UpstreamFailure(f"{type(exc).__name__}: {exc}"[:300])
