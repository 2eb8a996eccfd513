"""The inference engine the agent looks after: a supervised ``vllm serve`` process, or one it attaches to."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Sequence

import httpx

from agent.scrape import EngineStats

log = logging.getLogger("cic.agent.engine")


class Engine:
    """An OpenAI-compatible server at ``url`` with vLLM's ``/health`` and ``/metrics``."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.AsyncClient(base_url=self.url, timeout=5.0)

    async def healthy(self) -> bool:
        try:
            return (await self._http.get("/health")).status_code == 200
        except httpx.HTTPError:
            return False

    async def wait_healthy(self, timeout_s: float, stop: asyncio.Event | None = None) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            if await self.healthy():
                return True
            if stop is not None and stop.is_set():
                return False
            await asyncio.sleep(0.5)
        return False

    async def stats(self) -> EngineStats:
        r = await self._http.get("/metrics")
        r.raise_for_status()
        return EngineStats.from_vllm_scrape(r.text)

    async def start(self) -> None:
        """Nothing to start for an attached server."""

    async def stop(self) -> None:
        await self._http.aclose()

    @property
    def crashed(self) -> bool:
        return False


class VllmProcess(Engine):
    """``python -m vllm.entrypoints.openai.api_server`` as a child, restarted with back-off if it dies."""

    def __init__(
        self,
        model_path: str,
        served_model: str,
        *,
        host: str = "127.0.0.1",
        port: int = 8000,
        extra_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        python: str | None = None,
    ) -> None:
        # Bound to every interface, vLLM is still reached locally through the loopback address.
        local = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104
        super().__init__(f"http://{local}:{port}")
        self.argv = [
            python or sys.executable,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            model_path,
            "--served-model-name",
            served_model,
            "--host",
            host,
            "--port",
            str(port),
            *extra_args,
        ]
        self.env = {**os.environ, **(env or {})}
        self.proc: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        await self._spawn()
        self._supervisor = asyncio.create_task(self._supervise(), name="vllm supervisor")

    async def _spawn(self) -> None:
        log.info("starting vLLM: %s", " ".join(self.argv[1:]))
        self.proc = await asyncio.create_subprocess_exec(*self.argv, env=self.env, start_new_session=True)

    async def _supervise(self) -> None:
        backoff = 1.0
        while not self._stopping:
            assert self.proc is not None
            code = await self.proc.wait()
            if self._stopping:
                return
            self.restarts += 1
            log.error("vLLM exited with %s; restarting in %.0f s (restart %d)", code, backoff, self.restarts)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 60.0)
            await self._spawn()

    @property
    def crashed(self) -> bool:
        return self.proc is not None and self.proc.returncode is not None

    async def stop(self, grace_s: float = 30.0) -> None:
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), grace_s)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                await self.proc.wait()
        await super().stop()
