"""A small asyncio Redis client for the data plane's hot path: the limiter's Lua scripts.

redis-py's asyncio client costs ~0.15 ms of CPU for a bare ``PING`` (connection pool checkout, retry
wrapper, stream reader, pure-Python parser when hiredis is absent). The limiter pays a round trip on every
request, so it gets this instead: one connection per worker (an ``asyncio.Protocol``), commands written
as pre-encoded RESP and **pipelined** — concurrent callers each write their command and wait on their own
future, and replies, which Redis sends in order, resolve the futures first-in first-out. Everything else
(pub/sub, locks, caches, the management API) keeps using redis-py.

Failures surface as redis-py's exceptions (all ``RedisError``), so callers handle them as before:
``ConnectionError`` when Redis cannot be reached or the connection drops (every caller waiting on it gets
it; the next call reconnects), ``TimeoutError`` when no reply comes within ``reply_timeout`` (the
connection is then dropped: later replies could no longer be matched to their callers), and
``ResponseError`` and its subclasses (``NoScriptError``, ``BusyLoadingError``…) for error replies, which
fail only their own caller. ``LuaScript`` runs scripts by SHA and falls back to ``EVAL`` (which caches the
script again) on ``NOSCRIPT``, e.g. after a Redis restart or ``SCRIPT FLUSH``.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import ssl
from collections.abc import Iterable, Sequence
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.connection import SSLConnection, parse_url
from redis.exceptions import (
    AuthenticationError,
    BusyLoadingError,
    NoPermissionError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["LuaScript", "RespClient", "encode_args"]

Arg = bytes | str | int | float
CONNECT_TIMEOUT_S = 2.0
REPLY_TIMEOUT_S = 2.0
TIMEOUT_GRACE_S = 0.05

_ERRORS: dict[str, type[RedisError]] = {  # as redis-py maps them
    "NOSCRIPT": NoScriptError,
    "LOADING": BusyLoadingError,
    "READONLY": ReadOnlyError,
    "OOM": OutOfMemoryError,
    "NOPERM": NoPermissionError,
}
_AUTH_ERRORS = ("NOAUTH", "WRONGPASS")
_INCOMPLETE: Any = object()


def _error(message: str) -> RedisError:
    """An error reply as redis-py would raise it: the code picks the class and is cut from the message."""
    code, _, rest = message.partition(" ")
    if code in _AUTH_ERRORS:
        return AuthenticationError(rest)
    cls = _ERRORS.get(code)
    if cls is not None:
        return cls(rest)
    return ResponseError(rest if code == "ERR" else message)


def _arg(value: Arg) -> bytes:
    if isinstance(value, bytes):
        data = value
    elif isinstance(value, str):
        data = value.encode()
    elif isinstance(value, bool):
        raise TypeError("booleans are ambiguous as Redis arguments; pass 0/1")
    elif isinstance(value, int):
        data = b"%d" % value
    elif isinstance(value, float):
        data = repr(value).encode()
    else:
        raise TypeError(f"cannot send {type(value).__name__} to Redis")
    return b"$%d\r\n%b\r\n" % (len(data), data)


def encode_args(args: Iterable[Arg]) -> bytes:
    """Bulk strings for ``args``, without the ``*N`` array header: a building block for ``command``."""
    return b"".join([_arg(a) for a in args])


def command(*args: Arg) -> bytes:
    """One RESP command."""
    return b"*%d\r\n%b" % (len(args), encode_args(args))


def _parse(buf: bytes, pos: int) -> tuple[Any, int]:
    """One reply from ``buf`` at ``pos``: (value, position after it), or (_INCOMPLETE, pos)."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        return _INCOMPLETE, pos
    kind = buf[pos]
    if kind == 58:  # ':' integer
        return int(buf[pos + 1 : end]), end + 2
    if kind == 36:  # '$' bulk string
        n = int(buf[pos + 1 : end])
        if n < 0:
            return None, end + 2
        stop = end + 2 + n
        if len(buf) < stop + 2:
            return _INCOMPLETE, pos
        return buf[end + 2 : stop], stop + 2
    if kind == 42:  # '*' array
        n = int(buf[pos + 1 : end])
        if n < 0:
            return None, end + 2
        items: list[Any] = []
        at = end + 2
        size = len(buf)
        for _ in range(n):
            if at < size and buf[at] == 58:  # integers inline: the limiter's replies are arrays of them
                stop = buf.find(b"\r\n", at)
                if stop < 0:
                    return _INCOMPLETE, pos
                items.append(int(buf[at + 1 : stop]))
                at = stop + 2
                continue
            item, at = _parse(buf, at)
            if item is _INCOMPLETE:
                return _INCOMPLETE, pos
            items.append(item)
        return items, at
    if kind == 43:  # '+' simple string
        return buf[pos + 1 : end], end + 2
    if kind == 45:  # '-' error: a value here; the caller's future gets it as its exception
        return _error(buf[pos + 1 : end].decode(errors="replace")), end + 2
    raise RedisConnectionError(f"unexpected byte {kind!r} in a Redis reply: the connection is out of step")


