"""Mergeable latency histograms: counts per logarithmic bucket, stored sparse as ``{"bucket": count}``.

Bucket ``b`` holds values in ``[GROWTH**b, GROWTH**(b+1))`` milliseconds (values below 1 ms fall in
bucket 0), so a percentile read back is within ±5 % of the true value, and histograms of any hours,
keys or models add up bucket by bucket — which exact percentiles cannot.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import BigInteger, Integer, cast, func, literal, literal_column, select, union_all
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
    session: Session, table: Any, columns: Sequence[str], groups: Sequence[Any], where: Sequence[Any]
) -> dict[tuple[Any, ...], dict[str, Histogram]]:
    """The histograms in ``columns`` of the rows of ``table`` matching ``where``, merged per ``groups``
    by the database in one query: entries expanded (``jsonb_each_text`` / ``json_each``), summed per
    bucket, folded back into one object per group and column. One small row per group comes back,
    however many rows were merged."""
    pg = session.get_bind().dialect.name == "postgresql"
    each = func.jsonb_each_text if pg else func.json_each
    labelled = [g.label(f"g{i}") for i, g in enumerate(groups)]
    parts = []
    for i, column in enumerate(columns):
        entries = each(getattr(table, column)).table_valued("key", "value").alias(f"h{i}")
        parts.append(
            select(
                *labelled,
                literal(i).label("c"),
                entries.c.key.label("b"),
                func.sum(cast(entries.c.value, BigInteger)).label("n"),
            )
            .select_from(table)
            .join(entries, literal_column("true"))
            .where(*where)
            .group_by(*groups, entries.c.key)
        )
    per_bucket = union_all(*parts).subquery()
    outer = [per_bucket.c[f"g{i}"] for i in range(len(groups))]
    fold = func.jsonb_object_agg if pg else func.json_group_object
    q = select(
        *outer,
        *(fold(per_bucket.c.b, per_bucket.c.n).filter(per_bucket.c.c == i).label(f"c{i}") for i in range(len(columns))),
    )
    if outer:
        q = q.group_by(*outer)
    out: dict[tuple[Any, ...], dict[str, Histogram]] = {}
    for row in session.execute(q):
        key, hists = tuple(row[: len(groups)]), row[len(groups) :]
        merged: dict[str, Histogram] = {}
        for column, hist in zip(columns, hists, strict=True):
            if isinstance(hist, str):  # SQLite hands JSON back as text
                hist = json.loads(hist)
            merged[column] = {str(b): int(n) for b, n in (hist or {}).items()}
        out[key] = merged
    return out
