"""A lean HTTP/1.1 client for the data plane's one hot call: POST a JSON body to a node, relay the answer.

aiohttp's ``ClientSession`` was about a quarter of the gateway's CPU per request (building the request
object, its header multidicts, the stream reader, the timers). This client does only what the gateway
needs, on asyncio protocols with llhttp (``httptools``) parsing the response:

- keep-alive connections per node (plain TCP or TLS), most recently used first, dropped when idle too long
  or closed by the node; a reused connection that dies before any byte of the answer arrives (the node
  closed it as we wrote) is retried once on a fresh one, since the node never saw the request;
- the request goes out in one write; the body arrives as the node sends it (content-length, chunked or
  read-until-close), with no buffering beyond what the caller has not taken yet (reading pauses above
  ``HIGH_WATER`` bytes and resumes when the caller catches up);
- a connect timeout, and a read timeout for each wait (the status line, then every piece of the body);
- a caller that gives up (``close()``, e.g. its client went away) closes the connection, which is how the
  node learns to stop generating; ``release()`` of an answer not read to its end lets the connection
  finish reading it in the background (``DRAIN_S``), then reuses it.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import httptools

HIGH_WATER = 256 * 1024  # bytes held for a caller that is not reading before the node is paused
DRAIN_S = 5.0  # how long a released, unfinished answer may take to end before its connection is closed
IDLE_S = 30.0  # an idle connection older than this is not reused (servers close theirs after 5-75 s)
MAX_IDLE = 256  # idle connections kept per node


class ResponseError(ConnectionError):
    """The connection broke or the node's answer was not valid HTTP."""


