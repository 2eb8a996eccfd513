"""A TCP proxy in front of Redis that can hold back Redis's replies, to see what the gateway does while
an admission is in flight. Runs on a test's event-loop thread."""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit, urlunsplit

from tests.servers import LoopThread


class HoldingRedisProxy:
    def __init__(self, loop: LoopThread, redis_url: str) -> None:
        self._loop = loop
        parts = urlsplit(redis_url)
        self._redis_url = parts
        self._target = (parts.hostname or "127.0.0.1", parts.port or 6379)
        self._held = False
        self._released = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.url = ""

    def start(self) -> None:
        self._server = self._loop.run(asyncio.start_server(self._client, "127.0.0.1", 0))
        port = self._server.sockets[0].getsockname()[1]
        netloc = self._redis_url.netloc.rsplit("@", 1)
        host = f"127.0.0.1:{port}"
        self.url = urlunsplit(self._redis_url._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))

    def stop(self) -> None:
        async def stop() -> None:
            self._released.set()
            if self._server is not None:
                self._server.close()
            for w in list(self._writers):
                w.close()

        self._loop.run(stop())

    def hold(self) -> None:
        """From now on, Redis's replies wait in the proxy until ``release``."""

        def hold() -> None:
            self._held = True
            self._released = asyncio.Event()

        self._loop.loop.call_soon_threadsafe(hold)

    def release(self) -> None:
        def release() -> None:
            self._held = False
            self._released.set()

        self._loop.loop.call_soon_threadsafe(release)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self._target)
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, *, replies: bool) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    if replies and self._held:
                        await self._released.wait()
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer, replies=False), pipe(up_reader, writer, replies=True))
        self._writers -= {writer, up_writer}
