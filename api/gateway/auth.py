"""API-key authentication for the data plane: an in-process cache in front of the database.

- Lookups are by HMAC of the presented key; a hit costs one hash and one dict lookup.
- Entries live ``ttl_s`` (60 s with Redis, 1 s without). With Redis, every change to a key or its
  environment is published after commit (``cic.events``) and each worker drops the affected entries
  as the message arrives, so a revocation holds everywhere within a second; if the subscription breaks,
  the cache is emptied and the short TTL applies until it is back.
- Expiry and the end of a rotation's grace period are checked on every request from the cached entry.
- Concurrent misses for one key share one database read; unknown keys are remembered briefly so a
  flood of bad keys does not become a flood of queries.
- ``last_used_at`` is kept in memory and written in one batch every few seconds, never per request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import bindparam, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col

from api.gateway.protocol import OpenAIError
from cic import security
from cic.errors import AuthenticationError
from cic.events import Invalidation
from cic.models import ApiKey
from cic.services.keys import KeyIdentity, identity_by_hash

log = logging.getLogger(__name__)

NEGATIVE_TTL_S = 2.0
MAX_ENTRIES = 200_000


def unauthorized(message: str = "Incorrect API key provided.") -> OpenAIError:
    return OpenAIError(401, message, "invalid_request_error", code="invalid_api_key")


@dataclass(slots=True)
class _Entry:
    identity: KeyIdentity | None  # None: known bad
    message: str
    fetched: float
    valid_until: float  # epoch seconds; inf when the key has no end


class KeyCache:
    def __init__(self, engine: Engine, pepper: str, *, ttl_s: float) -> None:
        self._engine = engine
        self._pepper = pepper
        self.ttl_s = ttl_s
        self.base_ttl_s = ttl_s
        self._entries: dict[str, _Entry] = {}
        self._loading: dict[str, asyncio.Future[_Entry]] = {}
        self._used: dict[str, float] = {}
        self.hits = 0
        self.misses = 0

    async def authenticate(self, authorization: str | None) -> KeyIdentity:
        if not authorization:
            raise unauthorized(
                "You didn't provide an API key. You need to provide your API key in an Authorization header using "
                "Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
            )
        scheme, _, plaintext = authorization.partition(" ")
        plaintext = plaintext.strip()
        if scheme.lower() != "bearer" or not security.looks_like_api_key(plaintext):
            raise unauthorized()
        key_hash = security.hash_secret(self._pepper, plaintext)
        now_m = time.monotonic()
        entry = self._entries.get(key_hash)
        ttl = self.ttl_s if entry is None or entry.identity is not None else NEGATIVE_TTL_S
        if entry is None or now_m - entry.fetched > ttl:
            self.misses += 1
            entry = await self._load(key_hash)
        else:
            self.hits += 1
        if entry.identity is None:
            raise unauthorized(entry.message)
        now = time.time()
        if now >= entry.valid_until:
            self._entries.pop(key_hash, None)
            raise unauthorized(
                "This API key has expired." if entry.identity.revoked_at is None else "This API key is revoked."
            )
        self._used[entry.identity.key_id] = now
        return entry.identity

    async def _load(self, key_hash: str) -> _Entry:
        pending = self._loading.get(key_hash)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[_Entry] = asyncio.get_running_loop().create_future()
        self._loading[key_hash] = fut
        try:
            entry = await asyncio.to_thread(self._read, key_hash)
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
            self._entries[key_hash] = entry
            fut.set_result(entry)
            return entry
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: waiters get it through shield
            raise
        finally:
            del self._loading[key_hash]

    def _read(self, key_hash: str) -> _Entry:
        with Session(self._engine) as session:
            try:
                ident = identity_by_hash(session, key_hash)
            except AuthenticationError as exc:
                return _Entry(None, exc.message, time.monotonic(), float("inf"))
        until = ident.valid_until
        return _Entry(ident, "", time.monotonic(), until.timestamp() if until else float("inf"))

    def apply(self, inv: Invalidation) -> None:
        """Drop every entry the invalidation touches."""
        if not (inv.keys or inv.envs or inv.orgs):
            return
        for h, e in list(self._entries.items()):
            ident = e.identity
            if (
                ident is None
                or ident.key_id in inv.keys
                or ident.environment_id in inv.envs
                or ident.org_id in inv.orgs
            ):
                del self._entries[h]

    def clear(self) -> None:
        self._entries.clear()

    async def flush_last_used(self) -> int:
        """Write the newest use of each key seen since the last flush (monotonic: never moves back)."""
        if not self._used:
            return 0
        used, self._used = self._used, {}
        rows = [{"kid": k, "ts": datetime.fromtimestamp(t, UTC)} for k, t in used.items()]
        await asyncio.to_thread(self._write_last_used, rows)
        return len(rows)

    def _write_last_used(self, rows: list[dict[str, object]]) -> None:
        stmt = (
            update(ApiKey)
            .where(col(ApiKey.id) == bindparam("kid"))
            .where((col(ApiKey.last_used_at).is_(None)) | (col(ApiKey.last_used_at) < bindparam("ts")))
            .values(last_used_at=bindparam("ts"))
        )
        with self._engine.begin() as conn:
            conn.execute(stmt.execution_options(synchronize_session=False), rows)
