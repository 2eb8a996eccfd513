"""Mergeable latency histograms: counts per logarithmic bucket, stored sparse as ``{"bucket": count}``.

Bucket ``b`` holds values in ``[GROWTH**b, GROWTH**(b+1))`` milliseconds (values below 1 ms fall in
bucket 0), so a percentile read back is within ±5 % of the true value, and histograms of any hours,
keys or models add up bucket by bucket — which exact percentiles cannot.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import BigInteger, Integer, cast, func, literal_column, select
from sqlalchemy.orm import Session

GROWTH = 1.1
_K = 1.0 / math.log(GROWTH)

Histogram = dict[str, int]


def bucket(value_ms: float) -> int:
    return math.floor(math.log(max(value_ms, 1.0)) * _K)


def bucket_sql(column: Any, dialect: str) -> Any:
    """The same bucket, computed by the database (SQLite gets ``ln``/``floor`` from ``cic.db``).
    Constants are inlined, not bound, so the expression in SELECT and GROUP BY compare equal."""
    one: Any = literal_column("1")
    at_least_1 = func.greatest(column, one) if dialect == "postgresql" else func.max(column, one)
    return func.floor(func.ln(at_least_1 * literal_column("1.0")) * literal_column(repr(_K))).cast(Integer)


def merge(hists: Iterable[Mapping[str, int] | None]) -> Histogram:
    out: Histogram = {}
    for h in hists:
        for b, n in (h or {}).items():
            out[b] = out.get(b, 0) + int(n)
    return out


def percentile(hist: Mapping[str, int], q: float) -> int | None:
    """The value at quantile ``q`` (0 < q ≤ 1): the geometric middle of the bucket holding that rank."""
    total = sum(hist.values())
    if total == 0:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for b in sorted(hist, key=int):
        seen += hist[b]
        if seen >= rank:
            return round(GROWTH ** (int(b) + 0.5)) if int(b) > 0 else 1
    return None  # pragma: no cover - unreachable: ranks never exceed the total


def merged_sql(
    session: Session, table: Any, column: str, groups: Sequence[Any], where: Sequence[Any]
) -> dict[tuple[Any, ...], Histogram]:
    """Histograms in ``column`` of the rows of ``table`` matching ``where``, merged per ``groups`` by
    the database (``json_each``): a few thousand small tuples back, however many rows were merged."""
    pg = session.get_bind().dialect.name == "postgresql"
    col = getattr(table, column)
    entries = (func.jsonb_each_text(col) if pg else func.json_each(col)).table_valued("key", "value").alias("h")
    q = (
        select(*groups, entries.c.key, func.sum(cast(entries.c.value, BigInteger)))
        .select_from(table)
        .join(entries, literal_column("true"))
        .where(*where)
        .group_by(*groups, entries.c.key)
    )
    out: dict[tuple[Any, ...], Histogram] = {}
    for row in session.execute(q):
        *key, b, n = row
        out.setdefault(tuple(key), {})[str(b)] = int(n)
    return out
