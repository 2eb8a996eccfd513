"""Signed node calls: after registration, every call a node makes carries an HMAC signature.

The signature is HMAC-SHA256 under the node's secret over ``METHOD\\nPATH\\nTIMESTAMP\\nNONCE\\nsha256(BODY)``.
The control plane refuses a timestamp more than ``MAX_SKEW_S`` away from its clock and a nonce it has
seen (nonces are remembered for twice the skew), so a captured call cannot be replayed.

A node's secret is derived from the server's ``CIC_SECRET_KEY`` and the node id, so it is never stored:
the control plane recomputes it to verify, and rotating the secret key re-keys every node.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Protocol

import redis

MAX_SKEW_S = 60
H_NODE, H_TS, H_NONCE, H_SIG = "x-cic-node", "x-cic-timestamp", "x-cic-nonce", "x-cic-signature"


class SignatureError(Exception):
    """Why a node call was refused (logged in the audit log, never sent to the caller in detail)."""


def node_secret(secret_key: str, node_id: str) -> str:
    return hmac.new(secret_key.encode(), f"cic-node-secret:{node_id}".encode(), hashlib.sha256).hexdigest()


def _message(method: str, path: str, ts: str, nonce: str, body: bytes) -> bytes:
    return f"{method.upper()}\n{path}\n{ts}\n{nonce}\n{hashlib.sha256(body).hexdigest()}".encode()


def sign(
    secret: str, method: str, path: str, body: bytes, *, ts: int | None = None, nonce: str | None = None, node_id: str
) -> dict[str, str]:
    ts_s = str(int(time.time()) if ts is None else ts)
    nonce = nonce or os.urandom(16).hex()
    sig = hmac.new(secret.encode(), _message(method, path, ts_s, nonce, body), hashlib.sha256).hexdigest()
    return {H_NODE: node_id, H_TS: ts_s, H_NONCE: nonce, H_SIG: sig}


class NonceStore(Protocol):
    def first_use(self, nonce: str, ttl_s: int) -> bool: ...


class MemoryNonces:
    """Single-process nonce memory (no Redis), bounded."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()
        self._max = max_entries

    def first_use(self, nonce: str, ttl_s: int) -> bool:
        now = time.monotonic()
        with self._lock:
            while self._seen and (next(iter(self._seen.values())) < now or len(self._seen) > self._max):
                self._seen.popitem(last=False)
            if nonce in self._seen:
                return False
            self._seen[nonce] = now + ttl_s
            return True


class RedisNonces:
    def __init__(self, client: redis.Redis) -> None:
        self._client = client

    def first_use(self, nonce: str, ttl_s: int) -> bool:
        return bool(self._client.set(f"cic:node-nonce:{nonce}", b"1", nx=True, ex=ttl_s))


def verify(
    secret_key: str,
    node_id: str,
    method: str,
    path: str,
    body: bytes,
    headers: Mapping[str, str],
    nonces: NonceStore,
    *,
    now: float | None = None,
) -> None:
    """Raise ``SignatureError`` unless the call is signed by ``node_id``, fresh, and not seen before."""
    try:
        claimed, ts, nonce, sig = headers[H_NODE], headers[H_TS], headers[H_NONCE], headers[H_SIG]
    except KeyError as exc:
        raise SignatureError(f"unsigned call (missing {exc.args[0]})") from None
    if claimed != node_id:
        raise SignatureError("signed for another node")
    try:
        age = (time.time() if now is None else now) - int(ts)
    except ValueError:
        raise SignatureError("malformed timestamp") from None
    if abs(age) > MAX_SKEW_S:
        raise SignatureError(f"stale timestamp ({age:.0f} s off)")
    if not (8 <= len(nonce) <= 64):
        raise SignatureError("malformed nonce")
    expected = hmac.new(
        node_secret(secret_key, node_id).encode(), _message(method, path, ts, nonce, body), hashlib.sha256
    ).hexdigest()
    if not hmac.compare_digest(expected, sig):
        raise SignatureError("bad signature")
    if not nonces.first_use(f"{node_id}:{nonce}", 2 * MAX_SKEW_S):
        raise SignatureError("replayed nonce")
