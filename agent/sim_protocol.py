"""vLLM's OpenAI-compatible wire shapes, built as bytes (orjson and precomputed fragments, no models).

Shapes follow vLLM's ``entrypoints/openai`` serving code:

* errors: ``{"error": {"message", "type", "param", "code"}}`` with ``code`` the HTTP status (an int) and ``type``
  ``BadRequestError`` / ``NotFoundError`` / ``InternalServerError``;
* usage: ``{"prompt_tokens", "total_tokens", "completion_tokens", "prompt_tokens_details"}`` where the details are
  ``null`` or ``{"cached_tokens": n}``;
* stream chunks are dumped with ``exclude_unset``: no ``usage`` key unless ``continuous_usage_stats`` is asked;
  the chat stream opens with ``delta: {"role": "assistant", "content": ""}``; each generated token is one chunk,
  and the last token's chunk carries ``finish_reason`` (and ``stop_reason: null``); with ``include_usage`` a chunk
  with ``"choices": []`` and the usage (``null`` fields dropped) follows; then ``data: [DONE]``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any, Final

import orjson

from agent.sim_tokens import VOCABULARY, generated_text, token_piece

SSE_DONE: Final = b"data: [DONE]\n\n"
_PIECES_B: Final[tuple[bytes, ...]] = tuple(token_piece(i).encode() for i in range(len(VOCABULARY)))
# The common event tail (choice 0, not the last token, no continuous usage), per vocabulary word.
_CHAT_TAILS: Final = tuple(
    b'{"index":0,"delta":{"content":"' + p + b'"},"logprobs":null,"finish_reason":null}]}\n\n' for p in _PIECES_B
)
_TEXT_TAILS: Final = tuple(
    b'{"index":0,"text":"' + p + b'","logprobs":null,"finish_reason":null,"stop_reason":null}]}\n\n' for p in _PIECES_B
)


def request_id() -> str:
    return uuid.uuid4().hex


def error_body(message: str, err_type: str = "BadRequestError", code: int = 400, param: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": err_type, "param": param, "code": code}})


def usage(prompt: int, completion: int, cached: int | None = None) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "total_tokens": prompt + completion,
        "completion_tokens": completion,
        "prompt_tokens_details": None if cached is None else {"cached_tokens": cached},
    }


def _compact(obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` without its ``None`` values (vLLM dumps the final usage chunk with ``exclude_none``)."""
    return {k: v for k, v in obj.items() if v is not None}


def chat_completion(rid: str, created: int, model: str, text: str, finish: str, use: dict[str, Any]) -> bytes:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": text,
        "refusal": None,
        "annotations": None,
        "audio": None,
        "function_call": None,
        "tool_calls": [],
        "reasoning_content": None,
    }
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish, "stop_reason": None}
    return orjson.dumps(
        {
            "id": f"chatcmpl-{rid}",
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [choice],
            "service_tier": None,
            "system_fingerprint": None,
            "usage": use,
            "prompt_logprobs": None,
            "kv_transfer_params": None,
        }
    )


def text_completion(rid: str, created: int, model: str, outputs: list[tuple[int, str]], use: dict[str, Any]) -> bytes:
    """A ``text_completion``; ``outputs`` is one ``(tokens, finish_reason)`` per prompt."""
    choices = [
        {
            "index": i,
            "text": generated_text(n),
            "logprobs": None,
            "finish_reason": finish,
            "stop_reason": None,
            "prompt_logprobs": None,
        }
        for i, (n, finish) in enumerate(outputs)
    ]
    return orjson.dumps(
        {
            "id": f"cmpl-{rid}",
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": choices,
            "service_tier": None,
            "system_fingerprint": None,
            "usage": use,
            "kv_transfer_params": None,
        }
    )


def embedding_list(rid: str, created: int, model: str, vectors: list[Any], use: dict[str, Any]) -> bytes:
    data = [{"index": i, "object": "embedding", "embedding": v} for i, v in enumerate(vectors)]
    return orjson.dumps(
        {"id": f"embd-{rid}", "object": "list", "created": created, "model": model, "data": data, "usage": use}
    )


