"""``job-history-prune``: ``job_runs`` keeps ``CIC_JOB_HISTORY_DAYS`` of periods (a 5 s job writes
17,280 rows a day)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from jobs import records
from jobs.registry import JobContext, job


@job(
    "job-history-prune",
    cron="17 * * * *",
    timeout=timedelta(minutes=5),
    description="delete job_runs records older than CIC_JOB_HISTORY_DAYS",
)
def prune_job_history(ctx: JobContext) -> Mapping[str, Any]:
    before = ctx.now - timedelta(days=ctx.settings.job_history_days)
    return {"deleted": records.prune(ctx.engine, before), "before": before.isoformat()}
