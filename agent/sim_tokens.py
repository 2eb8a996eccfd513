"""The vLLM simulator's token model: deterministic, simple and self-consistent.

Tests elsewhere import these functions to compute the counts the simulator will report.

* **Text tokens** (`count_text_tokens`): split the text on whitespace; every piece counts one token per
  maximal run of alphanumeric characters (``str.isalnum``) plus one per maximal run of other characters.
  ``"Hello, world!"`` is 4 tokens (``Hello`` ``,`` ``world`` ``!``); ``""`` is 0.
* **Chat prompt** (`chat_prompt_tokens`): for every message, the tokens of its content plus
  `CHAT_MESSAGE_OVERHEAD` (4, the role markers of a chat template), plus `CHAT_TEMPLATE_OVERHEAD` (2) once.
  Content may be a string, ``None`` (0 tokens) or a list of parts, of which the ``{"type": "text"}`` parts count.
* **Completion prompt** (`completion_prompt_tokens`): the text tokens of the prompt; a prompt given as token ids
  (a list of ints) is as many tokens as ids.
* **Generated text** (`generated_text`): N tokens, the words of `VOCABULARY` in a cycle, each emitted as
  ``" word"``, so ``count_text_tokens(generated_text(n)) == n``. Streaming emits `token_piece(i)` for
  ``i in range(n)``, one per chunk.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

CHAT_MESSAGE_OVERHEAD: Final = 4
CHAT_TEMPLATE_OVERHEAD: Final = 2

VOCABULARY: Final[tuple[str, ...]] = (
    "the", "model", "answers", "quickly", "with", "simulated", "tokens", "from", "a", "small",
    "fixed", "vocabulary", "so", "every", "count", "stays", "exact", "and", "each", "word",
    "is", "one", "token", "in", "this", "deterministic", "stream", "of", "plain", "text",
    "for", "tests",
)  # fmt: skip

_PIECES: Final[tuple[str, ...]] = tuple(" " + w for w in VOCABULARY)
_CYCLE: Final = "".join(_PIECES)
_PARTIAL: Final[tuple[str, ...]] = tuple("".join(_PIECES[:k]) for k in range(len(_PIECES)))


def count_text_tokens(text: str) -> int:
    """Tokens in ``text``: per whitespace-separated piece, one per alphanumeric run and one per other run."""
    n = 0
    for piece in text.split():
        if piece.isalnum():
            n += 1
            continue
        previous: bool | None = None
        for ch in piece:
            kind = ch.isalnum()
            if kind is not previous:
                n += 1
                previous = kind
    return n


def content_text(content: Any) -> str:
    """The text of a chat message's content: a string, ``None``, or the ``text`` parts of a list, newline-joined."""
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    if isinstance(content, list):
        return "\n".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
        )
    raise TypeError("message content must be a string, a list of content parts or null")


def chat_prompt_tokens(messages: Iterable[Mapping[str, Any]]) -> int:
    """Prompt tokens of a chat request: sum of (content tokens + 4) over the messages, plus 2."""
    total = CHAT_TEMPLATE_OVERHEAD
    for message in messages:
        total += count_text_tokens(content_text(message.get("content"))) + CHAT_MESSAGE_OVERHEAD
    return total


def completion_prompt_tokens(prompt: str | Sequence[int]) -> int:
    """Prompt tokens of one completion prompt: its text tokens, or the number of token ids."""
    if isinstance(prompt, str):
        return count_text_tokens(prompt)
    return len(prompt)


def token_piece(i: int) -> str:
    """The text of generated token ``i`` (0-based): ``" " + VOCABULARY[i % len(VOCABULARY)]``."""
    return _PIECES[i % len(_PIECES)]


def generated_text(n: int) -> str:
    """The text of ``n`` generated tokens; ``count_text_tokens(generated_text(n)) == n``."""
    full, rest = divmod(n, len(_PIECES))
    return _CYCLE * full + _PARTIAL[rest]
