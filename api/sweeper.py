"""The node-health sweep inside the API: every worker runs the ``node-health`` job at each period's
start through ``jobs.runner.run_job`` (the job's lock and its ``job_runs`` record), so API workers and
``cic jobs serve`` processes together sweep once per period.

The decisions come from ``cic.services.fleet_health``; the sweep itself is ``jobs.fleet.sweep_once``.
"""

from __future__ import annotations

import asyncio

from sqlalchemy.engine import Engine

from cic.models.types import utcnow
from cic.settings import Settings
from jobs import locks
from jobs.fleet import NODE_HEALTH, sweep_once
from jobs.registry import all_jobs
from jobs.runner import run_job

__all__ = ["run", "sweep_once"]


async def run(engine: Engine, settings: Settings) -> None:
    spec = all_jobs()[NODE_HEALTH]
    assert spec.every is not None
    lock = await asyncio.to_thread(locks.from_settings, settings, engine)
    try:
        while True:
            now = utcnow()
            await asyncio.sleep((spec.period_start(now) + spec.every - now).total_seconds())
            await asyncio.to_thread(run_job, spec, settings, engine, lock=lock)  # logs its failures
    finally:
        lock.close()