class _Connection(asyncio.Protocol):
    """One TCP (or TLS, or Unix socket) connection; ``request`` writes, replies resolve futures in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop, reply_timeout: float) -> None:
        self.loop = loop
        self.reply_timeout = reply_timeout
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._waiting: collections.deque[tuple[asyncio.Future[Any], float]] = collections.deque()
        self._buf = b""
        self._watchdog: asyncio.TimerHandle | None = None
        self._overdue: asyncio.Future[Any] | None = None

    # --- asyncio.Protocol ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else data
        pos, size = 0, len(buf)
        waiting = self._waiting
        try:
            while pos < size:
                value, pos_after = _parse(buf, pos)
                if value is _INCOMPLETE:
                    break
                pos = pos_after
                if not waiting:
                    raise RedisConnectionError("Redis sent a reply nobody asked for: the connection is out of step")
                fut = waiting.popleft()[0]
                if fut.done():  # its caller was cancelled: the reply is dropped, the order is kept
                    continue
                if isinstance(value, RedisError):
                    fut.set_exception(value)
                else:
                    fut.set_result(value)
        except (RedisConnectionError, ValueError) as exc:
            bad = exc if isinstance(exc, RedisConnectionError) else RedisConnectionError(f"bad Redis reply: {exc}")
            self.fail(bad)
            return
        self._buf = buf[pos:] if pos < size else b""

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(RedisConnectionError(f"Redis connection lost: {exc}" if exc else "Redis closed the connection"))

    # --- requests ---

    def request(self, packed: bytes) -> asyncio.Future[Any]:
        """Write one command; its reply (or error) arrives on the future."""
        fut = self.loop.create_future()
        self._send(packed, ((fut, self.loop.time() + self.reply_timeout),))
        return fut

    def pipeline(self, commands: Sequence[bytes]) -> list[asyncio.Future[Any]]:
        """Write several commands at once; one future per command, in order."""
        deadline = self.loop.time() + self.reply_timeout
        futs = [self.loop.create_future() for _ in commands]
        self._send(b"".join(commands), [(f, deadline) for f in futs])
        return futs

    def _send(self, data: bytes, waiters: Iterable[tuple[asyncio.Future[Any], float]]) -> None:
        if self.closed or self.transport is None:
            raise RedisConnectionError("Redis connection is closed")
        try:
            self.transport.write(data)
        except (RuntimeError, OSError) as exc:  # the transport went away under us
            self.fail(RedisConnectionError(f"Redis connection lost: {exc}"))
            raise RedisConnectionError(f"Redis connection lost: {exc}") from exc
        self._waiting.extend(waiters)
        if self._watchdog is None:
            self._watchdog = self.loop.call_at(self._waiting[0][1], self._check_timeouts)

    def _check_timeouts(self) -> None:
        """One timer per connection, not one per request: re-armed for the oldest reply still awaited."""
        self._watchdog = None
        if not self._waiting or self.closed:
            return
        head, deadline = self._waiting[0]
        if self.loop.time() < deadline:
            self._watchdog = self.loop.call_at(deadline, self._check_timeouts)
        elif self._overdue is not head:
            # Overdue — unless the reply is already in the socket and the loop, stalled, has not read it yet:
            # look once more after the loop has polled for I/O.
            self._overdue = head
            self._watchdog = self.loop.call_later(TIMEOUT_GRACE_S, self._check_timeouts)
        else:
            self.fail(RedisTimeoutError(f"no reply from Redis within {self.reply_timeout:g} s"))

    def fail(self, exc: RedisError) -> None:
        """Close, and fail every caller still waiting: their replies can no longer be told apart."""
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        self.closed = True
        waiting, self._waiting = self._waiting, collections.deque()
        for fut, _ in waiting:
            if not fut.done():
                fut.set_exception(type(exc)(*exc.args))
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class RespClient:
    """One pipelined connection to Redis, (re)opened on demand; for the hot path's few commands."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 6379,
        *,
        path: str | None = None,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        connect_timeout: float | None = CONNECT_TIMEOUT_S,
        reply_timeout: float | None = REPLY_TIMEOUT_S,
        client_name: str | None = None,
    ) -> None:
        self.host, self.port, self.path, self.db = host, port, path, db
        self.username, self.password = username, password
        self.ssl_context, self.server_hostname = ssl_context, server_hostname
        self.connect_timeout = connect_timeout or CONNECT_TIMEOUT_S
        self.reply_timeout = reply_timeout or REPLY_TIMEOUT_S
        self.client_name = client_name
        self._conn: _Connection | None = None
        self._connecting: asyncio.Lock | None = None
        self.connects = 0  # connections opened so far (reconnects included)

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> RespClient:
        """``redis://``, ``rediss://`` or ``unix://`` URLs, read the way redis-py reads them."""
        kwargs = parse_url(url)
        conn_cls = kwargs.pop("connection_class", None)
        return cls._from_kwargs(kwargs | overrides, tls=conn_cls is not None and issubclass(conn_cls, SSLConnection))

    @classmethod
    def like(cls, client: aioredis.Redis, **overrides: Any) -> RespClient:
        """A connection to the same server, database and credentials as a redis-py client's."""
        pool = client.connection_pool
        tls = issubclass(pool.connection_class, SSLConnection)
        return cls._from_kwargs(dict(pool.connection_kwargs) | overrides, tls=tls)

    @classmethod
    def _from_kwargs(cls, kw: dict[str, Any], *, tls: bool) -> RespClient:
        if kw.get("credential_provider") is not None:
            creds = kw["credential_provider"].get_credentials()
            kw["username"], kw["password"] = (None, creds[0]) if len(creds) == 1 else creds
        context = _ssl_context(kw) if tls else None
        host = str(kw.get("host") or "127.0.0.1")
        return cls(
            host,
            int(kw.get("port") or 6379),
            path=kw.get("path"),
            db=int(kw.get("db") or 0),
            username=kw.get("username"),
            password=kw.get("password"),
            ssl_context=context,
            server_hostname=host if context is not None else None,
            connect_timeout=kw.get("socket_connect_timeout") or kw.get("socket_timeout"),
            reply_timeout=kw.get("socket_timeout"),
            client_name=kw.get("client_name"),
        )

    @property
    def connected(self) -> bool:
        return self.open_connection is not None

    @property
    def open_connection(self) -> _Connection | None:
        """The connection if it is open (commands can be written on it right now), else ``None``."""
        conn = self._conn
        return conn if conn is not None and not conn.closed else None

    async def connect(self) -> None:
        """Open the connection if it is not open."""
        await self._connection()

    async def _connection(self) -> _Connection:
        conn = self._conn
        if conn is not None and not conn.closed:
            return conn
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:  # callers arriving together share one connection attempt
            conn = self._conn
            if conn is not None and not conn.closed:
                return conn
            self._conn = await self._open()
            self.connects += 1
            return self._conn

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        conn = _Connection(loop, self.reply_timeout)
        try:
            async with asyncio.timeout(self.connect_timeout):
                if self.path:
                    await loop.create_unix_connection(lambda: conn, self.path)
                else:
                    await loop.create_connection(
                        lambda: conn,
                        self.host,
                        self.port,
                        ssl=self.ssl_context,
                        server_hostname=self.server_hostname,
                    )
                hello: list[bytes] = []
                if self.password is not None:
                    user = [self.username] if self.username else []
                    hello.append(command("AUTH", *user, self.password))
                if self.db:
                    hello.append(command("SELECT", self.db))
                if self.client_name:
                    hello.append(command("CLIENT", "SETNAME", self.client_name))
                if hello:
                    for reply in await _in_order(conn.pipeline(hello)):
                        if isinstance(reply, RedisError):
                            raise reply
        except (OSError, TimeoutError) as exc:
            conn.close()
            where = self.path or f"{self.host}:{self.port}"
            raise RedisConnectionError(f"cannot connect to Redis at {where}: {exc or type(exc).__name__}") from exc
        except BaseException:
            conn.close()
            raise
        return conn

    async def execute(self, *args: Arg) -> Any:
        """Run one command and return its reply (bytes, int, None or a list of them)."""
        return await self.execute_packed(command(*args))

    async def execute_packed(self, packed: bytes) -> Any:
        """Run one pre-encoded command (see ``command``)."""
        conn = self._conn
        if conn is None or conn.closed:
            conn = await self._connection()
        return await conn.request(packed)

    async def pipeline_packed(self, commands: Sequence[bytes]) -> list[Any]:
        """Send pre-encoded commands in one write; their replies in order, an error reply as its exception."""
        if not commands:
            return []
        conn = await self._connection()
        return await _in_order(conn.pipeline(commands))

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


