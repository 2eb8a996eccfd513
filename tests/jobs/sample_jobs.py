"""Jobs registered for the CLI and scheduler tests (``CIC_JOB_MODULES=tests.jobs.sample_jobs``).

``CIC_TEST_JOBS_LOG`` names a file each run appends ``<job> <period>`` to, so a test can count
executions across processes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from jobs.registry import JobContext, job


def _log(ctx: JobContext, name: str) -> None:
    path = os.environ.get("CIC_TEST_JOBS_LOG")
    if path:
        with open(path, "a") as f:
            f.write(f"{name} {ctx.now.isoformat()} {os.getpid()}\n")


@job("test-export", every=timedelta(days=1), description="a daily job that only records that it ran")
def export(ctx: JobContext) -> Mapping[str, Any]:
    _log(ctx, "test-export")
    return {"exported": 3, "period": ctx.now, "attempt": ctx.attempt}


@job("test-fail", every=timedelta(days=1), description="a job that always fails")
def fail(ctx: JobContext) -> Mapping[str, Any]:
    _log(ctx, "test-fail")
    raise RuntimeError("the upstream refused the export")


@job("test-tick", every=timedelta(seconds=1), description="a job every second", timeout=timedelta(seconds=5))
def tick(ctx: JobContext) -> Mapping[str, Any]:
    _log(ctx, "test-tick")
    return {"tick": ctx.now.isoformat()}
