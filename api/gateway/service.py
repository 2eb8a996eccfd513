"""Start-up, background refreshes and shutdown of the data plane in one worker."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from api.gateway import metrics, tokens
from api.gateway.adapter import LiteLLMAdapter
from api.gateway.app import Gateway, GatewayState, Shedding
from api.gateway.auth import KeyCache
from api.gateway.catalog import load_catalog
from api.gateway.metering import UsageMeter
from api.gateway.ratelimit import FailoverLimiter, Limiter, LocalLimiter, RedisLimiter
from api.gateway.registry import load_nodes
from api.gateway.upstream import Timeouts, UpstreamPool
from cic.events import CHANNEL, Invalidation
from cic.limits import Limits
from cic.settings import Settings

log = logging.getLogger("cic.gateway")

CATALOG_REFRESH_S = 30.0
NO_BUS_TTL_S = 1.0


async def _flush_metrics() -> None:
    metrics.flush()


async def _warm_tokenizer() -> None:
    await asyncio.to_thread(tokens.count_tokens, "warm up")


def build_limiter(settings: Settings, redis: aioredis.Redis | None) -> Limiter:
    ttl = int(settings.limits_lease_ttl_s * 1000)
    if redis is None:
        return LocalLimiter(lease_ttl_ms=ttl)
    return FailoverLimiter(
        RedisLimiter(redis, lease_ttl_ms=ttl), workers=settings.workers, mode=settings.limits_fail_mode
    )


class DataPlane:
    """Owns the gateway's state and its background tasks for the life of a worker."""

    def __init__(self, settings: Settings, engine: Engine, redis: aioredis.Redis | None) -> None:
        self.settings = settings
        self.engine = engine
        self.redis = redis
        ttl = settings.key_cache_ttl_s if redis is not None else NO_BUS_TTL_S
        self.state = GatewayState(
            keys=KeyCache(engine, settings.key_pepper.get_secret_value(), ttl_s=ttl),
            meter=UsageMeter(engine, settings.spool_dir),
            pool=UpstreamPool(Timeouts(settings.upstream_connect_timeout_s, settings.upstream_read_timeout_s)),
            adapter=LiteLLMAdapter(),
            limiter=build_limiter(settings, redis),
            global_limits=Limits(
                settings.global_rpm, settings.global_tpm, settings.global_tpd, settings.global_max_concurrency
            ),
            default_policy=settings.routing_policy,
            shed=Shedding(settings.shed_waiting_threshold, settings.shed_queue_s),
            billing_grace_s=settings.billing_grace_days * 86400,
            limits_overlap=settings.limits_overlap,
        )
        self.gateway = Gateway(self.state)
        self._tasks: list[asyncio.Task[None]] = []
        self._meter_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        try:
            await self.refresh_catalog()
            await self.refresh_nodes()
        except SQLAlchemyError as exc:
            # Serve anyway: /ready reports the database, and the refresh loops retry every second.
            log.error("database unreachable at start-up; the data plane waits for it: %s", exc)
        # Load the tokenizer off the event loop now, not on the first request that needs it.
        self._tasks.append(asyncio.create_task(_warm_tokenizer(), name="tokenizer warm-up"))
        self._every(self.settings.node_refresh_s, self.refresh_nodes, "node registry")
        self._every(CATALOG_REFRESH_S, self.refresh_catalog, "catalog", until_loaded=True)
        self._every(self.settings.last_used_flush_s, self.state.keys.flush_last_used, "last_used_at")
        self._every(metrics.FLUSH_S, _flush_metrics, "metrics")
        self._meter_task = asyncio.create_task(self.state.meter.run(), name="usage meter")
        if self.redis is not None:
            self._tasks.append(asyncio.create_task(self._subscribe(), name="key invalidation"))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks.clear()
        # The meter is asked to stop, not cancelled: a batch it has taken is written (or spooled) first.
        await self.state.meter.close()
        if self._meter_task is not None:
            await self._meter_task
            self._meter_task = None
        with contextlib.suppress(RedisError, OSError):
            await self.state.limiter.close()
        with contextlib.suppress(SQLAlchemyError):
            await self.state.keys.flush_last_used()
        await self.state.pool.close()
        metrics.flush()

    async def refresh_nodes(self) -> None:
        self.state.registry.replace(await asyncio.to_thread(load_nodes, self.engine))

    async def refresh_catalog(self) -> None:
        self.state.catalog = await asyncio.to_thread(load_catalog, self.engine)

    def apply_invalidation(self, inv: Invalidation) -> None:
        """For processes without Redis: the management API calls this directly after a commit."""
        self.state.keys.apply(inv)

    def _every(
        self, seconds: float, fn: Callable[[], Awaitable[object]], what: str, *, until_loaded: bool = False
    ) -> None:
        async def loop() -> None:
            while True:
                # A catalog that never loaded (database down at start) is retried every second.
                empty = until_loaded and not self.state.catalog.models
                await asyncio.sleep(min(seconds, 1.0) if empty else seconds)
                try:
                    await fn()
                except (SQLAlchemyError, OSError) as exc:
                    log.warning("background refresh of %s failed: %s", what, exc)

        self._tasks.append(asyncio.create_task(loop(), name=what))

    async def _subscribe(self) -> None:
        assert self.redis is not None
        keys = self.state.keys
        backoff = 0.5
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(CHANNEL)
                # Whatever changed while we were not listening is unknown: start clean.
                keys.clear()
                keys.ttl_s = keys.base_ttl_s
                backoff = 0.5
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        keys.apply(Invalidation.from_json(message["data"]))
            except (RedisError, OSError) as exc:
                keys.ttl_s = NO_BUS_TTL_S
                keys.clear()
                log.warning("key invalidation channel lost (cache TTL now %.0f s): %s", NO_BUS_TTL_S, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()