class LuaScript:
    """A Lua script run by SHA (``EVALSHA``); on ``NOSCRIPT`` it is sent whole once (``EVAL`` caches it)."""

    def __init__(self, source: str) -> None:
        self.source = source.encode()
        self.sha = hashlib.sha1(self.source, usedforsecurity=False).hexdigest().encode()
        self._by_sha = b"$7\r\nEVALSHA\r\n$40\r\n" + self.sha + b"\r\n$1\r\n0\r\n"
        self._whole = b"$4\r\nEVAL\r\n" + _arg(self.source) + b"$1\r\n0\r\n"

    def packed(self, argc: int, argv: bytes, *, whole: bool = False) -> bytes:
        """The command for ``argc`` arguments already encoded in ``argv`` (see ``encode_args``); no keys."""
        return b"*%d\r\n%b%b" % (argc + 3, self._whole if whole else self._by_sha, argv)

    async def run(self, client: RespClient, argc: int, argv: bytes) -> Any:
        try:
            return await client.execute_packed(self.packed(argc, argv))
        except NoScriptError:
            return await client.execute_packed(self.packed(argc, argv, whole=True))

    async def run_many(self, client: RespClient, calls: Sequence[tuple[int, bytes]]) -> list[Any]:
        """Several runs in one write; each result in order, an error reply as its exception."""
        replies = await client.pipeline_packed([self.packed(argc, argv) for argc, argv in calls])
        missing = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
        if missing:
            again = await client.pipeline_packed([self.packed(*calls[i], whole=True) for i in missing])
            for i, r in zip(missing, again, strict=True):
                replies[i] = r
        return replies


