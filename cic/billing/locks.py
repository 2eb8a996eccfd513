"""Serialising billing work on PostgreSQL with session-level advisory locks.

The jobs' own locks normally guarantee one runner per job already; these make an ad-hoc run (``cic
usage show`` rolling up first, a test, an operator's ``cic jobs run --force``) safe beside a scheduled
one. SQLite deployments are one process and SQLite serialises writers itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

ROLLUP = 0x63_69_63_72_6F_6C_6C  # "cicroll"
ACCRUAL = 0x63_69_63_61_63_63_72  # "cicaccr"
EXPORT = 0x63_69_63_65_78_70_6F  # "cicexpo"


@contextlib.contextmanager
def advisory_lock(engine: Engine, lock_id: int) -> Iterator[None]:
    if engine.dialect.name != "postgresql":
        yield
        return
    with engine.connect() as conn:
        conn.execute(select(func.pg_advisory_lock(lock_id)))
        conn.commit()
        try:
            yield
        finally:
            conn.execute(select(func.pg_advisory_unlock(lock_id)))
            conn.commit()
