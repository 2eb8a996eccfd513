"""Deterministic embeddings for the vLLM simulator.

`embed_text` turns a text into a unit-norm vector: SHAKE-256 of the UTF-8 text gives ``2 * dim`` bytes, read as
little-endian int16 values, scaled and normalised. The same text always gives the same vector, in any process.
`encode_base64` is vLLM's ``encoding_format: "base64"``: the vector as little-endian float32, base64-encoded.
"""

from __future__ import annotations

import base64
import hashlib
import math
import sys
from array import array
from collections.abc import Sequence


def embed_text(text: str, dim: int = 384) -> list[float]:
    """A unit-norm vector of ``dim`` floats derived from a hash of ``text``."""
    raw = array("h", hashlib.shake_256(text.encode("utf-8")).digest(2 * dim))
    if sys.byteorder == "big":
        raw.byteswap()
    norm = math.hypot(*raw)
    if norm == 0.0:  # pragma: no cover - a digest of zeros
        return [1.0] + [0.0] * (dim - 1)
    scale = 1.0 / norm
    return [x * scale for x in raw]


def embed_tokens(token_ids: Sequence[int], dim: int = 384) -> list[float]:
    """The vector of a prompt given as token ids (hashed as their comma-joined decimal text)."""
    return embed_text(",".join(map(str, token_ids)), dim)


def encode_base64(vector: Sequence[float]) -> str:
    """Little-endian float32 bytes of ``vector``, base64-encoded (what vLLM returns for ``"base64"``)."""
    packed = array("f", vector)
    if sys.byteorder == "big":
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode("ascii")
