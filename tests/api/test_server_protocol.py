"""The API's HTTP protocol (api/server.py): uvicorn's, with a response's head written together with what
follows it in the same event-loop turn. Driven through uvicorn's real protocol and config, with a transport
that records each write (one write is one send() on a socket)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from uvicorn.config import Config
from uvicorn.server import ServerState

from api.server import DISCONNECT_EXTENSION, HTTP_PROTOCOL, HttpProtocol

GET = b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n"


class RecordingTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "write after close"
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def _protocol(app: Any) -> tuple[HttpProtocol, RecordingTransport]:
    config = Config(app, http=HTTP_PROTOCOL, log_config=None, access_log=False, lifespan="off")
    config.load()
    assert config.http_protocol_class is HttpProtocol
    protocol = HttpProtocol(config=config, server_state=ServerState(), app_state={})
    transport = RecordingTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    return protocol, transport


async def _until(check: Any, what: str, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.001)


async def test_a_whole_answer_is_one_write() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"{}"})

    protocol, transport = _protocol(app)
    protocol.data_received(GET)
    await _until(lambda: transport.writes, "the answer")
    await asyncio.sleep(0.01)  # a second write, if there were one, would have happened by now
    assert len(transport.writes) == 1
    assert transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert transport.writes[0].endswith(b"\r\n\r\n{}")
    # keep-alive: the next request on the connection is answered the same way
    protocol.data_received(GET)
    await _until(lambda: len(transport.writes) == 2, "the second answer")
    assert transport.writes[1].endswith(b"\r\n\r\n{}")


async def test_a_stream_s_head_goes_with_its_first_chunk_and_its_end_with_the_last() -> None:
    go_on = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        await go_on.wait()
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})

    protocol, transport = _protocol(app)
    protocol.data_received(GET)
    await _until(lambda: transport.writes, "the first chunk")
    assert len(transport.writes) == 1
    assert b"transfer-encoding: chunked\r\n\r\n9\r\ndata: 1\n\n\r\n" in transport.writes[0]
    go_on.set()
    await _until(lambda: len(transport.writes) == 2, "the end")
    assert transport.writes[1] == b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n"


async def test_a_head_with_nothing_after_it_leaves_at_the_next_turn_and_before_a_close() -> None:
    body_may_go = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"connection", b"close")]})
        await body_may_go.wait()
        await send({"type": "http.response.body", "body": b"late"})

    protocol, transport = _protocol(app)
    protocol.data_received(GET)
    await _until(lambda: transport.writes, "the head on its own")  # not held past the loop's turn
    assert transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n") and transport.writes[0].endswith(b"\r\n\r\n")
    body_may_go.set()
    await _until(lambda: transport.closed, "the close")
    assert transport.writes[1:] == [b"4\r\nlate\r\n0\r\n\r\n"]


async def test_an_error_answer_from_the_server_itself_is_written_before_the_connection_closes() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("never called")

    protocol, transport = _protocol(app)
    protocol.data_received(b"NOT HTTP\r\n\r\n")
    await _until(lambda: transport.closed, "the close")
    assert len(transport.writes) == 1 and transport.writes[0].startswith(b"HTTP/1.1 400 Bad Request\r\n")


async def test_the_disconnect_extension_calls_back_only_for_an_unfinished_response() -> None:
    calls: list[str] = []
    finish = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        path = scope["path"]
        scope["extensions"][DISCONNECT_EXTENSION](lambda: calls.append(path))
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]})
        if path == "/slow":
            await finish.wait()  # the client leaves before the body
        await send({"type": "http.response.body", "body": b""})

    protocol, transport = _protocol(app)
    protocol.data_received(b"GET /fast HTTP/1.1\r\nHost: t\r\n\r\n")
    await _until(lambda: transport.writes, "the fast answer")
    protocol.data_received(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
    await _until(lambda: len(transport.writes) == 2, "the slow answer's head")
    assert calls == []
    protocol.connection_lost(None)
    assert calls == ["/slow"]  # not "/fast": its response was complete
    finish.set()
