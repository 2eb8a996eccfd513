"""Mergeable latency histograms: counts per logarithmic bucket, stored as one array of integers.

Bucket ``b`` holds values in ``[GROWTH**b, GROWTH**(b+1))`` milliseconds (values below 1 ms fall in
bucket 0), so a percentile read back is within ±5 % of the true value, and histograms of any hours,
keys or models add up bucket by bucket — which exact percentiles cannot.

A histogram is ``[first, n_first, n_first+1, …, n_last]``: the number of its first non-empty bucket,
then the count of every bucket from there to its last non-empty one (``[]`` when empty). Both ends are
non-zero, so equal histograms are equal lists. PostgreSQL stores it as ``bigint[]`` and SQLite as a JSON
list; histograms add up position by position (shifted by the difference of their first buckets), with
no keys to parse — the usage query merges a few thousand of them per request.
"""

from __future__ import annotations

import json
import math
import operator
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from itertools import accumulate, islice
from typing import Any

from sqlalchemy import BigInteger, Integer, column, literal, literal_column, select, type_coerce, union_all
from sqlalchemy import func as sa_func
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

GROWTH = 1.1
_K = 1.0 / math.log(GROWTH)

Histogram = list[int]


def bucket(value_ms: float) -> int:
    return math.floor(math.log(max(value_ms, 1.0)) * _K)


def bucket_sql(column: Any, dialect: str) -> Any:
    """The same bucket, computed by the database (SQLite gets ``ln``/``floor`` from ``cic.db``).
    Constants are inlined, not bound, so the expression in SELECT and GROUP BY compare equal."""
    one: Any = literal_column("1")
    at_least_1 = sa_func.greatest(column, one) if dialect == "postgresql" else sa_func.max(column, one)
    return sa_func.floor(sa_func.ln(at_least_1 * literal_column("1.0")) * literal_column(repr(_K))).cast(Integer)


def from_counts(counts: Mapping[int, int]) -> Histogram:
    """The histogram of ``{bucket: count}`` (empty buckets may be left out)."""
    used = [b for b, n in counts.items() if n]
    if not used:
        return []
    lo, hi = min(used), max(used)
    return [lo, *(int(counts.get(b, 0)) for b in range(lo, hi + 1))]


def of(values_ms: Iterable[float]) -> Histogram:
    counts: dict[int, int] = {}
    for v in values_ms:
        b = bucket(v)
        counts[b] = counts.get(b, 0) + 1
    return from_counts(counts)


def counts(hist: Sequence[int]) -> dict[int, int]:
    """``{bucket: count}`` of the non-empty buckets."""
    if not hist:
        return {}
    return {hist[0] + i: int(n) for i, n in enumerate(islice(hist, 1, None)) if n}


def merge(hists: Iterable[Sequence[int] | None]) -> Histogram:
    """The sum of ``hists``, bucket by bucket (one slice addition per histogram)."""
    parts = [h for h in hists if h]
    if not parts:
        return []
    if len(parts) == 1:
        return [int(n) for n in parts[0]]
    lo = min(h[0] for h in parts)
    out = [0] * (max(h[0] + len(h) for h in parts) - 1 - lo)
    for h in parts:
        a = h[0] - lo
        b = a + len(h) - 1
        out[a:b] = map(operator.add, out[a:b], islice(h, 1, None))
    return [lo, *out]


def add(into: Histogram, hist: Sequence[int] | None, sign: int = 1) -> None:
    """Add ``hist`` to ``into`` (``sign`` -1: take it away), in place: ``into`` grows at either end as
    needed and never aliases ``hist``. After taking away, ``trim`` restores the canonical form."""
    if not hist:
        return
    if not into:
        into.append(hist[0])
        into.extend(islice(hist, 1, None) if sign > 0 else (-n for n in islice(hist, 1, None)))
        return
    first = into[0]
    if hist[0] < first:
        into[1:1] = [0] * (first - hist[0])
        into[0] = first = hist[0]
    a = hist[0] - first + 1
    b = a + len(hist) - 1
    if b > len(into):
        into.extend([0] * (b - len(into)))
    into[a:b] = map(operator.add if sign > 0 else operator.sub, into[a:b], islice(hist, 1, None))


