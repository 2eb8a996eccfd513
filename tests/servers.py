"""Real servers on loopback for tests: an event loop in a background thread runs simulators and the
API (uvicorn, in-process), so plain synchronous tests can drive them with the official clients."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import httpx
import uvicorn

from agent.simulator import RunningSim, SimConfig, start_simulator
from api.app import create_app
from api.server import HTTP_PROTOCOL
from cic.settings import Settings

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(
    check: Callable[[], T | None], *, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"
) -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (AssertionError, httpx.TransportError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


class LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="test-servers", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


class Sims:
    """Simulated vLLM nodes started on demand, stopped at the end of the test."""

    def __init__(self, loop: LoopThread) -> None:
        self._loop = loop
        self.running: list[RunningSim] = []

    def start(self, **config: Any) -> RunningSim:
        sim = self._loop.run(start_simulator(SimConfig(**config), "127.0.0.1", 0))
        self.running.append(sim)
        return sim

    def stop(self, sim: RunningSim) -> None:
        self._loop.run(sim.stop())
        self.running.remove(sim)

    def stop_all(self) -> None:
        for sim in list(self.running):
            self.stop(sim)


@contextmanager
def api_server(loop: LoopThread, settings: Settings, *, http: str = HTTP_PROTOCOL) -> Iterator[str]:
    """The platform app under uvicorn on a loopback port, lifespan and all (``http``: uvicorn's protocol)."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings),
            host="127.0.0.1",
            port=port,
            http=http,
            log_config=None,
            lifespan="on",
            access_log=False,
        )
    )
    task = asyncio.run_coroutine_threadsafe(server.serve(), loop.loop)
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: server.started, timeout=20, what="uvicorn start")
    try:
        yield base
    finally:
        server.should_exit = True
        task.result(20)