def model_list(model: str, max_model_len: int, created: int) -> bytes:
    permission = {
        "id": f"modelperm-{request_id()}",
        "object": "model_permission",
        "created": created,
        "allow_create_engine": False,
        "allow_sampling": True,
        "allow_logprobs": True,
        "allow_search_indices": False,
        "allow_view": True,
        "allow_fine_tuning": False,
        "organization": "*",
        "group": None,
        "is_blocking": False,
    }
    card = {
        "id": model,
        "object": "model",
        "created": created,
        "owned_by": "vllm",
        "root": model,
        "parent": None,
        "max_model_len": max_model_len,
        "permission": [permission],
    }
    return orjson.dumps({"object": "list", "data": [card]})


class StreamChunks:
    """The SSE events of one streamed generation, built from byte fragments.

    ``chat=True`` gives ``chat.completion.chunk`` events (role chunk first), else ``text_completion`` events.
    ``continuous`` adds the running usage to every chunk (vLLM's ``continuous_usage_stats``).
    """

    def __init__(self, *, chat: bool, rid: str, created: int, model: str, continuous: bool = False) -> None:
        ident = (b"chatcmpl-" if chat else b"cmpl-") + rid.encode()
        obj = b"chat.completion.chunk" if chat else b"text_completion"
        self._head = (
            b"".join(
                (b'data: {"id":"', ident, b'","object":"', obj, b'","created":', str(created).encode(), b',"model":')
            )
            + orjson.dumps(model)
            + b',"choices":['
        )
        self._delta = b',"delta":{"content":"' if chat else b',"text":"'
        self._delta_end = b'"}' if chat else b'"'
        self._unfinished = (
            b',"logprobs":null,"finish_reason":null}'
            if chat
            else b',"logprobs":null,"finish_reason":null,"stop_reason":null}'
        )
        self.continuous = continuous
        self._tails = _CHAT_TAILS if chat else _TEXT_TAILS

    def _close(self, prompt: int, completion: int) -> bytes:
        if not self.continuous:
            return b"]}\n\n"
        return b'],"usage":' + orjson.dumps(_compact(usage(prompt, completion))) + b"}\n\n"

    def role(self, prompt: int) -> bytes:
        """The chat stream's first event: the assistant role with empty content."""
        return (
            self._head
            + b'{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}'
            + self._close(prompt, 0)
        )

    def token(self, i: int, *, index: int = 0, prompt: int = 0, finish: str | None = None) -> bytes:
        """The event of generated token ``i`` of choice ``index``; ``finish`` is set on the last token."""
        if finish is None and index == 0 and not self.continuous:
            return self._head + self._tails[i % len(self._tails)]
        if finish is not None:
            finish_part = b',"logprobs":null,"finish_reason":"' + finish.encode() + b'","stop_reason":null}'
        else:  # vLLM sets stop_reason on every completion chunk, on the last chat chunk only
            finish_part = self._unfinished
        return b"".join(
            (
                self._head,
                b'{"index":',
                str(index).encode(),
                self._delta,
                _PIECES_B[i % len(_PIECES_B)],
                self._delta_end,
                finish_part,
                self._close(prompt, i + 1),
            )
        )

    def usage(self, use: dict[str, Any]) -> bytes:
        """The final ``"choices": []`` event with the request's usage (``null`` fields dropped)."""
        return self._head + b'],"usage":' + orjson.dumps(_compact(use)) + b"}\n\n"

    def generation(self, n: int, finish: str, *, index: int = 0, prompt: int = 0) -> Iterator[bytes]:
        """The events of ``n`` generated tokens, the last one with ``finish``."""
        last = n - 1
        for i in range(n):
            yield self.token(i, index=index, prompt=prompt, finish=finish if i == last else None)


def now() -> int:
    return int(time.time())
