"""The gateway's HTTP/1.1 client (api/gateway/h1.py) against real HTTP servers on loopback: bodies by
content-length, chunks and connection close; keep-alive reuse; a stale keep-alive connection; a node that
breaks mid-answer or never answers; backpressure; giving up (the node sees the connection close); and the
upstream key header."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
import uvloop

from api.gateway.h1 import H1Pool, Origin, ResponseError
from api.gateway.registry import NodeView
from api.gateway.upstream import Timeouts, UpstreamFailure, UpstreamPool

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


@dataclass
class Server:
    url: str
    connections: int = 0
    requests: list[tuple[bytes, dict[bytes, bytes], bytes]] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)


async def read_request(reader: asyncio.StreamReader, server: Server) -> tuple[bytes, dict[bytes, bytes], bytes] | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    line, *lines = head[:-4].split(b"\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (h.split(b":", 1) for h in lines)}
    body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
    req = (line, headers, body)
    server.requests.append(req)
    return req


@asynccontextmanager
async def serve(handler: Handler) -> AsyncIterator[Server]:
    server = Server(url="")

    async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server.connections += 1
        try:
            await handler(reader, writer, server.connections)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            server.closed.set()

    srv = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    server.url = f"http://127.0.0.1:{port}"
    try:
        yield server
    finally:
        srv.close()
        await srv.wait_closed()


def json_response(body: bytes, *, close: bool = False) -> bytes:
    extra = b"Connection: close\r\n" if close else b""
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s" % (
        len(body),
        extra,
        body,
    )


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def keep_alive_json(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
    server = keep_alive_json.server  # type: ignore[attr-defined]
    while (req := await read_request(reader, server)) is not None:
        writer.write(json_response(b'{"echo":%s}' % req[2]))
        await writer.drain()


async def test_content_length_answer_and_keep_alive_reuse() -> None:
    pool = H1Pool(connect_timeout=2, read_timeout=5)
    async with serve(keep_alive_json) as server:
        keep_alive_json.server = server  # type: ignore[attr-defined]
        for i in range(3):
            resp = await pool.post(server.url, "/v1/chat/completions", b'{"n":%d}' % i)
            assert resp.status == 200
            assert await resp.read() == b'{"echo":{"n":%d}}' % i
            resp.release()
        assert server.connections == 1  # one connection carried all three
        line, headers, _ = server.requests[0]
        assert line == b"POST /v1/chat/completions HTTP/1.1"
        assert headers[b"host"] == server.url.removeprefix("http://").encode()
        assert headers[b"content-type"] == b"application/json"
    await pool.close()


async def test_base_url_path_prefix_is_kept() -> None:
    pool = H1Pool()
    async with serve(keep_alive_json) as server:
        keep_alive_json.server = server  # type: ignore[attr-defined]
        resp = await pool.post(server.url + "/prefix/", "/v1/embeddings", b"{}")
        await resp.read()
        resp.release()
        assert server.requests[0][0] == b"POST /prefix/v1/embeddings HTTP/1.1"
    await pool.close()


async def test_chunks_arrive_as_the_node_sends_them() -> None:
    go_on = asyncio.Event()

    async def sse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader, server)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(chunk(b"data: one\n\n"))
        await writer.drain()
        await go_on.wait()  # the second chunk only after the client has the first
        writer.write(chunk(b"data: two\n\n") + chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
        await writer.drain()
        await read_request(reader, server)  # keep the connection open for reuse

    pool = H1Pool(read_timeout=5)
    async with serve(sse) as server:
        resp = await pool.post(server.url, "/v1/chat/completions", b'{"stream":true}')
        got = []
        while (piece := await resp.next_chunk()) is not None:
            got.append(piece)
            go_on.set()
        resp.release()
        assert got[0] == b"data: one\n\n"
        assert b"".join(got) == b"data: one\n\ndata: two\n\ndata: [DONE]\n\n"
    await pool.close()


async def test_body_until_the_node_closes() -> None:
    async def old_style(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader, server)
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n")
        writer.write(b'{"a":')
        await writer.drain()
        writer.write(b"1}")
        await writer.drain()

    pool = H1Pool(read_timeout=5)
    async with serve(old_style) as server:
        for _ in range(2):
            resp = await pool.post(server.url, "/v1/completions", b"{}")
            assert await resp.read() == b'{"a":1}'
            resp.release()
        assert server.connections == 2  # not reused: the answer ended with the connection
    await pool.close()


async def test_stale_keep_alive_connection_is_retried_on_a_fresh_one() -> None:
    async def closes_second_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader, server)
        writer.write(json_response(b'{"conn":%d}' % n))
        await writer.drain()
        if n == 1:
            # Read the next request, then hang up without a word, as a server whose keep-alive timer fired does.
            await read_request(reader, server)
            writer.transport.abort()
            return
        await read_request(reader, server)

    pool = H1Pool(read_timeout=5)
    async with serve(closes_second_request) as server:
        first = await pool.post(server.url, "/v1/chat/completions", b"{}")
        assert await first.read() == b'{"conn":1}'
        first.release()
        second = await pool.post(server.url, "/v1/chat/completions", b"{}")
        assert await second.read() == b'{"conn":2}'
        second.release()
        assert server.connections == 2
    await pool.close()


async def test_node_breaking_mid_body_raises() -> None:
    async def breaks(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader, server)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
        await writer.drain()
        writer.transport.abort()

    pool = H1Pool(read_timeout=5)
    async with serve(breaks) as server:
        resp = await pool.post(server.url, "/v1/completions", b"{}")
        with pytest.raises(ResponseError):
            await resp.read()
        resp.release()
    await pool.close()


async def test_read_timeout_and_the_connection_is_not_reused() -> None:
    async def silent_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader, server)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        await writer.drain()
        await reader.read()  # until the client hangs up

    pool = H1Pool(read_timeout=0.2)
    async with serve(silent_body) as server:
        resp = await pool.post(server.url, "/v1/completions", b"{}")
        with pytest.raises(TimeoutError):
            await resp.read()
        resp.close()
        await asyncio.wait_for(server.closed.wait(), 5)  # the node saw the connection close

    async def no_status(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader, server)
        await reader.read()

    async with serve(no_status) as server:
        with pytest.raises(TimeoutError):
            await pool.post(server.url, "/v1/completions", b"{}")
        await asyncio.wait_for(server.closed.wait(), 5)
    await pool.close()


async def test_connection_refused() -> None:
    srv = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    srv.close()
    await srv.wait_closed()
    with pytest.raises(ConnectionRefusedError):
        await H1Pool(connect_timeout=1).post(f"http://127.0.0.1:{port}", "/v1/models", b"{}")


async def test_giving_up_closes_the_connection() -> None:
    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader, server)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        while True:
            writer.write(chunk(b"data: token\n\n"))
            await writer.drain()
            await asyncio.sleep(0.01)

    pool = H1Pool(read_timeout=5)
    async with serve(endless) as server:
        resp = await pool.post(server.url, "/v1/chat/completions", b"{}")
        assert await resp.next_chunk()
        resp.close()
        await asyncio.wait_for(server.closed.wait(), 5)  # the node's writes failed: it stops generating


async def test_cancelled_request_closes_the_connection() -> None:
    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader, server)
        await reader.read()  # never answers; returns when the client hangs up

    pool = H1Pool(read_timeout=30)
    async with serve(slow) as server:
        task = asyncio.ensure_future(pool.post(server.url, "/v1/chat/completions", b"{}"))
        deadline = asyncio.get_running_loop().time() + 5
        while not server.requests:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(server.closed.wait(), 5)
    await pool.close()


async def test_released_unfinished_answer_is_drained_then_reused() -> None:
    rest = asyncio.Event()

    async def two_parts(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        while await read_request(reader, server) is not None:
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk(b"data: [DONE]\n\n"))
            await writer.drain()
            await rest.wait()
            rest.clear()
            writer.write(b"0\r\n\r\n")
            await writer.drain()

    pool = H1Pool(read_timeout=5)
    async with serve(two_parts) as server:
        resp = await pool.post(server.url, "/v1/chat/completions", b"{}")
        assert await resp.next_chunk() == b"data: [DONE]\n\n"
        resp.release()  # the terminating chunk has not come yet
        rest.set()
        deadline = asyncio.get_running_loop().time() + 5
        while not pool._idle.get(Origin.parse(server.url)):
            assert asyncio.get_running_loop().time() < deadline, "connection never went back to the pool"
            await asyncio.sleep(0.01)
        resp = await pool.post(server.url, "/v1/chat/completions", b"{}")
        rest.set()
        assert await resp.read() == b"data: [DONE]\n\n"
        resp.release()
        assert server.connections == 1
    await pool.close()


async def test_large_body_with_a_slow_reader() -> None:
    payload = os.urandom(3 * 1024 * 1024)

    async def big(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader, server)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i in range(0, len(payload), 65536):
            writer.write(chunk(payload[i : i + 65536]))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    pool = H1Pool(read_timeout=5)
    async with serve(big) as server:
        resp = await pool.post(server.url, "/v1/embeddings", os.urandom(200_000))  # a large request body too
        got = bytearray()
        while (piece := await resp.next_chunk()) is not None:
            got += piece
            await asyncio.sleep(0.001)
        resp.release()
        assert bytes(got) == payload
        assert len(server.requests[0][2]) == 200_000
    await pool.close()


async def test_answer_ending_while_reading_is_paused_leaves_a_reusable_connection() -> None:
    pool = H1Pool(read_timeout=2)
    async with serve(keep_alive_json) as server:
        keep_alive_json.server = server  # type: ignore[attr-defined]
        resp = await pool.post(server.url, "/v1/embeddings", b"1")
        deadline = asyncio.get_running_loop().time() + 5
        while not resp._conn.complete:
            assert asyncio.get_running_loop().time() < deadline, "answer never completed"
            await resp._conn.wait(1)
        # As when a body over HIGH_WATER ends in the same read that paused reading, and nobody reads it.
        conn = resp._conn
        assert conn.transport is not None
        conn.paused = True
        conn.transport.pause_reading()
        resp.release()
        assert conn.transport.is_reading()
        again = await pool.post(server.url, "/v1/embeddings", b"2")
        assert await again.read() == b'{"echo":2}'
        again.release()
        assert server.connections == 1
    await pool.close()


async def test_upstream_pool_sends_the_node_key_and_maps_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while await read_request(reader, server) is not None:
            if len(server.requests) == 2:
                writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy")
            else:
                writer.write(json_response(b"{}"))
            await writer.drain()

    monkeypatch.setenv("CIC_TEST_NODE_KEY", "sk-node-secret")
    pool = UpstreamPool(Timeouts(connect_s=1, first_byte_s=5))
    async with serve(answer) as server:
        node = NodeView("node_1", "m", "us-east", server.url, "vllm", "m", "CIC_TEST_NODE_KEY")
        resp = await pool.open(node, "/v1/chat/completions", b"{}")
        assert await resp.read() == b"{}"
        resp.release()
        assert server.requests[0][1][b"authorization"] == b"Bearer sk-node-secret"
        with pytest.raises(UpstreamFailure) as failure:
            await pool.open(node, "/v1/chat/completions", b"{}")
        assert failure.value.status == 503 and failure.value.body == b"busy"
    await pool.close()


def test_on_uvloop_as_the_api_runs() -> None:
    """The API's workers run uvloop, whose transports are not asyncio's classes."""

    async def scenario() -> None:
        await test_content_length_answer_and_keep_alive_reuse()
        await test_chunks_arrive_as_the_node_sends_them()
        await test_stale_keep_alive_connection_is_retried_on_a_fresh_one()
        await test_giving_up_closes_the_connection()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(scenario())
