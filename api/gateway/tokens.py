"""Prompt-size checks against a model's context length, cheap in the common case.

A byte-level BPE token is at least one byte, so a prompt whose UTF-8 size plus the requested output
fits the context certainly fits, and nothing is counted (the hot path). Only a prompt that might not
fit is counted, with the model's tokenizer where one is available offline (tiktoken's cl100k, shipped
with LiteLLM, stands in for the catalog's open models), else an estimate of 4 bytes per token.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from api.gateway.protocol import OpenAIError

log = logging.getLogger(__name__)

TEMPLATE_TOKENS_PER_MESSAGE = 8


@lru_cache(maxsize=1)
def _encoder() -> Any:
    try:
        spec = importlib.util.find_spec("litellm")  # its tokenizer files, without importing LiteLLM itself
        if spec is not None and spec.origin:
            bundled = Path(spec.origin).parent / "litellm_core_utils" / "tokenizers"
            os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(bundled))
        import tiktoken

        return tiktoken.get_encoding("cl100k_base")
    except Exception as exc:  # noqa: BLE001 - any failure means: estimate instead
        log.warning("no offline tokenizer, estimating prompt sizes: %s", exc)
        return None


def count_tokens(text: str) -> int:
    enc = _encoder()
    if enc is None:
        return (len(text.encode()) + 3) // 4
    return len(enc.encode(text, disallowed_special=()))


def estimate_prompt_tokens(text: str, messages: int = 0) -> int:
    return count_tokens(text) + messages * TEMPLATE_TOKENS_PER_MESSAGE


def check_context(text: str, messages: int, max_output: int | None, context_length: int) -> None:
    """Raise OpenAI's ``context_length_exceeded`` when prompt plus requested output cannot fit."""
    out = max_output or 0
    upper = len(text.encode()) + messages * TEMPLATE_TOKENS_PER_MESSAGE
    if upper + out <= context_length:
        return
    prompt = estimate_prompt_tokens(text, messages)
    if prompt + out > context_length:
        raise OpenAIError(
            400,
            f"This model's maximum context length is {context_length} tokens. However, you requested "
            f"{prompt + out} tokens ({prompt} in the messages, {out} in the completion). Please reduce the "
            "length of the messages or completion.",
            "invalid_request_error",
            param="messages",
            code="context_length_exceeded",
        )