def trim(hist: Histogram) -> None:
    """Drop empty buckets at either end, in place (``[]`` when none is left)."""
    end = len(hist)
    while end > 1 and hist[end - 1] == 0:
        end -= 1
    start = 1
    while start < end and hist[start] == 0:
        start += 1
    if start >= end:
        hist.clear()
        return
    first = hist[0] + start - 1
    del hist[end:]
    del hist[1:start]
    hist[0] = first


def percentile(hist: Sequence[int], q: float) -> int | None:
    """The value at quantile ``q`` (0 < q ≤ 1): the geometric middle of the bucket holding that rank."""
    return percentiles(hist, (q,))[0]


def percentiles(hist: Sequence[int], qs: Sequence[float]) -> list[int | None]:
    """``percentile`` at each of ``qs``: ranks found by bisection in the running totals."""
    running = list(accumulate(islice(hist, 1, None)))
    total = running[-1] if running else 0
    if total <= 0:
        return [None] * len(qs)
    out: list[int | None] = []
    for q in qs:
        b = hist[0] + bisect_left(running, max(1, math.ceil(q * total)))
        out.append(round(GROWTH ** (b + 0.5)) if b > 0 else 1)
    return out


def merged_sql(
    session: Session, table: Any, columns: Sequence[str], groups: Sequence[Any], where: Sequence[Any]
) -> dict[tuple[Any, ...], dict[str, Histogram]]:
    """The histograms in ``columns`` of the rows of ``table`` matching ``where``, merged per ``groups``
    by the database in one query: each array expanded with its positions (``unnest … WITH ORDINALITY``
    / ``json_each``), summed per bucket, folded back into one (buckets, counts) pair per group and
    column. One small row per group comes back, however many rows were merged."""
    pg = session.get_bind().dialect.name == "postgresql"
    labelled = [g.label(f"g{i}") for i, g in enumerate(groups)]
    parts = []
    for i, name in enumerate(columns):
        hist = getattr(table, name)
        if pg:
            hist = type_coerce(hist, ARRAY(BigInteger))
            entries = (
                sa_func.unnest(hist).table_valued(column("n", BigInteger), with_ordinality="i").render_derived(f"h{i}")
            )
            # Position 1 holds the first bucket, positions 2… the counts.
            b = hist[literal_column("1")] + entries.c.i - literal_column("2")
            n, nonempty = entries.c.n, (entries.c.i > literal_column("1")) & (entries.c.n > literal_column("0"))
        else:
            entries = sa_func.json_each(hist).table_valued("key", "value").alias(f"h{i}")
            b = sa_func.json_extract(hist, literal_column("'$[0]'")) + entries.c.key - literal_column("1")
            n, nonempty = (
                entries.c.value,
                (entries.c.key > literal_column("0")) & (entries.c.value > literal_column("0")),
            )
        parts.append(
            select(*labelled, literal(i).label("c"), b.label("b"), sa_func.sum(n).label("n"))
            .select_from(table)
            .join(entries, literal_column("true"))
            .where(*where, nonempty)
            .group_by(*groups, b)
        )
    per_bucket = union_all(*parts).subquery()
    outer = [per_bucket.c[f"g{i}"] for i in range(len(groups))]
    if pg:
        folds = [
            (
                sa_func.array_agg(per_bucket.c.b).filter(per_bucket.c.c == i),
                sa_func.array_agg(per_bucket.c.n).filter(per_bucket.c.c == i),
            )
            for i in range(len(columns))
        ]
    else:
        folds = [
            (
                sa_func.json_group_array(per_bucket.c.b).filter(per_bucket.c.c == i),
                sa_func.json_group_array(per_bucket.c.n).filter(per_bucket.c.c == i),
            )
            for i in range(len(columns))
        ]
    q = select(*outer, *(f for pair in folds for f in pair))
    if outer:
        q = q.group_by(*outer)
    out: dict[tuple[Any, ...], dict[str, Histogram]] = {}
    for row in session.execute(q):
        key, rest = tuple(row[: len(groups)]), row[len(groups) :]
        merged: dict[str, Histogram] = {}
        for j, name in enumerate(columns):
            bs, ns = rest[2 * j], rest[2 * j + 1]
            if isinstance(bs, str):  # SQLite hands JSON back as text
                bs, ns = json.loads(bs), json.loads(ns)
            merged[name] = from_counts(dict(zip(bs or (), ns or (), strict=True)))
        out[key] = merged
    return out
