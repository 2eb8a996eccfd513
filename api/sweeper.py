"""The node-health sweep, run by the API process in the background (one worker per period does it).

The decisions come from ``cic.services.fleet_health.evaluate`` over a snapshot; this module only
schedules them and holds the lock. The jobs process takes this over when it lands.
"""

from __future__ import annotations

import asyncio
import logging
import os

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from cic.db import session_scope
from cic.models.types import utcnow
from cic.services import fleet_health
from cic.settings import Settings

log = logging.getLogger("cic.sweeper")

LOCK_KEY = "cic:lock:node-health-sweep"


def sweep_once(engine: Engine, settings: Settings) -> int:
    with session_scope(engine) as session:
        decisions = fleet_health.evaluate(
            fleet_health.snapshot(session),
            utcnow(),
            heartbeat_timeout_s=settings.heartbeat_timeout_s,
            offline_after_s=settings.node_offline_after_s,
        )
        applied = fleet_health.execute(session, decisions)
    for d in decisions:
        log.warning("node health: %s %s (%s)", type(d).__name__, d.node_id, d.reason)
    return applied


async def run(engine: Engine, settings: Settings, redis: aioredis.Redis | None) -> None:
    interval = max(1.0, settings.heartbeat_timeout_s / 3)
    while True:
        await asyncio.sleep(interval)
        try:
            # One sweep per period across every worker and instance.
            if redis is not None and not await redis.set(LOCK_KEY, os.getpid(), nx=True, px=int(interval * 900)):
                continue
            await asyncio.to_thread(sweep_once, engine, settings)
        except (SQLAlchemyError, RedisError, OSError) as exc:
            log.warning("node health sweep failed: %s", exc)
