"""run_job: once per period across instances, on every lock backend; failures, retries, timeouts,
crashed holders, forced runs."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine

from cic.models import JobRun
from cic.models.types import utcnow
from cic.settings import Settings
from jobs import locks, records
from jobs.registry import JobContext
from jobs.runner import RunStatus, lock_ttl, run_job
from tests.jobs.conftest import Backend, make_spec
from tests.servers import wait_until

LockFactory = Callable[[], locks.JobLock]
PERIOD = datetime(2026, 11, 28, 15, tzinfo=UTC)


class Counting:
    """A job that counts its calls and says which attempt and whether forced."""

    def __init__(self) -> None:
        self.calls: list[JobContext] = []

    def __call__(self, ctx: JobContext) -> dict[str, Any]:
        self.calls.append(ctx)
        return {"n": len(self.calls), "attempt": ctx.attempt, "forced": ctx.forced}


def runs(engine: Engine, name: str) -> list[JobRun]:
    with engine.connect() as conn:
        rows = conn.execute(select(JobRun.__table__).where(JobRun.__table__.c.name == name))  # type: ignore[attr-defined]
        return [JobRun(**r._mapping) for r in rows]


def test_two_instances_at_once_run_it_once(backend: Backend, lock_factory: LockFactory, job_name: str) -> None:
    """A holds the lock while B tries: B skips; after A, a third try skips on the period record."""
    entered, gate = threading.Event(), threading.Event()
    calls: list[datetime] = []

    def export(ctx: JobContext) -> dict[str, Any]:
        calls.append(ctx.now)
        entered.set()
        assert gate.wait(20)
        return {"exported": 1}

    spec = make_spec(job_name, export)
    now = PERIOD + timedelta(minutes=20)
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(run_job, spec, backend.settings, backend.engine, now=now, lock=lock_factory())
        assert entered.wait(20)
        second = run_job(spec, backend.settings, backend.engine, now=now, lock=lock_factory())
        gate.set()
        a = first.result(20)
    assert a.status is RunStatus.ran and a.summary == {"exported": 1} and a.lock_backend == backend.name
    assert second.status is RunStatus.skipped and "lock held" in (second.reason or "")
    third = run_job(spec, backend.settings, backend.engine, now=now + timedelta(minutes=30), lock=lock_factory())
    assert third.status is RunStatus.skipped and "already ran" in (third.reason or "")
    assert calls == [PERIOD]
    [row] = runs(backend.engine, job_name)
    assert (row.status, row.attempts, row.period_start, row.summary) == ("ran", 1, PERIOD, {"exported": 1})
    assert row.finished_at is not None and row.duration_ms is not None
    # The next period runs.
    assert run_job(spec, backend.settings, backend.engine, now=now + timedelta(hours=1)).status is RunStatus.ran
    assert len(calls) == 2


def test_a_burst_of_instances_runs_it_once(backend: Backend, lock_factory: LockFactory, job_name: str) -> None:
    n = 8
    job = Counting()
    spec = make_spec(job_name, job)
    start = threading.Barrier(n)
    lock_clients = [lock_factory() for _ in range(n)]

    def instance(lock: locks.JobLock) -> RunStatus:
        start.wait(20)
        return run_job(spec, backend.settings, backend.engine, lock=lock).status

    with ThreadPoolExecutor(n) as pool:
        statuses = list(pool.map(instance, lock_clients))
    assert statuses.count(RunStatus.ran) == 1 and statuses.count(RunStatus.skipped) == n - 1
    assert len(job.calls) == 1
    assert len(runs(backend.engine, job_name)) == 1


def test_a_crashed_run_is_taken_over_after_the_lock_ttl(
    backend: Backend, lock_factory: LockFactory, job_name: str
) -> None:
    """A holder took the lock, claimed the period and died: the next run proceeds once its TTL passes."""
    spec = make_spec(job_name, Counting(), timeout=timedelta(milliseconds=500))
    now = utcnow()
    period = spec.period_start(now)
    crashed = lock_factory().acquire(locks.lock_key(job_name), lock_ttl(spec))
    assert crashed is not None
    claimed = records.claim(
        backend.engine,
        job_name,
        period,
        crashed.token,
        now=utcnow(),
        force=False,
        max_attempts=3,
        takeover_running=True,
        stale_before=utcnow(),
    )
    assert claimed == records.Claimed(1)
    lock = lock_factory()
    assert run_job(spec, backend.settings, backend.engine, now=now, lock=lock).status is RunStatus.skipped

    def proceeds() -> bool:
        return run_job(spec, backend.settings, backend.engine, now=now, lock=lock).status is RunStatus.ran

    wait_until(proceeds, timeout=20, what="the crashed holder's lock to expire")
    [row] = runs(backend.engine, job_name)
    assert row.status == "ran" and row.attempts == 2 and row.summary == {"attempt": 2, "n": 1, "forced": False}
    # The crashed holder comes back: it cannot overwrite the record nor free the new holder's lock.
    assert not records.finish(
        backend.engine,
        job_name,
        period,
        crashed.token,
        status=records.JobRunStatus.failed,
        finished_at=utcnow(),
        duration_ms=1,
        summary=None,
        error="late",
    )
    assert crashed.release() is False
    assert runs(backend.engine, job_name)[0].status == "ran"


@pytest.mark.parametrize("backend", ["redis", "local"], indirect=True)
def test_failure_is_recorded_and_retried_up_to_max_attempts(backend: Backend, job_name: str) -> None:
    outcomes = iter([RuntimeError("stripe said no"), RuntimeError("again"), None])
    attempts: list[int] = []

    def flaky(ctx: JobContext) -> dict[str, Any]:
        attempts.append(ctx.attempt)
        error = next(outcomes)
        if error:
            raise error
        return {"ok": True}

    spec = make_spec(job_name, flaky, max_attempts=3)
    first = run_job(spec, backend.settings, backend.engine)
    assert first.status is RunStatus.failed and first.error == "RuntimeError: stripe said no" and not first.ok
    [row] = runs(backend.engine, job_name)
    assert (row.status, row.error, row.attempts) == ("failed", "RuntimeError: stripe said no", 1)
    assert run_job(spec, backend.settings, backend.engine).status is RunStatus.failed
    third = run_job(spec, backend.settings, backend.engine)
    assert third.status is RunStatus.ran and third.attempt == 3
    assert attempts == [1, 2, 3]
    [row] = runs(backend.engine, job_name)
    assert (row.status, row.error, row.attempts, row.summary) == ("ran", None, 3, {"ok": True})


@pytest.mark.parametrize("backend", ["redis"], indirect=True)
def test_a_period_stops_retrying_after_max_attempts(backend: Backend, job_name: str) -> None:
    calls: list[int] = []

    def broken(ctx: JobContext) -> None:
        calls.append(1)
        raise ValueError("bad data")

    spec = make_spec(job_name, broken, max_attempts=2)
    assert [run_job(spec, backend.settings, backend.engine).status for _ in range(2)] == [RunStatus.failed] * 2
    third = run_job(spec, backend.settings, backend.engine)
    assert third.status is RunStatus.skipped and "failed 2 times" in (third.reason or "")
    assert len(calls) == 2
    forced = run_job(spec, backend.settings, backend.engine, force=True)  # an operator insists
    assert forced.status is RunStatus.failed and len(calls) == 3


@pytest.mark.parametrize("backend", ["redis", "postgresql"], indirect=True)
def test_force_runs_again_but_still_takes_the_lock(backend: Backend, job_name: str) -> None:
    job = Counting()
    spec = make_spec(job_name, job)
    assert run_job(spec, backend.settings, backend.engine).status is RunStatus.ran
    assert run_job(spec, backend.settings, backend.engine).status is RunStatus.skipped
    forced = run_job(spec, backend.settings, backend.engine, force=True)
    assert forced.status is RunStatus.ran and forced.summary == {"forced": True, "n": 2, "attempt": 2}
    [row] = runs(backend.engine, job_name)
    assert row.forced and row.attempts == 2
    holder = backend.make_lock()
    lease = holder.acquire(locks.lock_key(job_name), timedelta(seconds=30))
    assert lease is not None
    blocked = run_job(spec, backend.settings, backend.engine, force=True)
    assert blocked.status is RunStatus.skipped and "lock held" in (blocked.reason or "")
    assert lease.release()
    holder.close()
    assert [c.forced for c in job.calls] == [False, True]


@pytest.mark.parametrize("backend", ["redis", "postgresql", "local"], indirect=True)
def test_timeout_fails_the_run_and_the_lock_stays_until_the_job_returns(
    backend: Backend, lock_factory: LockFactory, job_name: str
) -> None:
    release = threading.Event()
    seen_cancel: list[bool] = []

    def stuck(ctx: JobContext) -> dict[str, Any]:
        seen_cancel.append(ctx.cancelled.wait(20))  # a cooperative job sees the runner give up...
        release.wait(20)  # ...but this one keeps going a while
        return {"late": True}

    spec = make_spec(job_name, stuck, timeout=timedelta(milliseconds=300))
    result = run_job(spec, backend.settings, backend.engine, lock=lock_factory())
    assert result.status is RunStatus.failed and result.error == "timed out after 0.3 s"
    [row] = runs(backend.engine, job_name)
    assert row.status == "failed" and row.error == "timed out after 0.3 s"
    other = lock_factory()
    key = locks.lock_key(job_name)
    assert other.acquire(key, timedelta(seconds=30)) is None  # the abandoned run still holds it
    wait_until(lambda: seen_cancel, timeout=10, what="the job to see ctx.cancelled")
    assert seen_cancel == [True]
    release.set()
    lease = wait_until(lambda: other.acquire(key, timedelta(seconds=30)), timeout=10, what="the lock's release")
    assert lease.release()
    assert runs(backend.engine, job_name)[0].status == "failed"  # the late result is not recorded


@pytest.mark.parametrize("backend", ["local"], indirect=True)
def test_without_a_distributed_lock_a_running_record_is_only_taken_over_when_stale(
    backend: Backend, job_name: str
) -> None:
    """On SQLite the lock is per process: another process's 'running' record means it is running."""
    spec = make_spec(job_name, lambda ctx: {"ok": True}, timeout=timedelta(seconds=1))
    period = spec.period_start(utcnow())
    elsewhere = records.claim(
        backend.engine,
        job_name,
        period,
        "otherhost/123/abc",
        now=utcnow(),
        force=False,
        max_attempts=3,
        takeover_running=False,
        stale_before=utcnow(),
    )
    assert elsewhere == records.Claimed(1)
    skipped = run_job(spec, backend.settings, backend.engine)
    assert skipped.status is RunStatus.skipped and "running since" in (skipped.reason or "")
    wait_until(
        lambda: run_job(spec, backend.settings, backend.engine).status is RunStatus.ran,
        timeout=15,
        what="the stale record to be taken over",
    )