@dataclass(frozen=True, slots=True)
class Origin:
    host: str
    port: int
    tls: bool
    prefix: bytes  # the base URL's path, without its trailing slash
    host_header: bytes

    @classmethod
    def parse(cls, base_url: str) -> Origin:
        u = urlsplit(base_url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        tls = u.scheme == "https"
        port = u.port or (443 if tls else 80)
        default = port == (443 if tls else 80)
        host = u.hostname
        shown = f"[{host}]" if ":" in host else host
        header = shown if default else f"{shown}:{port}"
        return cls(
            host=host,
            port=port,
            tls=tls,
            prefix=u.path.rstrip("/").encode(),
            host_header=header.encode("ascii") if header.isascii() else header.encode("idna"),
        )


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection to a node, carrying one request at a time."""

    def __init__(self, pool: H1Pool, origin: Origin) -> None:
        self.pool = pool
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._reset()

    def _reset(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.headers_done = False
        self.headers_at = 0.0
        self.complete = False
        self.keep_alive = False
        self.released = False
        self.bytes_seen = False
        self.until_eof = True  # a body without content-length or chunking ends when the node closes
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.paused = False
        self.error: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.drain_timer: asyncio.TimerHandle | None = None

    # --- asyncio protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        self.bytes_seen = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ResponseError(f"invalid HTTP from node: {exc}"))
            self.close()

    def eof_received(self) -> bool | None:
        return None  # close the transport: the node will not send more

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool._forget(self)
        if self.drain_timer is not None:
            self.drain_timer.cancel()
            self.drain_timer = None
        if self.headers_done and not self.complete and self.until_eof and exc is None:
            self.on_message_complete()  # a read-until-close body has ended
            self.keep_alive = False
            return
        if not self.complete:
            self._fail(ResponseError(f"connection closed by node{f': {exc}' if exc else ''}"))

    # --- httptools callbacks -------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        n = name.lower()
        if n == b"content-length" or (n == b"transfer-encoding" and b"chunked" in value.lower()):
            self.until_eof = False

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.headers_done = True
        self.headers_at = time.perf_counter()
        if self.status in (204, 304) or 100 <= self.status < 200:
            self.until_eof = False
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self.released:
            return  # being drained: nobody wants it
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()
        if self.released:
            self.pool._recycle(self)
        else:
            self._wake()

    # --- for the pool and the response ----------------------------------------------------------

    def _wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        w = self.waiter
        if w is not None and not w.done():
            w.set_exception(exc)

    async def wait(self, limit_s: float) -> None:
        """Until something arrives (or the connection fails); ``TimeoutError`` after ``limit_s``."""
        if self.error is not None:
            raise self.error
        loop = asyncio.get_running_loop()
        self.waiter = w = loop.create_future()
        timer = loop.call_later(limit_s, _expire, w, limit_s)
        try:
            await w
        finally:
            timer.cancel()
            self.waiter = None

    def take(self) -> bytes:
        chunks, self.chunks, self.buffered = self.chunks, [], 0
        if self.paused and self.transport is not None and not self.closed:
            self.paused = False
            self.transport.resume_reading()
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def close(self) -> None:
        if self.drain_timer is not None:
            self.drain_timer.cancel()
            self.drain_timer = None
        if not self.closed:
            self.closed = True
            self.pool._forget(self)
            if self.transport is not None:
                self.transport.close()


def _expire(w: asyncio.Future[None], timeout: float) -> None:
    if not w.done():
        w.set_exception(TimeoutError(f"no answer from node within {timeout:g} s"))


class Response:
    """A node's answer: ``status`` now, the body with ``read()`` or ``next_chunk()``; then ``release()``."""

    __slots__ = ("_conn", "_done", "_read_timeout", "held_s", "status")

    def __init__(self, conn: _Connection, read_timeout: float) -> None:
        self._conn = conn
        self._read_timeout = read_timeout
        self._done = False
        self.status = conn.status
        self.held_s = 0.0  # how long the status line waited for ``post``'s ``confirm``

    async def read(self) -> bytes:
        """The whole body."""
        conn = self._conn
        parts: list[bytes] = []
        while True:
            if conn.chunks:
                parts.append(conn.take())
            if conn.complete:
                return parts[0] if len(parts) == 1 else b"".join(parts)
            await conn.wait(self._read_timeout)

    async def next_chunk(self) -> bytes | None:
        """The body's next piece as it arrives (whatever has come since the last one, joined); None at its end.
        (A plain method, not an async generator: one left early, at [DONE], needs a task to be finalised.)"""
        conn = self._conn
        while True:
            if conn.chunks:
                return conn.take()
            if conn.complete:
                return None
            await conn.wait(self._read_timeout)

    def release(self) -> None:
        """Done with the answer: the connection goes back to the pool (after the rest of an unfinished
        answer has been read and dropped, within ``DRAIN_S``)."""
        if self._done:
            return
        self._done = True
        conn = self._conn
        if conn.closed or conn.error is not None:
            conn.close()
        elif conn.complete:
            self._conn.pool._recycle(conn)
        else:
            conn.released = True
            conn.chunks, conn.buffered = [], 0
            if conn.paused and conn.transport is not None:
                conn.paused = False
                conn.transport.resume_reading()
            conn.drain_timer = asyncio.get_running_loop().call_later(DRAIN_S, conn.close)

    def close(self) -> None:
        """Give up on the answer: close the connection, so the node stops working on the request."""
        if not self._done:
            self._done = True
            self._conn.close()


class H1Pool:
    """Keep-alive connections per origin, and the one request the gateway makes."""

    def __init__(self, *, connect_timeout: float = 3.0, read_timeout: float = 600.0) -> None:
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._idle: dict[Origin, list[_Connection]] = {}
        self._origins: dict[str, Origin] = {}
        self._all: set[_Connection] = set()
        self._tls: ssl.SSLContext | None = None

    def origin(self, base_url: str) -> Origin:
        o = self._origins.get(base_url)
        if o is None:
            if len(self._origins) > 10_000:
                self._origins.clear()
            o = self._origins[base_url] = Origin.parse(base_url)
        return o

    async def post(
        self,
        base_url: str,
        path: str,
        body: bytes,
        headers: bytes = b"",
        confirm: Callable[[], Awaitable[None]] | None = None,
    ) -> Response:
        """POST ``body`` (JSON) to ``base_url`` + ``path`` and wait for the status line. ``headers`` are extra
        header lines, each ending in CRLF. Raises ``OSError`` (``ConnectionError``) or ``TimeoutError``.

        ``confirm``, if given, is awaited once the request is written, while the server works on it; if it
        raises, the connection is closed (the server stops) and its exception propagates."""
        origin = self.origin(base_url)
        head = b"".join(
            (
                b"POST ",
                origin.prefix,
                path.encode(),
                b" HTTP/1.1\r\nHost: ",
                origin.host_header,
                b"\r\nContent-Type: application/json\r\nAccept: */*\r\nContent-Length: ",
                str(len(body)).encode(),
                b"\r\n",
                headers,
                b"\r\n",
            )
        )
        held = 0.0
        for attempt in range(2):
            conn, reused = await self._acquire(origin, fresh=attempt > 0)
            assert conn.transport is not None
            conn.transport.write(head + body if len(body) < 65536 else head)
            if len(body) >= 65536:
                conn.transport.write(body)
            try:
                if confirm is not None:
                    await confirm()
                    confirm = None
                    # How long the node's answer waited for the confirmation (0: it came after).
                    held = time.perf_counter() - conn.headers_at if conn.headers_done else 0.0
                while not conn.headers_done:
                    await conn.wait(self.read_timeout)
            except ResponseError:
                conn.close()
                if reused and not conn.bytes_seen:
                    continue  # the node closed this idle connection as we wrote: it never saw the request
                raise
            except BaseException:
                conn.close()
                raise
            resp = Response(conn, self.read_timeout)
            resp.held_s = held
            return resp
        raise AssertionError("unreachable")  # pragma: no cover

    async def _acquire(self, origin: Origin, *, fresh: bool = False) -> tuple[_Connection, bool]:
        idle = None if fresh else self._idle.get(origin)
        if idle:
            now = time.monotonic()
            while idle:
                conn = idle.pop()
                if not conn.closed and now - conn.idle_since < IDLE_S:
                    conn._reset()
                    return conn, True
                conn.close()
        loop = asyncio.get_running_loop()
        tls: ssl.SSLContext | None = None
        if origin.tls:
            if self._tls is None:
                self._tls = ssl.create_default_context()
            tls = self._tls
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: _Connection(self, origin),
                    origin.host,
                    origin.port,
                    ssl=tls,
                    server_hostname=origin.host if tls else None,
                )
        except TimeoutError as exc:
            where = f"{origin.host}:{origin.port}"
            raise TimeoutError(f"could not connect to {where} within {self.connect_timeout:g} s") from exc
        self._all.add(conn)
        return conn, False

    def _recycle(self, conn: _Connection) -> None:
        if conn.drain_timer is not None:
            conn.drain_timer.cancel()
            conn.drain_timer = None
        if conn.closed or not conn.keep_alive or conn.error is not None:
            conn.close()
            return
        if conn.paused and conn.transport is not None:
            conn.paused = False  # the answer ended while reading was paused for a caller that never read it
            conn.transport.resume_reading()
        idle = self._idle.setdefault(conn.origin, [])
        if len(idle) >= MAX_IDLE:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        conn.released = False
        idle.append(conn)

    def _forget(self, conn: _Connection) -> None:
        self._all.discard(conn)
        idle = self._idle.get(conn.origin)
        if idle and conn in idle:
            idle.remove(conn)

    async def close(self) -> None:
        for conn in list(self._all):
            conn.close()
        self._idle.clear()
