"""``cic jobs serve | list | run``: the scheduler, what it runs, and one run for serverless cron."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError, ProgrammingError

from cic import logs
from cic.cli import common
from cic.db import make_engine
from cic.settings import Settings
from jobs import records, scheduler
from jobs.registry import JobSpec, jobs_for
from jobs.runner import RunStatus, run_job

jobs_app = typer.Typer(
    help="Scheduled jobs (roll-ups, Stripe export, sweeps): the scheduler, and one-shot runs for serverless cron.",
    no_args_is_help=True,
)

EXIT_UNKNOWN_JOB = 2  # a failed run exits 1, like every other command's failure


def _settings() -> Settings:
    settings = common.settings()
    logs.configure(settings.log_level, json_output=settings.log_json)
    return settings


def _specs(settings: Settings) -> dict[str, JobSpec]:
    try:
        return jobs_for(settings)
    except (ImportError, ValueError) as exc:
        common.fail(f"cannot load the jobs: {exc}")


@jobs_app.command("serve")
def jobs_serve() -> None:
    """Run the scheduler until SIGTERM/SIGINT. Any number of instances run each job once per period."""
    settings = _settings()
    engine = make_engine(settings)
    try:
        scheduler.serve(settings, engine, specs=_specs(settings))
    except (OperationalError, ProgrammingError) as exc:
        common.db_error(exc)
    finally:
        engine.dispose()


def _next_runs(engine: Engine) -> dict[str, datetime]:
    with engine.connect() as conn:
        rows = conn.execute(text(f"SELECT id, next_run_time FROM {scheduler.JOB_TABLE}"))  # noqa: S608 - constant
        return {r[0]: datetime.fromtimestamp(r[1], UTC) for r in rows if r[1] is not None}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


@jobs_app.command("list")
def jobs_list(
    json_output: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Every job: schedule, description, last run (from job_runs) and next scheduled run."""
    settings = _settings()
    specs = _specs(settings)
    engine = make_engine(settings)
    try:
        last = records.last_runs(engine, specs)
        upcoming = _next_runs(engine)
    except (OperationalError, ProgrammingError) as exc:
        common.db_error(exc)
    finally:
        engine.dispose()
    rows: list[dict[str, Any]] = []
    for name, spec in specs.items():
        run = last.get(name)
        rows.append(
            {
                "name": name,
                "schedule": spec.schedule,
                "timeout_s": spec.timeout.total_seconds(),
                "description": spec.description,
                "last_status": run.status if run else None,
                "last_period_start": _iso(run.period_start) if run else None,
                "last_finished_at": _iso(run.finished_at) if run else None,
                "last_error": run.error if run else None,
                "next_run_at": _iso(upcoming.get(name)),
            }
        )
    if json_output:
        typer.echo(json.dumps(rows, indent=2))
        return
    width = max([len(r["name"]) for r in rows] + [4])
    sched_width = max([len(r["schedule"]) for r in rows] + [8])
    typer.echo(f"{'NAME':<{width}}  {'SCHEDULE':<{sched_width}}  {'LAST RUN':<36}  DESCRIPTION")
    for r in rows:
        last_run = f"{r['last_status']} {r['last_period_start']}" if r["last_status"] else "never"
        typer.echo(f"{r['name']:<{width}}  {r['schedule']:<{sched_width}}  {last_run:<36}  {r['description']}")


@jobs_app.command("run")
def jobs_run(
    name: Annotated[str, typer.Argument(help="the job's name (see `cic jobs list`)")],
    force: Annotated[
        bool, typer.Option("--force", help="run even if this period has run already (still takes the lock)")
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="print the whole result as JSON")] = False,
) -> None:
    """Run one job for the current period and exit: 0 ran or skipped, 1 failed, 2 unknown job.

    For serverless cron: schedule `cic jobs run NAME` as often as the job's period; however many
    invocations overlap, the period runs once."""
    settings = _settings()
    specs = _specs(settings)
    spec = specs.get(name)
    if spec is None:
        common.fail(f"unknown job {name!r}; jobs: {', '.join(specs)}", EXIT_UNKNOWN_JOB)
    engine = make_engine(settings)
    try:
        result = run_job(spec, settings, engine, force=force)
    finally:
        engine.dispose()
    if json_output:
        typer.echo(json.dumps(result.as_dict(), indent=2))
    else:
        typer.echo(json.dumps(result.summary, indent=2))
    period = result.period_start.isoformat()
    if result.status is RunStatus.failed:
        common.fail(f"job {name} failed (period {period}): {result.error}")
    if result.status is RunStatus.skipped:
        typer.echo(f"job {name} skipped (period {period}): {result.reason}", err=True)
    else:
        typer.echo(f"job {name} ran (period {period}) in {result.duration_s:.3f} s", err=True)
