"""The HTTP/1.1 server protocol the API runs under: uvicorn's httptools protocol, writing each response in
as few ``send()`` calls as it can.

uvicorn writes a response's head (status line and headers) as soon as the application starts the response,
and its body in a second write, so a small answer costs two system calls on the server and two wake-ups of
the client, which reads the head, finds the body missing and waits again. On loopback, and for an answer of
a few hundred bytes, those calls are a good part of what the gateway adds to a request's latency.

Here the head is held back for the rest of the event loop's turn: the body that follows in the same turn
(as it always does for a whole JSON answer, and for a stream's first chunk) goes out in the same write. A
head with nothing after it in that turn goes out at the start of the next one, so nothing ever waits
longer than that. Order is kept: any other write, a close, or the end of the turn sends what is held first.

It also tells the application, through the ASGI extension ``DISCONNECT_EXTENSION``, when the client goes
away: ``scope["extensions"][DISCONNECT_EXTENSION](callback)`` has ``callback()`` called if the connection is
lost before the response is complete. The data plane uses it to stop a node's generation at once without a
task per request waiting on ``receive()`` for ``http.disconnect`` (what it does under other servers).

``cic api``, ``cic up`` and the tests' servers select it with ``http=HTTP_PROTOCOL``.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

HTTP_PROTOCOL = "api.server:HttpProtocol"  # uvicorn's ``http=`` setting (an import string: workers re-import it)

DISCONNECT_EXTENSION = "cic.on_disconnect"

_HEAD = b"HTTP/1.1 "


class HeadHoldingTransport:
    """Wraps the connection's transport: a response head is written together with what follows it."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held + data)
        elif data.startswith(_HEAD) and not self._transport.is_closing():
            # A response's head (a body that happens to start this way is only delayed to the end of the turn).
            self._held = data
            self._loop.call_soon(self.flush)
        else:
            self._transport.write(data)

    def flush(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if not self._transport.is_closing():  # the connection was lost meanwhile: nobody to write to
                self._transport.write(held)

    def writelines(self, chunks: Any) -> None:
        self.write(b"".join(chunks))

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + (len(self._held) if self._held is not None else 0)

    def __getattr__(self, name: str) -> Any:  # get_extra_info, pause_reading, set_protocol, ...
        return getattr(self._transport, name)


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol over a ``HeadHoldingTransport``, with the disconnect extension."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._watched: list[tuple[RequestResponseCycle, Callable[[], None]]] = []

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(HeadHoldingTransport(transport, self.loop))  # type: ignore[arg-type]

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle.scope is self.scope:  # a request (not an upgrade): its app may watch
            extensions: dict[str, Any] = self.scope.setdefault("extensions", {})
            extensions[DISCONNECT_EXTENSION] = functools.partial(self._watch, cycle)

    def _watch(self, cycle: RequestResponseCycle, callback: Callable[[], None]) -> None:
        if self._watched:
            self._watched = [(c, cb) for c, cb in self._watched if not c.response_complete]
        self._watched.append((cycle, callback))

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        watched, self._watched = self._watched, []
        for cycle, callback in watched:
            if not cycle.response_complete:
                callback()
