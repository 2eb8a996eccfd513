"""The registry: what a job declaration must say, and the jobs the platform registers."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from jobs import registry
from jobs.catalog import JOB_MODULES
from jobs.registry import JobContext, JobSpec, all_jobs, job


def _noop(ctx: JobContext) -> dict[str, Any]:
    return {}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "Bad_Name", "every": timedelta(minutes=1)}, "lowercase"),
        ({"name": "x" * 65, "every": timedelta(minutes=1)}, "lowercase"),
        ({"name": "both", "every": timedelta(minutes=1), "cron": "* * * * *"}, "exactly one"),
        ({"name": "neither"}, "exactly one"),
        ({"name": "too-fast", "every": timedelta(milliseconds=500)}, "at least one second"),
        ({"name": "bad-cron", "cron": "every day"}, "5 fields"),
        ({"name": "no-timeout", "every": timedelta(minutes=1), "timeout": timedelta(0)}, "timeout"),
        ({"name": "no-attempts", "every": timedelta(minutes=1), "max_attempts": 0}, "max_attempts"),
        ({"name": "no-description", "every": timedelta(minutes=1), "description": " "}, "description"),
    ],
)
def test_invalid_declarations(kwargs: dict[str, Any], message: str) -> None:
    args = {"every": None, "cron": None, "description": "d", "timeout": timedelta(minutes=1), **kwargs}
    with pytest.raises(ValueError, match=message):
        JobSpec(args.pop("name"), _noop, **args)
    with pytest.raises(ValueError, match=message):
        job(kwargs["name"], **{k: v for k, v in args.items()})(_noop)


def test_register_by_decorator_and_duplicates() -> None:
    name = "t-registry-dup"

    @job(name, cron="0 3 * * *", description="nightly")
    def first(ctx: JobContext) -> dict[str, Any]:
        return {}

    spec = all_jobs()[name]
    assert spec.func is first and spec.cron == "0 3 * * *" and spec.every is None
    assert spec.timeout == timedelta(minutes=10) and spec.schedule == "cron 0 3 * * * (UTC)"
    job(name, cron="0 3 * * *", description="nightly")(first)  # the same function again: a re-import

    with pytest.raises(ValueError, match="registered twice"):
        job(name, every=timedelta(minutes=1), description="other")(_noop)
    registry._REGISTRY.pop(name)


def test_all_jobs_imports_the_catalog() -> None:
    specs = all_jobs()
    assert {"node-health", "spool-replay", "job-history-prune"} <= set(specs)
    assert specs["node-health"].every == timedelta(seconds=5)
    assert specs["spool-replay"].every == timedelta(seconds=30)
    assert all(spec.name == name for name, spec in specs.items())
    assert list(specs) == sorted(specs)
    assert "jobs.fleet" in JOB_MODULES


def test_extra_modules_are_imported() -> None:
    assert "test-export" in all_jobs(["tests.jobs.sample_jobs"])
    with pytest.raises(ModuleNotFoundError):
        all_jobs(["tests.jobs.no_such_module"])
