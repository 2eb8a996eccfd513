"""One lock per job, so any number of instances run a job one at a time.

``acquire(key, ttl)`` never blocks: it returns a ``Lease`` or ``None`` (someone else holds it). A lease
lives at most ``ttl`` (a holder that crashed frees it by then) and ``release()`` frees only the
caller's own lease (compare-and-delete: a holder slower than its TTL never frees the next holder's).

Backends, chosen by ``from_settings``:

- ``CIC_REDIS_URL``: redis-py, ``SET key token NX PX ttl`` and a Lua compare-and-delete.
- ``CIC_UPSTASH_REDIS_REST_URL`` + ``_TOKEN`` (and no Redis URL): the same commands over Upstash's
  REST API with ``upstash-redis``, for serverless runs that cannot keep a TCP connection.
- PostgreSQL: ``pg_try_advisory_lock`` on a dedicated connection held for the run; the server ends
  that session (and so frees the lock) if it stays idle past the TTL (``idle_session_timeout``), and
  at once if the holder's process dies.
- otherwise (SQLite): a lock in this process; across processes the ``job_runs`` record is the guard.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol

import psycopg
import redis
from sqlalchemy.engine import Engine

from cic.settings import Settings

if TYPE_CHECKING:  # imported when used: only serverless deployments need it
    from upstash_redis import Redis as UpstashRedis

KEY_PREFIX = "cic:lock:job:"

# KEYS[1] = lock key, ARGV[1] = the holder's token: delete only if it is still ours.
RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


class LockError(Exception):
    """The lock backend could not be reached or answered an error."""


class Lease(Protocol):
    token: str

    def release(self) -> bool:
        """Free the lock if this lease still holds it; True when it did."""
        ...


class JobLock(Protocol):
    backend: str
    distributed: bool
    """True when the lock excludes other processes and hosts (every backend but the in-process one)."""

    def acquire(self, key: str, ttl: timedelta) -> Lease | None: ...

    def close(self) -> None: ...


def lock_key(job_name: str) -> str:
    return KEY_PREFIX + job_name


def new_token() -> str:
    """Who holds a lock: host, pid and 96 random bits (unique per acquisition)."""
    return f"{socket.gethostname()[:64]}/{os.getpid()}/{secrets.token_hex(12)}"


def _ttl_ms(ttl: timedelta) -> int:
    return max(1, int(ttl.total_seconds() * 1000))


# --- Redis (redis-py) ------------------------------------------------------------------------------


@dataclass
class _KeyLease:
    owner: RedisLock | UpstashLock
    key: str
    token: str

    def release(self) -> bool:
        return self.owner.release(self.key, self.token)


class RedisLock:
    backend = "redis"
    distributed = True

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._release = client.register_script(RELEASE_LUA)

    @classmethod
    def from_url(cls, url: str) -> RedisLock:
        return cls(redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5))

    def acquire(self, key: str, ttl: timedelta) -> Lease | None:
        token = new_token()
        try:
            got = self._client.set(key, token, nx=True, px=_ttl_ms(ttl))
        except redis.RedisError as exc:
            raise LockError(f"redis: {exc}") from exc
        return _KeyLease(self, key, token) if got else None

    def release(self, key: str, token: str) -> bool:
        try:
            return bool(self._release(keys=[key], args=[token]))
        except redis.RedisError as exc:
            raise LockError(f"redis: {exc}") from exc

    def close(self) -> None:
        self._client.close()


# --- Upstash (REST) --------------------------------------------------------------------------------


class UpstashLock:
    backend = "upstash"
    distributed = True

    def __init__(self, client: UpstashRedis) -> None:
        self._client = client

    @classmethod
    def from_credentials(cls, url: str, token: str) -> UpstashLock:
        from upstash_redis import Redis as UpstashRedis

        return cls(UpstashRedis(url=url, token=token, allow_telemetry=False, rest_retries=1, rest_retry_interval=0.5))

    def acquire(self, key: str, ttl: timedelta) -> Lease | None:
        token = new_token()
        try:
            got = self._client.set(key, token, nx=True, px=_ttl_ms(ttl))
        except Exception as exc:  # upstash-redis raises UpstashError and any httpx error
            raise LockError(f"upstash: {exc}") from exc
        return _KeyLease(self, key, token) if got else None

    def release(self, key: str, token: str) -> bool:
        try:
            return bool(self._client.eval(RELEASE_LUA, keys=[key], args=[token]))
        except Exception as exc:  # see acquire
            raise LockError(f"upstash: {exc}") from exc

    def close(self) -> None:
        self._client.close()


# --- PostgreSQL advisory lock ----------------------------------------------------------------------


def advisory_key(key: str) -> int:
    """A signed 64-bit advisory-lock key from the lock name (stable across processes and versions)."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)


