"""Usage records: exactly one per request, never written on the request path, never lost.

Requests hand a finished record to ``UsageMeter.record`` (a list append). A background task writes
batches with ``INSERT … ON CONFLICT (request_id) DO NOTHING``. When the database refuses a batch,
the batch goes to an append-only spool file (fsynced) and is replayed until it lands; the unique
request id makes a replay that races a partial write harmless. On shutdown the queue is flushed, and
spooled if the database is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DataError, IntegrityError, ProgrammingError, SQLAlchemyError

from api.gateway import metrics
from cic.models import UsageRecord
from cic.models.types import utcnow

log = logging.getLogger(__name__)

BATCH_MAX = 1000
_TABLE: Table = UsageRecord.__table__  # type: ignore[attr-defined]
_COLUMNS = [c.name for c in _TABLE.columns if c.name != "id"]


class UsageMeter:
    def __init__(self, engine: Engine, spool_dir: Path, *, flush_interval_s: float = 0.25) -> None:
        self._engine = engine
        self._spool_dir = spool_dir
        self._queue: list[dict[str, Any]] = []
        self._flush_interval_s = flush_interval_s
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._writing: set[asyncio.Future[None]] = set()
        self._closing = False
        self.written = 0
        self.spooled = 0
        self.replayed = 0

    # --- request side ------------------------------------------------------------------------

    def record(self, row: dict[str, Any]) -> None:
        self._queue.append(row)
        if len(self._queue) >= BATCH_MAX:
            self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._queue)

    # --- background side ---------------------------------------------------------------------

    async def run(self) -> None:
        """Flush until ``close``; replay the spool every few seconds."""
        last_replay = 0.0
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._flush_interval_s)
            self._wake.clear()
            await self.flush()
            if not self._closing and time.monotonic() - last_replay > 5:
                last_replay = time.monotonic()
                await self.replay_spool()

    async def flush(self) -> None:
        async with self._lock:
            while self._queue:
                batch, self._queue = self._queue[:BATCH_MAX], self._queue[BATCH_MAX:]
                # Once out of the queue a batch is written or spooled whatever happens to this task:
                # cancelling a thread's future before the executor starts it would drop the batch.
                job = asyncio.ensure_future(asyncio.to_thread(self._write, batch))
                self._writing.add(job)
                job.add_done_callback(self._writing.discard)
                await asyncio.shield(job)

    def _write(self, batch: list[dict[str, Any]]) -> None:
        try:
            self.written += write_batch(self._engine, batch, self._spool_dir)
        except SQLAlchemyError as exc:
            log.error("usage batch not written, spooling %d records: %s", len(batch), exc)
            self._spool(batch)
            self.spooled += len(batch)

    async def close(self) -> None:
        """Stop the flush loop, wait for batches being written, then write what is left."""
        self._closing = True
        self._wake.set()
        while self._writing:
            await asyncio.gather(*self._writing, return_exceptions=True)
        await self.flush()

    # --- spool ---------------------------------------------------------------------------------

    def _spool(self, rows: list[dict[str, Any]]) -> None:
        _append_records(self._spool_dir / f"usage-{os.getpid()}.jsonl", rows)

    async def replay_spool(self) -> int:
        """Replay this process's spool files and those of processes that are gone (``replay_spool``)."""
        async with self._lock:  # not while this process is appending to its own file
            total = await asyncio.to_thread(replay_spool, self._engine, self._spool_dir, include_own=True)
        self.replayed += total
        return total


def insert_usage(engine: Engine, rows: list[dict[str, Any]]) -> None:
    """Insert usage records; a request id already there is skipped (replays are harmless)."""
    if not rows:
        return
    if engine.dialect.name == "postgresql":
        # One statement for the whole batch: a column of values per parameter, unnested by the server.
        # Compiling and binding row by row (executemany) cost the API workers ~2.5x the CPU, under the GIL.
        if any("created_at" not in row for row in rows):
            now = utcnow()
            rows = [row if "created_at" in row else {**row, "created_at": now} for row in rows]
        params = tuple([row.get(name, default) for row in rows] for name, default in _PG_DEFAULTS)
        with engine.begin() as conn:
            conn.exec_driver_sql(_PG_INSERT, params)
        return
    stmt = sqlite.insert(_TABLE).on_conflict_do_nothing(index_elements=["request_id"])
    with engine.begin() as conn:
        conn.execute(stmt, rows)


REFUSED = (DataError, IntegrityError, ProgrammingError, ValueError, TypeError)
"""What a batch fails with when one of its records is bad (not when the database is unreachable)."""


def write_batch(engine: Engine, rows: list[dict[str, Any]], spool_dir: Path) -> int:
    """Insert a batch; if the database refuses it for a record's content, write its records apart
    (``insert_apart``). Returns how many were written; raises what a lost connection raises."""
    try:
        insert_usage(engine, rows)
        return len(rows)
    except REFUSED as exc:  # a record the database will never take: the rest must not wait on it
        log.error("usage batch refused (%s); writing its %d records one by one", exc, len(rows))
        return insert_apart(engine, rows, spool_dir)


