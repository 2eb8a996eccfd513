"""``run_job``: one job, one period, once across every instance.

1. The period is the schedule slot containing ``now`` (``JobSpec.period_start``).
2. Take the job's lock (``jobs.locks``) for ``lock_ttl`` (timeout + grace); held elsewhere → skipped.
3. Claim the period in ``job_runs`` (``jobs.records.claim``); already ran → skipped. A failed run is
   retried by the next trigger in the same period, up to ``max_attempts``; ``force`` claims anyway.
4. Run the function in a worker thread for at most ``timeout``. On timeout the run is recorded
   failed and ``ctx.cancelled`` is set; the lock stays with the abandoned thread until it returns or
   the TTL passes, so a stuck run is never overlapped before then.
5. Record the outcome (ran / failed, summary JSON or error) and release the lock (compare-and-delete).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from cic.models.jobs import JobRunStatus
from cic.models.types import utcnow
from cic.settings import Settings
from jobs import locks, records
from jobs.registry import JobContext, JobSpec

_CANCEL_POLL_S = 0.25
LOCK_GRACE = timedelta(seconds=5)
"""How long a lock outlives its job's timeout (at most; never more than the timeout itself): time to
record the outcome and release."""

log = logging.getLogger("cic.jobs")


class RunStatus(StrEnum):
    ran = "ran"
    skipped = "skipped"
    failed = "failed"


@dataclass(frozen=True)
class RunResult:
    name: str
    status: RunStatus
    period_start: datetime
    duration_s: float
    summary: dict[str, Any] | None = None
    reason: str | None = None
    """Why the run was skipped."""
    error: str | None = None
    """Why the run failed."""
    attempt: int | None = None
    lock_backend: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not RunStatus.failed

    def as_dict(self) -> dict[str, Any]:
        return {
            "job": self.name,
            "status": self.status.value,
            "period_start": self.period_start.isoformat(),
            "duration_s": round(self.duration_s, 3),
            "attempt": self.attempt,
            "lock": self.lock_backend,
            "summary": self.summary,
            "reason": self.reason,
            "error": self.error,
        }


def lock_ttl(spec: JobSpec) -> timedelta:
    """How long a holder keeps the job's lock at most (a crashed holder's lock frees itself then)."""
    return spec.timeout + min(spec.timeout, LOCK_GRACE)


def run_job(
    spec: JobSpec,
    settings: Settings,
    engine: Engine,
    *,
    now: datetime | None = None,
    force: bool = False,
    lock: locks.JobLock | None = None,
    cancel: threading.Event | None = None,
) -> RunResult:
    """Run ``spec`` for the period containing ``now`` (default: the current time) unless that period
    has run already (or ``force``). ``lock`` defaults to the backend the settings choose (opened and
    closed here); ``cancel`` is set by a scheduler that is stopping and reaches the job as ``ctx.cancelled``."""
    started = time.monotonic()
    period = spec.period_start(now or utcnow())
    own_lock = lock is None
    if lock is None:
        lock = locks.from_settings(settings, engine)
    try:
        return _Run(spec, settings, engine, period, force, lock, cancel, started).execute()
    finally:
        if own_lock:
            lock.close()


@dataclass
class _Outcome:
    summary: dict[str, Any] | None = None
    error: str | None = None
    timed_out: bool = False


@dataclass
class _Run:
    spec: JobSpec
    settings: Settings
    engine: Engine
    period: datetime
    force: bool
    lock: locks.JobLock
    cancel: threading.Event | None
    started: float
    log: logging.Logger = field(init=False)

    def __post_init__(self) -> None:
        self.log = logging.getLogger(f"cic.jobs.{self.spec.name}")

    def result(self, status: RunStatus, **kw: Any) -> RunResult:
        return RunResult(
            self.spec.name,
            status,
            self.period,
            time.monotonic() - self.started,
            lock_backend=self.lock.backend,
            **kw,
        )

    def execute(self) -> RunResult:
        try:
            lease = self.lock.acquire(locks.lock_key(self.spec.name), lock_ttl(self.spec))
        except locks.LockError as exc:
            return self.failed(f"lock unavailable: {exc}")
        if lease is None:
            return self.skipped("another instance is running it (lock held)")
        release_now = True
        try:
            now = utcnow()
            try:
                claimed = records.claim(
                    self.engine,
                    self.spec.name,
                    self.period,
                    lease.token,
                    now=now,
                    force=self.force,
                    max_attempts=self.spec.max_attempts,
                    takeover_running=self.lock.distributed,
                    stale_before=now - lock_ttl(self.spec),
                )
            except SQLAlchemyError as exc:
                return self.failed(f"could not record the run: {_first_line(exc)}")
            if isinstance(claimed, records.NotClaimed):
                return self.skipped(claimed.reason)
            outcome = self.call(claimed.attempt, lease)
            release_now = not outcome.timed_out
            status = JobRunStatus.failed if outcome.error is not None else JobRunStatus.ran
            try:
                recorded = records.finish(
                    self.engine,
                    self.spec.name,
                    self.period,
                    lease.token,
                    status=status,
                    finished_at=utcnow(),
                    duration_ms=int((time.monotonic() - self.started) * 1000),
                    summary=outcome.summary,
                    error=outcome.error,
                )
            except SQLAlchemyError as exc:
                return self.failed(f"ran, but could not record the outcome: {_first_line(exc)}", claimed.attempt)
            if not recorded:
                return self.failed("another attempt took this period over while it ran", claimed.attempt)
            if outcome.error is not None:
                return self.failed(outcome.error, claimed.attempt)
            self.log.info(
                "job ran",
                extra={"job": self.spec.name, "period_start": self.period.isoformat(), "summary": outcome.summary},
            )
            return self.result(RunStatus.ran, summary=outcome.summary, attempt=claimed.attempt)
        finally:
            if release_now:
                _release(lease, self.spec.name)

    def skipped(self, reason: str) -> RunResult:
        extra = {"job": self.spec.name, "period_start": self.period.isoformat()}
        self.log.debug("job skipped: %s", reason, extra=extra)
        return self.result(RunStatus.skipped, reason=reason)

    def failed(self, error: str, attempt: int | None = None) -> RunResult:
        self.log.error(
            "job failed: %s",
            error,
            extra={"job": self.spec.name, "period_start": self.period.isoformat(), "attempt": attempt},
        )
        return self.result(RunStatus.failed, error=error, attempt=attempt)

    def call(self, attempt: int, lease: locks.Lease) -> _Outcome:
        """The job function in a daemon thread, for at most ``timeout``."""
        timeout = self.spec.timeout.total_seconds()
        ctx = JobContext(
            settings=self.settings,
            engine=self.engine,
            now=self.period,
            log=self.log,
            deadline=utcnow() + self.spec.timeout,
            cancelled=threading.Event(),
            attempt=attempt,
            forced=self.force,
        )
        outcome = _Outcome()
        done = threading.Event()
        state = threading.Lock()
        abandoned = False

        def target() -> None:
            try:
                outcome.summary = _json_summary(self.spec.func(ctx))
            except Exception as exc:  # any failure of a job is that run's failure
                self.log.exception("job raised", extra={"job": self.spec.name})
                outcome.error = f"{type(exc).__name__}: {exc}"
            finally:
                with state:
                    done.set()
                    release = abandoned
                if release:  # the runner gave up on us and left the lock to this thread
                    _release(lease, self.spec.name)

        thread = threading.Thread(target=target, name=f"job-{self.spec.name}", daemon=True)
        thread.start()
        deadline = time.monotonic() + timeout
        while not done.wait(max(0.0, min(_CANCEL_POLL_S, deadline - time.monotonic()))):
            if self.cancel is not None and self.cancel.is_set():
                ctx.cancelled.set()  # the scheduler is stopping: ask the job to return early
            if time.monotonic() >= deadline:
                break
        with state:
            if not done.is_set():
                abandoned = True
                ctx.cancelled.set()
                return _Outcome(error=f"timed out after {timeout:g} s", timed_out=True)
        return outcome


def _json_summary(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise TypeError(f"a job returns a mapping or None, not {type(value).__name__}")
    loaded: dict[str, Any] = json.loads(json.dumps(dict(value), default=_json_default))
    return loaded


def _json_default(value: object) -> str:
    """Datetimes as ISO 8601; anything else json cannot write (Decimals, UUIDs) as its str()."""
    if isinstance(value, date | datetime):
        return value.isoformat()
    return str(value)


def _release(lease: locks.Lease, name: str) -> None:
    try:
        lease.release()
    except locks.LockError as exc:
        log.warning("could not release the lock of job %s (it expires by itself): %s", name, exc)


def _first_line(exc: Exception) -> str:
    orig = getattr(exc, "orig", None)
    return str(orig or exc).splitlines()[0]