class _AdvisoryLease:
    def __init__(self, conn: psycopg.Connection[Any], key: int, token: str) -> None:
        self._conn = conn
        self._key = key
        self.token = token
        self._released = False
        self._guard = threading.Lock()

    def release(self) -> bool:
        with self._guard:
            if self._released:
                return False
            self._released = True
        try:
            # Unlock before closing: the server frees a closed session's locks only a moment later.
            row = self._conn.execute("SELECT pg_advisory_unlock(%s)", (self._key,)).fetchone()
            return bool(row and row[0])
        except psycopg.Error:
            return False  # the server ended the session (TTL passed): the lock is already free
        finally:
            self._conn.close()


class PgAdvisoryLock:
    backend = "postgresql"
    distributed = True

    def __init__(self, engine: Engine, *, connect_timeout_s: int = 10) -> None:
        url = engine.url.set(drivername="postgresql")
        self._conninfo = url.render_as_string(hide_password=False)
        self._connect_timeout_s = connect_timeout_s

    def acquire(self, key: str, ttl: timedelta) -> Lease | None:
        try:
            conn = psycopg.connect(
                self._conninfo,
                autocommit=True,
                connect_timeout=self._connect_timeout_s,
                application_name="cic-job-lock",
            )
        except psycopg.Error as exc:
            raise LockError(f"postgresql: {exc}") from exc
        try:
            # The session (and its lock) ends if it stays idle longer than the TTL: a holder that hangs,
            # or a host that vanished without closing its socket, frees the lock by then.
            conn.execute(f"SET idle_session_timeout = {_ttl_ms(ttl)}")
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (advisory_key(key),)).fetchone()
        except psycopg.Error as exc:
            conn.close()
            raise LockError(f"postgresql: {exc}") from exc
        if not (row and row[0]):
            conn.close()
            return None
        return _AdvisoryLease(conn, advisory_key(key), new_token())

    def close(self) -> None:
        pass


# --- in-process (SQLite, one host) -----------------------------------------------------------------


class _LocalTable:
    """The process-wide table of in-process locks: key → (token, monotonic expiry)."""

    def __init__(self) -> None:
        self._held: dict[str, tuple[str, float]] = {}
        self._guard = threading.Lock()

    def acquire(self, key: str, ttl: timedelta) -> str | None:
        now = time.monotonic()
        with self._guard:
            held = self._held.get(key)
            if held is not None and held[1] > now:
                return None
            token = new_token()
            self._held[key] = (token, now + ttl.total_seconds())
            return token

    def release(self, key: str, token: str) -> bool:
        with self._guard:
            held = self._held.get(key)
            if held is None or held[0] != token:
                return False
            del self._held[key]
            return True


_PROCESS_LOCKS = _LocalTable()  # the process is this backend's whole scope


@dataclass
class _LocalLease:
    table: _LocalTable
    key: str
    token: str

    def release(self) -> bool:
        return self.table.release(self.key, self.token)


class LocalLock:
    backend = "local"
    distributed = False

    def __init__(self, table: _LocalTable | None = None) -> None:
        self._table = table or _PROCESS_LOCKS

    def acquire(self, key: str, ttl: timedelta) -> Lease | None:
        token = self._table.acquire(key, ttl)
        return _LocalLease(self._table, key, token) if token else None

    def close(self) -> None:
        pass


def from_settings(settings: Settings, engine: Engine) -> JobLock:
    """Redis, else Upstash's REST API, else a PostgreSQL advisory lock, else in-process."""
    if settings.redis_url:
        return RedisLock.from_url(settings.redis_url)
    if settings.upstash_redis_rest_url and settings.upstash_redis_rest_token:
        return UpstashLock.from_credentials(
            settings.upstash_redis_rest_url, settings.upstash_redis_rest_token.get_secret_value()
        )
    if engine.dialect.name == "postgresql":
        return PgAdvisoryLock(engine)
    return LocalLock()
