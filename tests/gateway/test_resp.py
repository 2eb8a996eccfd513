"""The limiter's Redis client (api/gateway/resp.py) against real redis-server processes: replies of every
type, pipelining under concurrent callers, error replies, NOSCRIPT, timeouts, lost connections, restarts."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Iterator
from typing import cast

import pytest
import redis
import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError, NoScriptError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from api.gateway.resp import LuaScript, RespClient, command, encode_args
from tests.conftest import REDIS_URL
from tests.gateway.private_redis import PrivateRedis, needs_redis_server
from tests.servers import free_port


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def client() -> AsyncIterator[RespClient]:
    c = RespClient.from_url(REDIS_URL)
    yield c
    await c.aclose()


def _key(tag: str) -> str:
    return f"cic:test:resp:{tag}:{os.urandom(4).hex()}"


async def _eventually(check: Callable[[], bool], within_s: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while not check():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_replies_of_every_type(client: RespClient) -> None:
    k = _key("types")
    assert await client.execute("PING") == b"PONG"
    assert await client.execute("SET", k, "v\r\nwith crlf") == b"OK"
    assert await client.execute("GET", k) == b"v\r\nwith crlf"
    assert await client.execute("GET", _key("missing")) is None
    assert await client.execute("INCRBY", k + ":n", 41) == 41
    assert await client.execute("MGET", k, _key("missing"), k + ":n") == [b"v\r\nwith crlf", None, b"41"]
    nested = "return {1, 'two', {3, {'four'}}, -5}"
    assert await client.execute("EVAL", nested, 0) == [1, b"two", [3, [b"four"]], -5]
    assert await client.execute("EVAL", "return {}", 0) == []
    big = os.urandom(300_000)  # a reply spanning many reads
    await client.execute("SET", k, big)
    assert await client.execute("GET", k) == big
    await client.execute("DEL", k, k + ":n")
    assert client.connects == 1


async def test_error_reply_raised_and_connection_stays_usable(client: RespClient) -> None:
    k = _key("err")
    await client.execute("SET", k, "not a number")
    with pytest.raises(ResponseError, match="not an integer"):
        await client.execute("INCR", k)
    with pytest.raises(ResponseError, match="unknown command"):
        await client.execute("NOSUCHCOMMAND")
    with pytest.raises(ResponseError, match="boom"):
        await client.execute("EVAL", "return redis.error_reply('boom')", 0)
    assert await client.execute("GET", k) == b"not a number"
    await client.execute("DEL", k)
    assert client.connects == 1


async def test_concurrent_callers_get_their_own_replies(client: RespClient) -> None:
    prefix = _key("conc")

    async def one(i: int) -> tuple[int, object, object]:
        await asyncio.sleep(0)  # interleave the callers
        echoed = await client.execute("ECHO", f"caller-{i}")
        counted = await client.execute("INCRBY", f"{prefix}:{i}", i)
        return i, echoed, counted

    results = await asyncio.gather(*(one(i) for i in range(500)))
    assert all(echoed == f"caller-{i}".encode() and counted == i for i, echoed, counted in results)
    # Errors interleaved with successes fail only their own caller.
    outcomes = await asyncio.gather(
        *(client.execute("ECHO", i) if i % 3 else client.execute("INCR", "a", "b") for i in range(60)),
        return_exceptions=True,
    )
    for i, out in enumerate(outcomes):
        if i % 3:
            assert out == str(i).encode()
        else:
            assert isinstance(out, ResponseError)
    assert client.connects == 1  # one pipelined connection served them all
    await client.execute("DEL", *(f"{prefix}:{i}" for i in range(500)))


async def test_pipeline_replies_in_order_errors_in_place(client: RespClient) -> None:
    k = _key("pipe")
    replies = await client.pipeline_packed(
        [command("SET", k, 1), command("INCR", k), command("HGET", k, "f"), command("GET", k)]
    )
    assert replies[:2] == [b"OK", 2] and isinstance(replies[2], ResponseError) and replies[3] == b"2"
    await client.execute("DEL", k)


async def test_cancelled_caller_does_not_shift_replies(client: RespClient) -> None:
    slow = asyncio.ensure_future(client.execute("BLPOP", _key("never"), "0.3"))  # holds the connection 0.3 s
    await asyncio.sleep(0.05)
    slow.cancel()
    # Written after the cancelled BLPOP: its reply must not be taken for the BLPOP's.
    assert await client.execute("ECHO", "mine") == b"mine"
    assert await client.execute("ECHO", "next") == b"next"
    assert client.connects == 1


async def test_no_reply_in_time_drops_the_connection_then_reconnects() -> None:
    c = RespClient.from_url(REDIS_URL, socket_timeout=0.2)
    try:
        held = asyncio.ensure_future(c.execute("BLPOP", _key("never"), "2"))
        await asyncio.sleep(0.01)
        behind = asyncio.ensure_future(c.execute("ECHO", "behind"))
        with pytest.raises(RedisTimeoutError):
            await held
        with pytest.raises(RedisTimeoutError):  # queued behind it on the same connection
            await behind
        assert await c.execute("ECHO", "again") == b"again"
        assert c.connects == 2
    finally:
        await c.aclose()


async def test_server_closing_the_connection_fails_waiters_and_next_call_reconnects(client: RespClient) -> None:
    name = f"resp-test-{os.urandom(3).hex()}"
    await client.execute("CLIENT", "SETNAME", name)
    held = asyncio.ensure_future(client.execute("BLPOP", _key("never"), "5"))
    await asyncio.sleep(0.05)
    admin = redis.Redis.from_url(REDIS_URL)
    ours = [c["id"] for c in cast(list[dict[str, str]], admin.client_list()) if c.get("name") == name]
    assert len(ours) == 1
    admin.client_kill_filter(_id=ours[0])  # only this test's connection: the server is shared
    admin.close()
    with pytest.raises(RedisConnectionError):
        await held
    assert await client.execute("ECHO", "back") == b"back"
    assert client.connects == 2


async def test_lua_script_survives_script_flush(client: RespClient) -> None:
    script = LuaScript("return {tonumber(ARGV[1]) * 2, ARGV[2]}")
    admin = redis.Redis.from_url(REDIS_URL)
    try:
        assert await script.run(client, 2, encode_args([21, "x"])) == [42, b"x"]
        assert admin.script_exists(script.sha.decode()) == [True]
        admin.script_flush()
        assert admin.script_exists(script.sha.decode()) == [False]
        # EVALSHA now answers NOSCRIPT: the script is sent whole (EVAL), which caches it again.
        assert await script.run(client, 2, encode_args([5, "y"])) == [10, b"y"]
        assert admin.script_exists(script.sha.decode()) == [True]
        admin.script_flush()
        many = await script.run_many(client, [(2, encode_args([i, "z"])) for i in range(50)])
        assert many == [[2 * i, b"z"] for i in range(50)]
        # A script's own error is not mistaken for NOSCRIPT.
        with pytest.raises(ResponseError):
            await LuaScript("return redis.call('INCR')").run(client, 0, b"")
        with pytest.raises(NoScriptError):
            await client.execute("EVALSHA", "0" * 40, 0)
    finally:
        admin.close()


@needs_redis_server
async def test_reconnects_after_redis_restart(private_redis: PrivateRedis) -> None:
    c = RespClient.from_url(private_redis.url)
    script = LuaScript("return redis.call('INCR', 'restart:counter')")
    try:
        assert await script.run(c, 0, b"") == 1
        private_redis.stop()
        await _eventually(lambda: not c.connected)  # the server's close is noticed while idle
        with pytest.raises(RedisConnectionError):
            await c.execute("PING")  # down: fails fast, no hang
        private_redis.start()
        # A fresh server: new connection, empty script cache (NOSCRIPT → EVAL), empty data.
        assert await script.run(c, 0, b"") == 1
        assert await c.execute("PING") == b"PONG"
        assert c.connects == 2
    finally:
        await c.aclose()


@needs_redis_server
async def test_password_and_database_from_url_and_from_redis_py_client() -> None:
    server = PrivateRedis("--requirepass", "s3cret")
    server.start()
    try:
        url = f"redis://:s3cret@127.0.0.1:{server.port}/3"
        c = RespClient.from_url(url)
        k = _key("db")
        assert await c.execute("SET", k, "in-db-3") == b"OK"
        await c.aclose()
        plain = redis.Redis(port=server.port, password="s3cret", db=3)
        assert plain.get(k) == b"in-db-3"
        plain.close()
        pooled = aioredis.Redis(connection_pool=aioredis.BlockingConnectionPool.from_url(url, max_connections=2))
        like = RespClient.like(pooled)
        assert await like.execute("GET", k) == b"in-db-3"
        await like.aclose()
        await pooled.aclose()
        wrong = RespClient.from_url(f"redis://:wrong@127.0.0.1:{server.port}/0")
        with pytest.raises(AuthenticationError):
            await wrong.execute("PING")
        assert not wrong.connected
    finally:
        server.stop()


async def test_connect_refused_is_a_connection_error() -> None:
    c = RespClient.from_url(f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(RedisConnectionError):
        await c.execute("PING")
    assert c.connects == 0


async def test_replies_split_at_every_byte() -> None:
    """TCP may cut a reply anywhere: a server that sends one byte per write."""
    replies = b"+OK\r\n:-7\r\n$5\r\nhe\r\no\r\n$-1\r\n*2\r\n:1\r\n*1\r\n$0\r\n\r\n*-1\r\n-ERR bad thing\r\n*0\r\n"

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"PING\r\n")
        for i in range(len(replies)):
            writer.write(replies[i : i + 1])
            await writer.drain()
            await asyncio.sleep(0)
        await reader.read()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    c = RespClient("127.0.0.1", port)
    try:
        out = await c.pipeline_packed([command("PING")] * 8)
        assert out[:6] == [b"OK", -7, b"he\r\no", None, [1, [b""]], None]
        assert isinstance(out[6], ResponseError) and str(out[6]) == "bad thing"
        assert out[7] == []
    finally:
        await c.aclose()
        server.close()
        await server.wait_closed()
