"""``spool-replay``: usage records an API process spooled to disk and did not live to replay.

API workers replay their own spool files; this job picks up the files of processes that are gone
(``usage-<pid>.jsonl`` of a dead pid, re-queued and orphaned files) in ``CIC_SPOOL_DIR`` on this host.
Run it on every host whose API workers spool (each host's spool directory is its own).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from api.gateway.metering import replay_spool
from jobs.registry import JobContext, job


@job(
    "spool-replay",
    every=timedelta(seconds=30),
    timeout=timedelta(minutes=5),
    description="insert usage records spooled to disk by API processes that have exited",
)
def spool_replay(ctx: JobContext) -> Mapping[str, Any]:
    spool_dir = ctx.settings.spool_dir
    replayed = replay_spool(ctx.engine, spool_dir, include_own=False)
    waiting = sum(1 for _ in spool_dir.glob("usage-*.jsonl")) if spool_dir.is_dir() else 0
    return {"replayed": replayed, "files_waiting": waiting}
