"""A vLLM simulator (as llm-d's inference simulator is): vLLM's OpenAI-compatible HTTP protocol, a latency model
and fault injection, for the gateway's tests, benchmarks and the all-in-one dev run.

Endpoints: ``POST /v1/chat/completions``, ``POST /v1/completions``, ``POST /v1/embeddings`` (chat-kind servers do
the first two, embedding-kind ones the last; the others answer 400 as vLLM does for a model without that API),
``GET /v1/models``, ``GET /health`` (200, or 503 during the slow start), ``GET /version``, ``GET /metrics``
(Prometheus, see `agent.sim_metrics`), and for tests ``GET/POST /sim/config`` (read / patch `SimConfig` at runtime)
and ``GET /sim/stats``.

Token model: `agent.sim_tokens` (re-exported here). Request rules, prefix and KV cache: `agent.sim_core`.
Endpoints: `agent.sim_http`. Wire shapes: `agent.sim_protocol`. Metrics: `agent.sim_metrics`.

Latency: a request waits for one of ``max_num_seqs`` slots (FIFO; ``vllm:num_requests_waiting``), then its first
token comes ``ttft_ms`` later and every next one ``itl_ms`` after that (both times ``speed``). With both at 0
nothing sleeps: the whole body is built and sent at once.

Faults, drawn per inference request from ``random.Random(seed)``: ``error_rate`` answers 500 with vLLM's error
body; ``hang_rate`` never answers (until the client leaves or the server stops); ``crash_after=K`` kills the server
once K inference requests have been answered (`ExitProcess`, ``os._exit(1)``, for a real process; in-process
servers from `start_simulator` close their listener and every connection instead); ``slow_start_s`` answers 503 on
``/health`` and inference until that many seconds after start; ``fail_stream_after=K`` aborts the TCP connection
of a stream after its first K events (``data: [DONE]`` counts) when it has more.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from agent.sim_config import SimConfig
from agent.sim_core import Simulator
from agent.sim_faults import CallbackCrash, CrashStrategy, ExitProcess
from agent.sim_http import (
    SIM_KEY,
    chat_completions,
    completions,
    embeddings,
    get_config,
    get_stats,
    health,
    metrics,
    models,
    patch_config,
    version,
)
from agent.sim_metrics import SimStats
from agent.sim_tokens import (
    chat_prompt_tokens,
    completion_prompt_tokens,
    count_text_tokens,
    generated_text,
    token_piece,
)

__all__ = [
    "CallbackCrash",
    "CrashStrategy",
    "ExitProcess",
    "RunningSim",
    "SimConfig",
    "SimStats",
    "Simulator",
    "build_app",
    "chat_prompt_tokens",
    "completion_prompt_tokens",
    "count_text_tokens",
    "generated_text",
    "run",
    "start_simulator",
    "token_piece",
]


# -- the app -----------------------------------------------------------------------------------------------------


def build_app(config: SimConfig, crash: CrashStrategy | None = None) -> web.Application:
    """The simulator as an aiohttp app; ``crash`` is what ``crash_after`` does (default: `ExitProcess`)."""
    app = web.Application(client_max_size=64 * 1024 * 1024)
    sim = Simulator(config, crash)
    app[SIM_KEY] = sim

    async def on_startup(_: web.Application) -> None:
        sim.started_at = time.monotonic()

    async def on_shutdown(_: web.Application) -> None:
        sim.closing = True

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", health)
    app.router.add_get("/version", version)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/sim/config", get_config)
    app.router.add_post("/sim/config", patch_config)
    app.router.add_get("/sim/stats", get_stats)
    return app


class RunningSim:
    """A simulator serving on loopback in this process (from `start_simulator`)."""

    def __init__(self, app: web.Application, runner: web.AppRunner, host: str, port: int) -> None:
        self._sim = app[SIM_KEY]
        self._runner = runner
        self.host = host
        self.port = port
        self.url = f"http://{host}:{port}"
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def config(self) -> SimConfig:
        return self._sim.config

    @property
    def stats(self) -> SimStats:
        """A snapshot of the counters and gauges."""
        return self._sim.snapshot()

    @property
    def crashed(self) -> bool:
        return self._sim.crashed

    def update(self, **changes: Any) -> SimConfig:
        """Patch the config, as ``POST /sim/config`` does."""
        return self._sim.update(changes)

    def _die(self) -> None:
        """The in-process crash: stop listening and drop every connection, in-flight requests included."""
        for site in list(self._runner.sites):
            task = asyncio.get_running_loop().create_task(site.stop())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        server = self._runner.server
        for conn in server.connections if server is not None else []:
            if conn.transport is not None:
                conn.transport.abort()

    async def stop(self) -> None:
        self._sim.closing = True
        await self._runner.cleanup()


async def start_simulator(
    config: SimConfig, host: str = "127.0.0.1", port: int = 0, *, crash: CrashStrategy | None = None
) -> RunningSim:
    """Serve a simulator in the running event loop; port 0 picks a free one. ``crash_after`` closes this server's
    listener and connections (not the process) unless ``crash`` says otherwise."""
    holder: list[RunningSim] = []
    app = build_app(config, crash or CallbackCrash(lambda: holder[0]._die()))
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1]
    running = RunningSim(app, runner, host, bound)
    holder.append(running)
    return running


async def _serve(config: SimConfig, host: str, port: int) -> None:
    app = build_app(config, ExitProcess())
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=5.0)
    await runner.setup()
    await web.TCPSite(runner, host, port, backlog=4096).start()
    print(f"vLLM simulator: {config.kind} model {config.model!r} on http://{host}:{port}", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def run(config: SimConfig, host: str, port: int) -> None:
    """Serve until SIGINT/SIGTERM (the CLI's ``sim`` command); uses uvloop when it is installed."""
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is optional
        pass
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(_serve(config, host, port))
