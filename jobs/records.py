"""``job_runs``: one row per (job, period), claimed before a run and finished after it.

A claim is a single atomic statement (an insert that does nothing on conflict, else a conditional
update), so it is safe even where the lock is only in-process (SQLite). A period's row may be claimed
again when its run failed (up to ``max_attempts``), when a run was left ``running`` by a holder that
is gone, or when forced. Only the attempt that holds the claim (``owner``) may finish it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table, and_, delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from cic.models.jobs import JobRun, JobRunStatus

TABLE: Table = JobRun.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Claimed:
    attempt: int


@dataclass(frozen=True)
class NotClaimed:
    reason: str


@dataclass(frozen=True)
class LastRun:
    name: str
    period_start: datetime
    status: str
    attempts: int
    started_at: datetime
    finished_at: datetime | None
    duration_ms: int | None
    error: str | None
    summary: dict[str, Any] | None


def claim(
    engine: Engine,
    name: str,
    period: datetime,
    owner: str,
    *,
    now: datetime,
    force: bool,
    max_attempts: int,
    takeover_running: bool,
    stale_before: datetime,
) -> Claimed | NotClaimed:
    """Make this attempt the period's run, or say why not.

    ``takeover_running``: a ``running`` row may be taken over at once (the caller holds a distributed
    lock, so that run's holder is gone); otherwise only once it started before ``stale_before``.
    """
    fresh = {
        "status": JobRunStatus.running.value,
        "owner": owner,
        "forced": force,
        "started_at": now,
        "finished_at": None,
        "duration_ms": None,
        "summary": None,
        "error": None,
    }
    with engine.begin() as conn:
        inserted = conn.execute(
            _insert(conn)
            .values(name=name, period_start=period, attempts=1, **fresh)
            .on_conflict_do_nothing(index_elements=["name", "period_start"])
            .returning(TABLE.c.id)
        ).first()
        if inserted is not None:
            return Claimed(1)
        where = and_(TABLE.c.name == name, TABLE.c.period_start == period)
        if not force:
            running = TABLE.c.status == JobRunStatus.running.value
            where = and_(
                where,
                or_(
                    and_(TABLE.c.status == JobRunStatus.failed.value, TABLE.c.attempts < max_attempts),
                    running if takeover_running else and_(running, TABLE.c.started_at < stale_before),
                ),
            )
        row = conn.execute(
            update(TABLE).where(where).values(attempts=TABLE.c.attempts + 1, **fresh).returning(TABLE.c.attempts)
        ).first()
        if row is not None:
            return Claimed(int(row[0]))
        return NotClaimed(_why_not(conn, name, period, max_attempts))


def _why_not(conn: Connection, name: str, period: datetime, max_attempts: int) -> str:
    row = conn.execute(
        select(TABLE.c.status, TABLE.c.attempts, TABLE.c.started_at, TABLE.c.finished_at, TABLE.c.owner).where(
            TABLE.c.name == name, TABLE.c.period_start == period
        )
    ).one()
    if row.status == JobRunStatus.ran.value:
        return f"already ran for the period starting {period.isoformat()} (finished {row.finished_at.isoformat()})"
    if row.status == JobRunStatus.failed.value:
        return f"failed {row.attempts} times in the period starting {period.isoformat()} (max_attempts {max_attempts})"
    return f"running since {row.started_at.isoformat()} ({row.owner})"


def finish(
    engine: Engine,
    name: str,
    period: datetime,
    owner: str,
    *,
    status: JobRunStatus,
    finished_at: datetime,
    duration_ms: int,
    summary: Mapping[str, Any] | None,
    error: str | None,
) -> bool:
    """Record the outcome; False when the claim was taken over meanwhile (this attempt was abandoned)."""
    with engine.begin() as conn:
        result = conn.execute(
            update(TABLE)
            .where(TABLE.c.name == name, TABLE.c.period_start == period, TABLE.c.owner == owner)
            .values(
                status=status.value,
                finished_at=finished_at,
                duration_ms=duration_ms,
                summary=dict(summary) if summary is not None else None,
                error=error,
            )
            .returning(TABLE.c.id)
        ).first()
        return result is not None


def last_runs(engine: Engine, names: Iterable[str]) -> dict[str, LastRun]:
    """Each job's latest period (one index lookup per job)."""
    out: dict[str, LastRun] = {}
    with engine.connect() as conn:
        for name in names:
            row = conn.execute(
                select(TABLE).where(TABLE.c.name == name).order_by(TABLE.c.period_start.desc()).limit(1)
            ).first()
            if row is not None:
                out[name] = LastRun(
                    name=row.name,
                    period_start=row.period_start,
                    status=row.status,
                    attempts=row.attempts,
                    started_at=row.started_at,
                    finished_at=row.finished_at,
                    duration_ms=row.duration_ms,
                    error=row.error,
                    summary=row.summary,
                )
    return out


def prune(engine: Engine, before: datetime) -> int:
    """Delete the records of periods that started before ``before``."""
    with engine.begin() as conn:
        return int(conn.execute(delete(TABLE).where(TABLE.c.period_start < before)).rowcount)


def _insert(conn: Connection) -> Any:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(TABLE)
