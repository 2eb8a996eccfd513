"""The scheduler: APScheduler with its job store on the main database, every execution through run_job."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from cic.settings import Settings
from jobs import locks, scheduler
from jobs.registry import JobContext
from tests.jobs.conftest import make_spec
from tests.jobs.test_runner import runs
from tests.servers import wait_until


def stored_jobs(engine: Engine) -> dict[str, float | None]:
    with engine.connect() as conn:
        return {r[0]: r[1] for r in conn.execute(text("SELECT id, next_run_time FROM apscheduler_jobs"))}


class Ticks:
    def __init__(self) -> None:
        self.periods: list[datetime] = []
        self._guard = threading.Lock()

    def __call__(self, ctx: JobContext) -> dict[str, Any]:
        with self._guard:
            self.periods.append(ctx.now)
        return {"period": ctx.now.isoformat()}


@pytest.fixture
def handles() -> Iterator[list[scheduler.SchedulerHandle]]:
    started: list[scheduler.SchedulerHandle] = []
    yield started
    for h in started:
        h.shutdown(wait=True)


def test_background_scheduler_runs_every_period_and_keeps_its_jobs_in_the_database(
    settings: Settings, engine: Engine, job_name: str, handles: list[scheduler.SchedulerHandle]
) -> None:
    ticks = Ticks()
    spec = make_spec(job_name, ticks, every=timedelta(seconds=1), timeout=timedelta(seconds=5))
    handles.append(scheduler.start_background(settings, engine, specs={job_name: spec}))
    assert handles[0].lock.backend == "redis"
    stored = stored_jobs(engine)
    assert set(stored) == {job_name} and stored[job_name] is not None  # the persistent job store

    wait_until(lambda: len([r for r in runs(engine, job_name) if r.status == "ran"]) >= 2, timeout=20, what="2 runs")
    handles.pop().shutdown(wait=True)
    rows = runs(engine, job_name)
    assert all(r.period_start.microsecond == 0 for r in rows)  # scheduled at the start of each period
    assert all(r.attempts == 1 for r in rows)
    assert sorted(ticks.periods) == sorted(r.period_start for r in rows)


def test_several_schedulers_run_each_period_once(
    settings: Settings, engine: Engine, job_name: str, handles: list[scheduler.SchedulerHandle]
) -> None:
    ticks = Ticks()
    spec = make_spec(job_name, ticks, every=timedelta(seconds=1), timeout=timedelta(seconds=5))
    for _ in range(3):  # three instances sharing the database and Redis, each with its own lock client
        handles.append(scheduler.start_background(settings, engine, specs={job_name: spec}))
    wait_until(lambda: len(set(ticks.periods)) >= 4, timeout=30, what="4 periods")
    for h in handles:
        h.shutdown(wait=True)
    handles.clear()
    assert max(Counter(ticks.periods).values()) == 1
    assert all(r.attempts == 1 and r.status == "ran" for r in runs(engine, job_name))


def test_sync_jobs_keeps_unchanged_schedules_replaces_changed_ones_removes_stale(
    settings: Settings, engine: Engine, job_name: str
) -> None:
    daily = make_spec(job_name, Ticks(), cron="0 4 * * *")
    other = make_spec(job_name + "-x", Ticks(), every=timedelta(minutes=5))
    lock = locks.from_settings(settings, engine)
    sched = scheduler.build_scheduler(settings, engine, {}, lock, threading.Event())
    sched.start(paused=True)
    try:
        scheduler.sync_jobs(sched, {daily.name: daily, other.name: other})
        assert set(stored_jobs(engine)) == {daily.name, other.name}
        job = sched.get_job(daily.name)
        assert job.misfire_grace_time is None and job.coalesce and job.max_instances == 1
        assert sched.get_job(other.name).misfire_grace_time == 300

        # A run missed while every scheduler was down: kept across a restart with the same schedule.
        missed = datetime(2026, 1, 1, 4, tzinfo=UTC)
        sched.modify_job(daily.name, next_run_time=missed)
        scheduler.sync_jobs(sched, {daily.name: daily, other.name: other})
        assert sched.get_job(daily.name).next_run_time == missed

        # A changed schedule replaces the stored job; a job no longer registered is removed.
        changed = make_spec(job_name, Ticks(), cron="30 4 * * *")
        scheduler.sync_jobs(sched, {changed.name: changed})
        assert set(stored_jobs(engine)) == {changed.name}
        assert sched.get_job(changed.name).next_run_time.minute == 30
    finally:
        sched.shutdown(wait=False)
        lock.close()


def test_the_stored_callable_refuses_to_run_outside_the_executor() -> None:
    with pytest.raises(RuntimeError, match="run_job"):
        scheduler.scheduled("node-health")
