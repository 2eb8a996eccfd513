"""Roll-up and usage-query benchmark over millions of usage records, on PostgreSQL.

``.venv/bin/python bench/billing.py`` (``--records N``, default 10,000,000) makes a fresh database
``cic_bench_<random>``, fills ``usage_records`` server-side (``generate_series``: 200 orgs, one of them
holding half of all records, 5 environments × 4 keys × 5 models each, spread over the last 30 days and
ingested as they happened), then
prints:

1. **Roll-up throughput**: the first roll-up (a backfill of every record) and an incremental one after
   ``--increment`` more records arrive in the current hour — usage records folded per second.
2. **Dashboard usage query**: ``cic.services.usage.report`` for the biggest org, 30 days up to now grouped by
   day and model, by day and environment, and by model (what the usage page draws), and 20 days cut at
   12:00 UTC at both ends by day and model (half a day of hourly roll-ups at each end, the most a cut day
   reads), ``--queries`` times each — p50 / p95 / max in milliseconds. It reads the daily and hourly
   roll-ups, never the raw records.

The database is dropped at the end (``--keep-db`` keeps it).
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from sqlmodel import Session

from cic import migrations
from cic.billing import rollup
from cic.db import make_engine
from cic.models.types import utcnow
from cic.services import catalog, usage
from cic.services.authz import Actor
from cic.settings import Settings

PG_ADMIN = "postgresql://postgres:postgres@127.0.0.1:5432/postgres"
ORGS = 200

FILL = """
INSERT INTO orgs (id, name, slug, plan, created_at)
SELECT 'org_bench' || lpad(o::text, 11, '0'), 'Bench ' || o, 'bench-' || o, 'developer', now()
FROM generate_series(0, %(orgs)s - 1) AS o;
INSERT INTO environments (id, org_id, name, region_code, allow_cross_region_failover, created_at, updated_at)
SELECT 'env_bench' || lpad((o * 5 + e)::text, 11, '0'), 'org_bench' || lpad(o::text, 11, '0'), 'env' || e,
       'us-east', false, now(), now()
FROM generate_series(0, %(orgs)s - 1) AS o, generate_series(0, 4) AS e;
INSERT INTO usage_records (request_id, org_id, environment_id, api_key_id, model_id, region_code, endpoint,
    stream, status, http_status, prompt_tokens, completion_tokens, cached_tokens, latency_ms, ttft_ms,
    input_per_1m_micros, output_per_1m_micros, cost_picousd, created_at, ingested_at)
SELECT 'req_bench_' || i,
       'org_bench' || lpad(org::text, 11, '0'),
       'env_bench' || lpad((org * 5 + i %% 5)::text, 11, '0'),
       'key_bench_' || org || '_' || (i %% 4),
       (ARRAY['llama-3-8b','llama-3-70b','mistral-7b','qwen-2.5-7b','phi-3-mini'])[1 + (i / 7) %% 5],
       'us-east', 'chat.completions', (i %% 3 = 0), CASE WHEN i %% 97 = 0 THEN 'error' ELSE 'ok' END,
       CASE WHEN i %% 97 = 0 THEN 502 ELSE 200 END,
       50 + i %% 900, 10 + i %% 300, 0, 80 + (i * 7919) %% 2000,
       CASE WHEN i %% 3 = 0 THEN 20 + (i * 104729) %% 400 END,
       50000, 50000, (60 + i %% 900 + i %% 300) * 50000::bigint,
       now() - make_interval(secs => (i::double precision * 2592000 / %(n)s)),
       now() - make_interval(secs => (i::double precision * 2592000 / %(n)s))  -- arrived as they happened
FROM (SELECT i, CASE WHEN i %% 2 = 0 THEN 0 ELSE 1 + (i / 2) %% (%(orgs)s - 1) END AS org
      FROM generate_series(0::bigint, %(n)s - 1) AS i) AS g;
