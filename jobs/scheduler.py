"""The scheduler: APScheduler 3 with its job store on the main database (``apscheduler_jobs``).

Every execution goes through ``jobs.runner.run_job`` (the job's lock and its ``job_runs`` record), so
any number of schedulers — ``cic jobs serve`` processes, ``cic up``, API workers sweeping nodes —
run each job once per period. ``JobExecutor`` is an APScheduler executor that does exactly that,
with the scheduled time as the period (a late run still runs the period it was scheduled for).

On start the registered jobs are written to the job store (a changed schedule replaces the stored
job; an unchanged one keeps its stored next run time, so a run missed while every scheduler was down
happens at start-up: cron jobs however late, interval jobs within one interval), and stored jobs
that no longer exist in the code are removed.
"""

from __future__ import annotations

import concurrent.futures
import logging
import signal
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.events import (  # type: ignore[import-untyped]
    EVENT_JOB_ERROR,
    EVENT_JOB_EXECUTED,
    EVENT_JOB_MISSED,
    JobExecutionEvent,
)
from apscheduler.executors.base import BaseExecutor  # type: ignore[import-untyped]
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore  # type: ignore[import-untyped]
from apscheduler.schedulers.background import BackgroundScheduler  # type: ignore[import-untyped]
from sqlalchemy.engine import Engine

from cic.models.types import utcnow
from cic.settings import Settings
from jobs import locks, schedule
from jobs.registry import JobSpec, jobs_for
from jobs.runner import RunStatus, run_job

log = logging.getLogger("cic.jobs.scheduler")

JOB_TABLE = "apscheduler_jobs"


class JobFailed(Exception):
    """A scheduled run that failed (its error is in ``job_runs`` and the logs)."""


def scheduled(name: str) -> None:
    """The callable the job store records for every job (a picklable reference with the job's name).
    Executions never call it: ``JobExecutor`` runs the job through ``run_job`` instead."""
    raise RuntimeError(f"job {name!r} must run through jobs.scheduler.JobExecutor (run_job), not directly")


def misfire_grace(spec: JobSpec) -> int | None:
    """Interval jobs may start up to one interval late; cron jobs run however late (once, coalesced)."""
    if spec.every is not None:
        return max(1, int(spec.every.total_seconds()))
    return None


class _JobStore(SQLAlchemyJobStore):
    """APScheduler's job store on an engine it does not own (its shutdown would dispose it)."""

    def shutdown(self) -> None:
        pass