def insert_apart(engine: Engine, rows: list[dict[str, Any]], spool_dir: Path) -> int:
    """Insert ``rows`` one by one; those the database refuses go to ``rejected-usage-*.jsonl`` in the spool directory,
    for an operator to mend and re-queue (rename to ``usage-*.jsonl``), and are logged. Returns how many were
    written. Raises what a lost connection raises, for the caller to spool the rows (a replay skips those
    already in)."""
    written, rejected = 0, []
    for row in rows:
        try:
            insert_usage(engine, [row])
            written += 1
        except REFUSED as exc:
            log.error("usage record %s refused by the database, set aside: %s", row.get("request_id"), exc)
            rejected.append(row)
    if rejected:
        _append_records(spool_dir / f"rejected-usage-{os.getpid()}-{time.time_ns()}.jsonl", rejected)
        metrics.USAGE_REJECTED.inc(len(rejected))
    return written


def _append_records(path: Path, rows: list[dict[str, Any]]) -> None:
    """Append records to a JSON-lines file and fsync it (a value JSON cannot hold is written as its text)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = b"".join(orjson.dumps(_encode(r), default=str) + b"\n" for r in rows)
    with open(path, "ab") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _pg_columns() -> tuple[str, list[tuple[str, Any]]]:
    cols = [c for c in _TABLE.columns if c.name not in ("id", "ingested_at")]  # both filled by the server
    dialect = postgresql.dialect()
    arrays = ", ".join(f"%b::{c.type.compile(dialect=dialect)}[]" for c in cols)
    # Names and types come from the table's own definition; the values are bound as parameters.
    names = ", ".join(c.name for c in cols)
    sql = f"INSERT INTO {_TABLE.name} ({names}) SELECT * FROM unnest({arrays}) ON CONFLICT (request_id) DO NOTHING"  # noqa: S608
    defaults = []
    for c in cols:
        scalar = c.default is not None and getattr(c.default, "is_scalar", False)
        defaults.append((c.name, getattr(c.default, "arg", None) if scalar else None))
    return sql, defaults


_PG_INSERT, _PG_DEFAULTS = _pg_columns()


def replay_spool(engine: Engine, spool_dir: Path, *, include_own: bool) -> int:
    """Insert spooled records; a file is removed only once all of it is in the database.

    A file is claimed by renaming it (one replayer per file). A live process's own spool file
    (``usage-<pid>.jsonl``, still appended to) is left to that process; ``include_own`` says whether
    this process's is replayed here. Used by the API's meters and by the ``spool-replay`` job.
    """
    if not spool_dir.is_dir():
        return 0
    _reclaim_orphans(spool_dir)
    total = 0
    me = os.getpid()
    for path in sorted(spool_dir.glob("usage-*.jsonl")):
        writer = _writer_pid(path)
        if writer is not None and (writer != me or not include_own) and _alive(writer):
            continue
        claimed = path.with_suffix(f".replaying-{me}")
        try:
            path.rename(claimed)  # one replayer per file; others skip it
        except OSError:
            continue
        try:
            rows = _read_spool(claimed)
            replayed = 0
            for i in range(0, len(rows), BATCH_MAX):
                replayed += write_batch(engine, rows[i : i + BATCH_MAX], spool_dir)
        except SQLAlchemyError as exc:
            log.warning("spool replay of %s failed, will retry: %s", path.name, exc)
            claimed.rename(path.with_name(f"usage-{me}-{time.time_ns()}.jsonl"))
            return total
        claimed.unlink()
        total += replayed
        log.info("replayed %d spooled usage records from %s", replayed, path.name)
    return total


def _read_spool(path: Path) -> list[dict[str, Any]]:
    """The records of a spool file; a line that does not parse (a write torn by a crash) is set aside
    in ``<file>.corrupt`` for inspection rather than blocking the rest."""
    rows, bad = [], []
    for line in path.read_bytes().splitlines():
        if not line.strip():
            continue
        try:
            rows.append(_decode(orjson.loads(line)))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            bad.append(line)
    if bad:
        corrupt = path.with_name(f"{path.stem}-{time.time_ns()}.corrupt")
        corrupt.write_bytes(b"\n".join(bad) + b"\n")
        log.error("%d unreadable lines of spool file %s set aside in %s", len(bad), path.name, corrupt.name)
    return rows


def _writer_pid(path: Path) -> int | None:
    """The pid that appends to ``usage-<pid>.jsonl``; None for files nobody appends to (re-queued, orphans)."""
    middle = path.name[len("usage-") : -len(".jsonl")]
    return int(middle) if middle.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _reclaim_orphans(spool_dir: Path) -> None:
    """A file a dead process was replaying goes back to the queue."""
    for path in spool_dir.glob("usage-*.replaying-*"):
        pid = int(path.suffix.rsplit("-", 1)[1])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            path.rename(path.with_name(f"usage-orphan-{pid}-{time.time_ns()}.jsonl"))
        except PermissionError:
            pass


def _encode(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out["created_at"] = row["created_at"].isoformat()
    return out


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    from datetime import datetime

    out = {k: row.get(k) for k in _COLUMNS if k in row}
    out["created_at"] = datetime.fromisoformat(row["created_at"])
    return out