"""


def _pct(xs: list[float], q: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(q * len(xs)))]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, default=10_000_000)
    p.add_argument("--increment", type=int, default=100_000)
    p.add_argument("--queries", type=int, default=50)
    p.add_argument("--keep-db", action="store_true")
    args = p.parse_args(argv)

    name = f"cic_bench_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg://postgres:postgres@127.0.0.1:5432/{name}"
    try:
        migrations.upgrade(url)
        engine = make_engine(Settings(database_url=url))
        with Session(engine) as s:
            catalog.seed(s)
            s.commit()
        t = time.monotonic()
        with engine.begin() as c:
            for stmt in filter(str.strip, FILL.split(";")):
                c.exec_driver_sql(stmt, {"orgs": ORGS, "n": args.records})
            c.exec_driver_sql("ANALYZE usage_records")
        fill_s = time.monotonic() - t
        print(f"filled {args.records:,} usage records in {fill_s:,.0f} s", flush=True)

        res = rollup.run(engine)
        print(
            f"\n| roll-up | records | seconds | records/s |\n|---|--:|--:|--:|\n"
            f"| backfill (first run) | {res.records:,} | {res.seconds:,.1f} | {res.records / res.seconds:,.0f} |",
            flush=True,
        )
        with engine.begin() as c:
            c.exec_driver_sql(
                "INSERT INTO usage_records (request_id, org_id, environment_id, api_key_id, model_id, region_code,"
                " endpoint, stream, status, http_status, prompt_tokens, completion_tokens, cached_tokens, latency_ms,"
                " input_per_1m_micros, output_per_1m_micros, cost_picousd, created_at)"
                " SELECT 'req_inc_' || i, 'org_bench' || lpad((i %% %(orgs)s)::text, 11, '0'),"
                " 'env_bench' || lpad(((i %% %(orgs)s) * 5)::text, 11, '0'), 'key_inc', 'llama-3-8b', 'us-east',"
                " 'chat.completions', false, 'ok', 200, 100, 20, 0, 150, 50000, 50000, 6000000, now()"
                " FROM generate_series(1, %(n)s) AS i",
                {"orgs": ORGS, "n": args.increment},
            )
        inc = rollup.run(engine)
        print(
            f"| incremental ({args.increment:,} new records) | {inc.records:,} | {inc.seconds:,.2f} |"
            f" {args.increment / inc.seconds:,.0f} |",
            flush=True,
        )

        actor = Actor.system("bench")
        until = utcnow()
        since = until - timedelta(days=30)
        # A range cut at noon at both ends: half a day of hourly roll-ups at each end (the most any cut
        # day reads), where the 30 days up to now read today as one daily row per group.
        noon = until.replace(hour=12, minute=0, second=0, microsecond=0)
        cut = (noon - timedelta(days=25), noon - timedelta(days=5))
        print("\n| dashboard usage query (biggest org) | rows | p50 ms | p95 ms | max ms |")
        print("|---|--:|--:|--:|--:|")
        queries = [
            (f"30 days, by {', '.join(group)}", group, since, until)
            for group in (["day", "model"], ["day", "environment"], ["model"])
        ]
        queries.append(("20 days cut at 12:00 UTC at both ends, by day, model", ["day", "model"], *cut))
        big = 0
        for label, group, a, b in queries:
            times: list[float] = []
            rows = 0
            for _ in range(args.queries):
                with Session(engine) as s:
                    t = time.perf_counter()
                    rep = usage.report(s, actor, "bench-0", since=a, until=b, group_by=group)  # type: ignore[arg-type]
                    times.append((time.perf_counter() - t) * 1000)
                    rows = len(rep.rows)
                    if b == until:
                        big = rep.totals.requests
            print(
                f"| {label} | {rows} | {statistics.median(times):.1f} | {_pct(times, 0.95):.1f} | {max(times):.1f} |",
                flush=True,
            )
        print(f"\n(the biggest org holds {big:,} requests over the 30 days)")
        engine.dispose()
    finally:
        if not args.keep_db:
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
