"""``node-health``: the sweep that marks silent agent-run nodes unhealthy, then offline.

The decisions come from ``cic.services.fleet_health`` (pure, over a snapshot); this module carries
them out once per period. API workers run the same job (``api/sweeper.py``), so with or without a
jobs process the fleet is swept once per period.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from sqlalchemy.engine import Engine

from cic.db import session_scope
from cic.models.types import utcnow
from cic.services import fleet_health
from cic.settings import Settings
from jobs.registry import JobContext, job

log = logging.getLogger("cic.sweeper")

NODE_HEALTH = "node-health"
EVERY = timedelta(seconds=5)  # a third of the default heartbeat timeout (15 s)


def sweep_once(engine: Engine, settings: Settings) -> int:
    """Evaluate every agent-run node's heartbeat and apply the decisions; returns how many applied."""
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


@job(
    NODE_HEALTH,
    every=EVERY,
    timeout=timedelta(seconds=30),
    description="mark agent-run nodes without a recent heartbeat unhealthy, and offline after a long silence",
)
def node_health(ctx: JobContext) -> Mapping[str, Any]:
    return {"applied": sweep_once(ctx.engine, ctx.settings)}