class JobExecutor(BaseExecutor):
    """Runs each scheduled execution through ``run_job`` in a thread pool."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        specs: Mapping[str, JobSpec],
        lock: locks.JobLock,
        stopping: threading.Event,
        max_workers: int = 8,
    ) -> None:
        super().__init__()
        self._settings = settings
        self._engine = engine
        self._specs = dict(specs)
        self._job_lock = lock
        self._stopping = stopping
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers, thread_name_prefix="cic-job")

    def _do_submit_job(self, job: Any, run_times: list[datetime]) -> None:
        def done(future: concurrent.futures.Future[list[JobExecutionEvent]]) -> None:
            exc = future.exception()
            if exc is not None:
                self._run_job_error(job.id, exc, exc.__traceback__)
            else:
                self._run_job_success(job.id, future.result())

        self._pool.submit(self._execute, job, run_times).add_done_callback(done)

    def _execute(self, job: Any, run_times: list[datetime]) -> list[JobExecutionEvent]:
        run_time = run_times[-1]  # coalesced: the latest missed time stands for them all
        store = job._jobstore_alias
        late = utcnow() - run_time
        if job.misfire_grace_time is not None and late > timedelta(seconds=job.misfire_grace_time):
            log.warning("job %s missed its run at %s by %s", job.id, run_time.isoformat(), late, extra={"job": job.id})
            return [JobExecutionEvent(EVENT_JOB_MISSED, job.id, store, run_time)]
        spec = self._specs.get(job.id)
        if spec is None:
            exc = JobFailed(f"job {job.id!r} is in the job store but not registered in this process")
            return [JobExecutionEvent(EVENT_JOB_ERROR, job.id, store, run_time, exception=exc)]
        result = run_job(spec, self._settings, self._engine, now=run_time, lock=self._job_lock, cancel=self._stopping)
        if result.status is RunStatus.failed:
            exc = JobFailed(result.error)
            return [JobExecutionEvent(EVENT_JOB_ERROR, job.id, store, run_time, exception=exc)]
        return [JobExecutionEvent(EVENT_JOB_EXECUTED, job.id, store, run_time, retval=result.as_dict())]

    def shutdown(self, wait: bool = True) -> None:
        self._pool.shutdown(wait)


def sync_jobs(scheduler: BackgroundScheduler, specs: Mapping[str, JobSpec]) -> None:
    """Make the job store hold exactly the registered jobs with their current schedules."""
    stored = {j.id: j for j in scheduler.get_jobs()}
    for name, spec in specs.items():
        trigger = schedule.trigger_for(spec.every, spec.cron)
        options: dict[str, Any] = {
            "name": name,
            "misfire_grace_time": misfire_grace(spec),
            "coalesce": True,
            "max_instances": 1,
        }
        current = stored.get(name)
        if current is not None and repr(current.trigger) == repr(trigger):  # same schedule: keep its next run
            scheduler.modify_job(name, func=scheduled, args=(name,), kwargs={}, executor="default", **options)
        else:
            scheduler.add_job(scheduled, trigger, args=[name], id=name, replace_existing=True, **options)
    for name in stored.keys() - specs.keys():
        log.info("removing job %s from the job store: no longer registered", name)
        scheduler.remove_job(name)


def build_scheduler(
    settings: Settings,
    engine: Engine,
    specs: Mapping[str, JobSpec],
    lock: locks.JobLock,
    stopping: threading.Event,
) -> BackgroundScheduler:
    """An unstarted scheduler: job store on ``engine``, every execution through ``run_job``, UTC."""
    return BackgroundScheduler(
        jobstores={"default": _JobStore(engine=engine, tablename=JOB_TABLE)},
        executors={"default": JobExecutor(settings, engine, specs, lock, stopping)},
        job_defaults={"coalesce": True, "max_instances": 1},
        timezone=UTC,
    )


@dataclass
class SchedulerHandle:
    scheduler: BackgroundScheduler
    specs: dict[str, JobSpec]
    lock: locks.JobLock
    stopping: threading.Event

    def shutdown(self, wait: bool = True) -> None:
        """Stop scheduling; with ``wait``, let running jobs finish (they are told through ``ctx.cancelled``)."""
        self.stopping.set()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=wait)
        self.lock.close()
        log.info("jobs scheduler stopped")


def start_background(
    settings: Settings, engine: Engine, *, specs: Mapping[str, JobSpec] | None = None
) -> SchedulerHandle:
    """Start the scheduler in background threads of this process (``cic up``); ``.shutdown()`` stops it."""
    chosen = dict(specs if specs is not None else jobs_for(settings))
    lock = locks.from_settings(settings, engine)
    stopping = threading.Event()
    scheduler = build_scheduler(settings, engine, chosen, lock, stopping)
    try:
        scheduler.start(paused=True)
        sync_jobs(scheduler, chosen)
        scheduler.resume()
    except BaseException:
        if scheduler.running:
            scheduler.shutdown(wait=False)
        lock.close()
        raise
    log.info(
        "jobs scheduler started",
        extra={"jobs": {n: s.schedule for n, s in chosen.items()}, "lock": lock.backend},
    )
    return SchedulerHandle(scheduler, chosen, lock, stopping)


def serve(settings: Settings, engine: Engine, *, specs: Mapping[str, JobSpec] | None = None) -> None:
    """``cic jobs serve``: run the scheduler until SIGTERM or SIGINT, then stop gracefully.

    The scheduler runs in background threads and the main thread waits for a signal, so shutdown
    happens outside the signal handler (APScheduler's BlockingScheduler would have to stop from it)."""
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        handle = start_background(settings, engine, specs=specs)
        try:
            while not stop.wait(1.0):
                pass
        finally:
            handle.shutdown(wait=True)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