async def _in_order(futs: list[asyncio.Future[Any]]) -> list[Any]:
    """The replies of a pipeline, an error reply as its exception; a lost connection (or a cancelled caller)
    raises, and then no future is left holding an exception nobody will read."""
    out: list[Any] = []
    try:
        for fut in futs:
            try:
                out.append(await fut)
            except ResponseError as exc:
                out.append(exc)
    except BaseException:
        for fut in futs:
            if not fut.done():
                fut.cancel()
            elif not fut.cancelled():
                fut.exception()  # marks it read
        raise
    return out


def _ssl_context(kw: dict[str, Any]) -> ssl.SSLContext:
    """TLS settings as redis-py takes them (``ssl_cert_reqs``, ``ssl_ca_certs``, ``ssl_certfile``…)."""
    reqs = kw.get("ssl_cert_reqs", "required")
    if isinstance(reqs, str):
        reqs = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}[reqs.lower()]
    context = ssl.create_default_context(
        cafile=kw.get("ssl_ca_certs"), capath=kw.get("ssl_ca_path"), cadata=kw.get("ssl_ca_data")
    )
    context.check_hostname = bool(kw.get("ssl_check_hostname", reqs != ssl.CERT_NONE)) and reqs != ssl.CERT_NONE
    context.verify_mode = reqs
    if kw.get("ssl_certfile"):
        context.load_cert_chain(kw["ssl_certfile"], kw.get("ssl_keyfile"), kw.get("ssl_password"))
    if kw.get("ssl_min_version") is not None:
        context.minimum_version = kw["ssl_min_version"]
    if kw.get("ssl_ciphers"):
        context.set_ciphers(kw["ssl_ciphers"])
    return context
