"""Jobs by name: ``@job(...)`` registers a function, ``all_jobs()`` lists them.

A job is a plain function of a ``JobContext`` returning a JSON-able summary (or ``None``). It runs
for one *period* (``ctx.now`` is the period's start, so a job is deterministic per period) and may
run again for the same period after a failure, so it must be idempotent per period. The runner
(``jobs.runner.run_job``) takes care of locks, the once-per-period record and timeouts.

Modules whose import registers jobs are listed in ``jobs.catalog.JOB_MODULES``; ``all_jobs`` imports
them (and any in ``CIC_JOB_MODULES``) first.
"""

from __future__ import annotations

import importlib
import logging
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine

from cic.settings import Settings
from jobs import schedule
from jobs.catalog import JOB_MODULES

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,63}$")


@dataclass(frozen=True)
class JobContext:
    settings: Settings
    engine: Engine
    now: datetime
    """tz-aware UTC: the start of the period being run (its scheduled time)."""
    log: logging.Logger
    deadline: datetime | None = None
    """The wall-clock instant (UTC) at which the runner gives up on this run."""
    cancelled: threading.Event = field(default_factory=threading.Event)
    """Set when the run timed out or the scheduler is stopping: a long job should check it and return."""
    attempt: int = 1
    """1 for the period's first attempt, more when a failed or abandoned run is retried."""
    forced: bool = False
    """True for ``cic jobs run NAME --force`` (the period may have run already)."""


JobFunc = Callable[[JobContext], Mapping[str, Any] | None]


@dataclass(frozen=True)
class JobSpec:
    name: str
    func: JobFunc
    every: timedelta | None
    cron: str | None
    description: str
    timeout: timedelta
    max_attempts: int = 3
    """Attempts per period (a failed run is retried by the next trigger in the same period, up to this)."""

    def __post_init__(self) -> None:
        if not NAME_RE.match(self.name):
            raise ValueError(f"job name {self.name!r}: lowercase letters, digits and dashes, at most 64")
        if (self.every is None) == (self.cron is None):
            raise ValueError(f"job {self.name!r}: give exactly one of every= or cron=")
        if self.every is not None and self.every < timedelta(seconds=1):
            raise ValueError(f"job {self.name!r}: every= must be at least one second")
        if self.cron is not None:
            schedule.cron_trigger(self.cron)  # raises ValueError with the reason
        if self.timeout <= timedelta(0):
            raise ValueError(f"job {self.name!r}: timeout must be positive")
        if self.max_attempts < 1:
            raise ValueError(f"job {self.name!r}: max_attempts must be at least 1")
        if not self.description.strip():
            raise ValueError(f"job {self.name!r}: a description is required")

    @property
    def schedule(self) -> str:
        return schedule.describe(self.every, self.cron)

    def period_start(self, now: datetime) -> datetime:
        return schedule.period_start(self.every, self.cron, now)


_REGISTRY: dict[str, JobSpec] = {}
_REGISTRY_LOCK = threading.Lock()


def register(spec: JobSpec) -> JobSpec:
    """Add ``spec``; the same function registered again (a module re-imported) is not an error."""
    with _REGISTRY_LOCK:
        existing = _REGISTRY.get(spec.name)
        if existing is not None and _qualname(existing.func) != _qualname(spec.func):
            raise ValueError(
                f"job {spec.name!r} is registered twice: {_qualname(existing.func)} and {_qualname(spec.func)}"
            )
        _REGISTRY[spec.name] = spec
    return spec


def job(
    name: str,
    *,
    every: timedelta | None = None,
    cron: str | None = None,
    description: str,
    timeout: timedelta = timedelta(minutes=10),
    max_attempts: int = 3,
) -> Callable[[JobFunc], JobFunc]:
    """Register the decorated function as job ``name`` (exactly one of ``every``/``cron``; cron is a
    5-field crontab string in UTC)."""

    def decorate(func: JobFunc) -> JobFunc:
        register(JobSpec(name, func, every, cron, description, timeout, max_attempts))
        return func

    return decorate


def all_jobs(extra_modules: Iterable[str] = ()) -> dict[str, JobSpec]:
    """Every registered job by name, after importing ``JOB_MODULES`` and ``extra_modules``."""
    for module in [*JOB_MODULES, *extra_modules]:
        importlib.import_module(module)
    with _REGISTRY_LOCK:
        return dict(sorted(_REGISTRY.items()))


def jobs_for(settings: Settings) -> dict[str, JobSpec]:
    """``all_jobs`` with the plug-in modules named in ``CIC_JOB_MODULES``."""
    return all_jobs(m.strip() for m in settings.job_modules.split(",") if m.strip())


def _qualname(func: Callable[..., Any]) -> str:
    return f"{func.__module__}.{func.__qualname__}"