@pytest.mark.parametrize("backend", ["redis"], indirect=True)
def test_context_and_summary(backend: Backend, job_name: str) -> None:
    seen: list[JobContext] = []

    def job(ctx: JobContext) -> dict[str, Any]:
        seen.append(ctx)
        return {"when": ctx.now, "amount": 1.5, "ids": ("a", "b")}

    spec = make_spec(job_name, job, every=timedelta(minutes=15))
    result = run_job(spec, backend.settings, backend.engine, now=PERIOD + timedelta(minutes=14, seconds=59))
    [ctx] = seen
    assert ctx.now == PERIOD and ctx.now.tzinfo is not None and ctx.attempt == 1 and not ctx.forced
    assert ctx.settings is backend.settings and ctx.engine is backend.engine
    assert ctx.deadline is not None and ctx.deadline > utcnow()
    assert result.summary == {"when": PERIOD.isoformat(), "amount": 1.5, "ids": ["a", "b"]}
    out = result.as_dict()
    assert out["status"] == "ran" and out["period_start"] == PERIOD.isoformat() and out["job"] == job_name


@pytest.mark.parametrize("backend", ["redis"], indirect=True)
def test_a_job_returning_something_else_fails(backend: Backend, job_name: str) -> None:
    spec = make_spec(job_name, lambda ctx: [1, 2])  # type: ignore[arg-type,return-value]
    result = run_job(spec, backend.settings, backend.engine)
    assert result.status is RunStatus.failed and "returns a mapping or None, not list" in (result.error or "")


def test_lock_backend_down_fails_the_run(settings: Settings, engine: Engine, job_name: str) -> None:
    job = Counting()
    spec = make_spec(job_name, job)
    down = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    result = run_job(spec, down, engine)
    assert result.status is RunStatus.failed and (result.error or "").startswith("lock unavailable: redis")
    assert job.calls == [] and runs(engine, job_name) == []


def test_database_down_fails_the_run(settings: Settings, job_name: str) -> None:
    from cic.db import make_engine

    job = Counting()
    spec = make_spec(job_name, job)
    dead = settings.model_copy(update={"database_url": "postgresql://postgres@127.0.0.1:1/nowhere"})
    engine = make_engine(dead)
    try:
        result = run_job(spec, dead, engine)
    finally:
        engine.dispose()
    assert result.status is RunStatus.failed and (result.error or "").startswith("could not record the run")
    assert job.calls == []
