"""roll-up histograms as integer arrays

Revision ID: 0010_histogram_arrays
Revises: 0009_rollup_totals
Create Date: 2026-11-28 21:30:00.000000

The latency and TTFT histograms of the four roll-up tables go from sparse maps ``{"bucket": count}``
(JSONB on PostgreSQL, JSON on SQLite) to ``[first bucket, count, count, …]`` — every bucket from the
first non-empty one to the last (``bigint[]`` on PostgreSQL, a JSON list on SQLite; see
``cic.billing.histogram``). Existing rows are converted in place, both ways: by the database on
PostgreSQL (a helper function used in ``ALTER … USING``, dropped afterwards), row by row on SQLite.
"""

import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from alembic import op

revision: str = "0010_histogram_arrays"
down_revision: str | None = "0009_rollup_totals"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("usage_hourly", "usage_daily", "usage_hourly_totals", "usage_daily_totals")
COLUMNS = ("latency_hist", "ttft_hist")

PG_TO_ARRAY = """
CREATE FUNCTION cic_0010_hist_array(h jsonb) RETURNS bigint[] LANGUAGE sql IMMUTABLE AS $$
  SELECT coalesce((
    SELECT array_prepend(r.lo::bigint, array_agg(coalesce((h ->> s::text)::bigint, 0) ORDER BY s))
    FROM (SELECT min(e.k::int) AS lo, max(e.k::int) AS hi
          FROM jsonb_each_text(h) AS e(k, v) WHERE e.v::bigint <> 0) AS r,
         generate_series(r.lo, r.hi) AS s
    GROUP BY r.lo), '{}')
$$
"""
PG_TO_MAP = """
CREATE FUNCTION cic_0010_hist_map(h bigint[]) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
  SELECT coalesce((
    SELECT jsonb_object_agg((h[1] + u.i - 1)::text, u.n)
    FROM unnest(h[2:]) WITH ORDINALITY AS u(n, i) WHERE u.n <> 0), '{}')
$$
"""


def _to_array(value: Any) -> list[int]:
    m = {int(b): int(n) for b, n in (value or {}).items() if int(n)}
    if not m:
        return []
    lo, hi = min(m), max(m)
    return [lo, *(m.get(b, 0) for b in range(lo, hi + 1))]


def _to_map(value: Any) -> dict[str, int]:
    h = list(value or [])
    return {str(h[0] + i): int(n) for i, n in enumerate(h[1:]) if n} if h else {}


def _convert_sqlite(convert: Any) -> None:
    conn = op.get_bind()
    for name in TABLES:
        t = sa.table(name, sa.column("id"), *(sa.column(c) for c in COLUMNS))
        rows = conn.execute(sa.select(t.c.id, *(t.c[c] for c in COLUMNS))).all()
        updates = [
            {
                "row_id": row[0],
                **{
                    f"new_{c}": json.dumps(convert(json.loads(v) if v else None))
                    for c, v in zip(COLUMNS, row[1:], strict=True)
                },
            }
            for row in rows
        ]
        if updates:
            new_values = {c: sa.bindparam(f"new_{c}") for c in COLUMNS}
            conn.execute(sa.update(t).where(t.c.id == sa.bindparam("row_id")).values(new_values), updates)


def _alter_pg(type_sql: str, function: str, create: str) -> None:
    op.execute(create)
    for table in TABLES:
        op.execute(
            f"ALTER TABLE {table} "
            + ", ".join(f"ALTER COLUMN {c} TYPE {type_sql} USING {function}({c})" for c in COLUMNS)
        )
    op.execute(f"DROP FUNCTION {function}")


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _alter_pg("bigint[]", "cic_0010_hist_array", PG_TO_ARRAY)
    else:
        _convert_sqlite(_to_array)  # JSON either way: only the values change


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _alter_pg("jsonb", "cic_0010_hist_map", PG_TO_MAP)
    else:
        _convert_sqlite(_to_map)
