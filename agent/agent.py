"""The node agent: looks after the engine, registers the node, heartbeats its load, drains on notice.

Life of a node: start vLLM (or attach to a running server) → wait for its ``/health`` → register with a
bootstrap token → heartbeat every few seconds with the engine's scraped load → on SIGTERM or a spot
notice: tell the control plane it is draining (gateways stop sending new requests within a second),
wait for the engine's queue to empty (bounded), deregister, stop the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

import cic
from agent.control_plane import ControlPlaneClient, ControlPlaneError, NodeGone
from agent.engine import Engine
from agent.scrape import EngineStats
from agent.spot import Cloud, SpotNoticeWatcher

log = logging.getLogger("cic.agent")


@dataclass
class AgentConfig:
    control_plane: str
    token: str
    region: str
    model: str
    provider: str = "local"
    advertise_url: str | None = None  # how gateways reach the engine (default: the engine's own URL)
    engine: str = "vllm"
    served_model: str = ""
    name: str = ""
    gpu: str = ""
    spot: bool = False
    price_per_hour: float = 0.0
    launch_id: str | None = None
    spot_cloud: Cloud | None = None
    spot_notice_url: str | None = None
    spot_poll_s: float = 5.0
    engine_start_timeout_s: float = 1800.0
    drain_settle_s: float = 2.0  # gateways re-read the registry every second
    drain_timeout_s: float = 120.0
    register_retry_s: float = 2.0
    extra: dict[str, Any] = field(default_factory=dict)


class NodeAgent:
    def __init__(self, config: AgentConfig, engine: Engine, client: ControlPlaneClient | None = None) -> None:
        self.config = config
        self.engine = engine
        self.cp = client or ControlPlaneClient(config.control_plane)
        self.drain_requested = asyncio.Event()
        self.drain_reason = ""
        self.state = "starting"
        self.node_id: str | None = None
        self.heartbeats = 0
        self.last_stats = EngineStats()

    def request_drain(self, reason: str) -> None:
        if not self.drain_requested.is_set():
            log.warning("draining: %s", reason)
            self.drain_reason = reason
            self.drain_requested.set()

    def _info(self) -> dict[str, Any]:
        c = self.config
        return {
            "model": c.model,
            "region": c.region,
            "provider": c.provider,
            "endpoint_url": c.advertise_url or self.engine.url,
            "engine": c.engine,
            "served_model": c.served_model or c.model,
            "name": c.name,
            "gpu": c.gpu,
            "spot": c.spot,
            "price_per_hour": c.price_per_hour,
            "agent_version": cic.__version__,
            "launch_id": c.launch_id,
        }

    async def run(self) -> None:
        tasks: list[asyncio.Task[None]] = []
        try:
            await self.engine.start()
            if not await self.engine.wait_healthy(self.config.engine_start_timeout_s, self.drain_requested):
                if self.drain_requested.is_set():
                    return
                raise RuntimeError(
                    f"engine at {self.engine.url} not healthy after {self.config.engine_start_timeout_s:.0f} s"
                )
            await self._register()
            tasks.append(asyncio.create_task(self._heartbeats(), name="heartbeats"))
            if self.config.spot_cloud:
                tasks.append(asyncio.create_task(self._watch_spot(), name="spot notice"))
            await self.drain_requested.wait()
            await self._drain()
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await t
            await self.engine.stop()
            await self.cp.close()
            self.state = "stopped"

    async def _register(self) -> None:
        while True:
            try:
                reg = await self.cp.register(self.config.token, self._info())
                self.node_id = reg.node_id
                self.state = "registered"
                log.info("registered as %s", reg.node_id)
                return
            except ControlPlaneError as exc:
                if 400 <= exc.status < 500:
                    raise  # a bad token or an unknown model will not get better by retrying
                log.warning("registration failed, retrying: %s", exc)
            except OSError as exc:
                log.warning("control plane unreachable, retrying: %s", exc)
            await asyncio.sleep(self.config.register_retry_s)

    async def _scrape(self) -> tuple[EngineStats, bool]:
        try:
            stats = await self.engine.stats()
            return stats, not self.engine.crashed
        except Exception as exc:  # noqa: BLE001 - any failure to read the engine means: not healthy
            log.warning("engine metrics unreadable: %s", exc)
            return self.last_stats, False

    async def _heartbeats(self) -> None:
        assert self.cp.registration is not None
        while True:
            stats, healthy = await self._scrape()
            self.last_stats = stats
            try:
                reply = await self.cp.heartbeat(
                    stats.to_load(), engine_healthy=healthy, draining=self.drain_requested.is_set()
                )
                self.heartbeats += 1
                interval = float(reply.get("heartbeat_interval_s", self.cp.registration.heartbeat_interval_s))
            except NodeGone:
                log.warning("control plane forgot this node; registering again")
                await self._register()
                interval = self.cp.registration.heartbeat_interval_s
            except (ControlPlaneError, OSError) as exc:
                log.warning("heartbeat failed: %s", exc)
                interval = self.cp.registration.heartbeat_interval_s
            await asyncio.sleep(interval)

    async def _watch_spot(self) -> None:
        assert self.config.spot_cloud is not None
        watcher = SpotNoticeWatcher(self.config.spot_cloud, self.config.spot_notice_url)
        try:
            while not await watcher.notice():  # noqa: ASYNC110 - polling the cloud's metadata service
                await asyncio.sleep(self.config.spot_poll_s)
            self.request_drain(f"spot termination notice from {self.config.spot_cloud}")
        finally:
            await watcher.close()

    async def _drain(self) -> None:
        """Stop new traffic, let the engine finish what it has (bounded), leave the fleet."""
        self.state = "draining"
        if self.cp.registration is None:
            return
        with contextlib.suppress(ControlPlaneError, OSError):
            await self.cp.drain()
        loop = asyncio.get_running_loop()
        await asyncio.sleep(self.config.drain_settle_s)
        deadline = loop.time() + self.config.drain_timeout_s
        while loop.time() < deadline:
            stats, healthy = await self._scrape()
            if not healthy or stats.queue_depth == 0:
                break
            await asyncio.sleep(0.2)
        else:
            log.error("drain timed out with requests still in flight")
        with contextlib.suppress(ControlPlaneError, OSError):
            await self.cp.deregister()
        self.state = "deregistered"
        log.info("deregistered %s", self.node_id)
