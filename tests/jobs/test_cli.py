"""`cic jobs run | list | serve`, run as an operator or a serverless cron runs them: real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from cic.settings import Settings
from tests.conftest import CIC
from tests.fakes.upstash import FakeUpstash
from tests.jobs.conftest import UPSTASH_TOKEN, repo_root
from tests.jobs.test_runner import runs
from tests.servers import wait_until


def job_env(settings: Settings, log: Path, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "CIC_DATABASE_URL": settings.database_url,
        "CIC_REDIS_URL": settings.redis_url or "",
        "CIC_JOB_MODULES": "tests.jobs.sample_jobs",
        "CIC_TEST_JOBS_LOG": str(log),
        "CIC_LOG_JSON": "true",
        "PYTHONPATH": str(repo_root()),
    }
    env.update(extra)
    return env


def cic(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CIC, *args], capture_output=True, text=True, env=env, timeout=120, check=False)


def log_lines(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


@pytest.mark.usefixtures("engine")
def test_run_and_list(settings: Settings, engine: Engine, tmp_path: Path) -> None:
    env = job_env(settings, tmp_path / "runs.log")
    first = cic(env, "jobs", "run", "test-export")
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert summary["exported"] == 3 and summary["attempt"] == 1
    assert "job test-export ran" in first.stderr

    again = cic(env, "jobs", "run", "test-export", "--json")
    assert again.returncode == 0, again.stderr
    result = json.loads(again.stdout)
    assert result["status"] == "skipped" and "already ran" in result["reason"] and result["lock"] == "redis"

    forced = cic(env, "jobs", "run", "test-export", "--force", "--json")
    assert forced.returncode == 0, forced.stderr
    assert json.loads(forced.stdout)["status"] == "ran" and json.loads(forced.stdout)["attempt"] == 2
    assert len(log_lines(tmp_path / "runs.log")) == 2

    failed = cic(env, "jobs", "run", "test-fail", "--json")
    assert failed.returncode == 1
    out = json.loads(failed.stdout)
    assert out["status"] == "failed" and out["error"] == "RuntimeError: the upstream refused the export"
    assert "error: job test-fail failed" in failed.stderr and "the upstream refused the export" in failed.stderr
    [row] = runs(engine, "test-fail")
    assert row.status == "failed" and row.error == "RuntimeError: the upstream refused the export"

    unknown = cic(env, "jobs", "run", "no-such-job")
    assert unknown.returncode == 2
    assert "unknown job 'no-such-job'" in unknown.stderr
    assert "node-health" in unknown.stderr and "test-export" in unknown.stderr

    listed = cic(env, "jobs", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    by_name: dict[str, Any] = {j["name"]: j for j in json.loads(listed.stdout)}
    assert {"node-health", "spool-replay", "job-history-prune", "test-export"} <= set(by_name)
    assert by_name["node-health"]["schedule"] == "every 5s"
    assert by_name["job-history-prune"]["schedule"] == "cron 17 * * * * (UTC)"
    assert by_name["test-export"]["last_status"] == "ran" and by_name["test-export"]["last_period_start"]
    assert by_name["test-fail"]["last_status"] == "failed"
    assert by_name["test-fail"]["last_error"] == "RuntimeError: the upstream refused the export"
    assert by_name["test-tick"]["last_status"] is None
    text_out = cic(env, "jobs", "list")
    assert text_out.returncode == 0
    assert text_out.stdout.splitlines()[0].split()[:3] == ["NAME", "SCHEDULE", "LAST"]
    assert any(line.startswith("test-export") and " ran " in line for line in text_out.stdout.splitlines())


@pytest.fixture(params=["redis", "upstash", "postgresql", "sqlite"])
def instance_env(
    request: pytest.FixtureRequest,
    settings: Settings,
    engine: Engine,
    sqlite_settings: Settings,
    sqlite_engine: Engine,
    upstash: tuple[str, FakeUpstash],
    tmp_path: Path,
) -> tuple[dict[str, str], Engine, Path]:
    log = tmp_path / "runs.log"
    if request.param == "redis":
        return job_env(settings, log), engine, log
    if request.param == "upstash":
        url, _ = upstash
        extra = {"CIC_REDIS_URL": "", "CIC_UPSTASH_REDIS_REST_URL": url, "CIC_UPSTASH_REDIS_REST_TOKEN": UPSTASH_TOKEN}
        return job_env(settings, log, **extra), engine, log
    if request.param == "postgresql":
        return job_env(settings, log, CIC_REDIS_URL=""), engine, log
    with sqlite_engine.begin() as conn:  # a session-wide SQLite file: forget earlier tests' runs
        conn.exec_driver_sql("DELETE FROM job_runs WHERE name = 'test-export'")
    return job_env(sqlite_settings, log), sqlite_engine, log


def test_instances_started_together_export_once(instance_env: tuple[dict[str, str], Engine, Path]) -> None:
    env, engine, log = instance_env
    procs = [
        subprocess.Popen(
            [CIC, "jobs", "run", "test-export", "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results.append(json.loads(out))
    assert sorted(r["status"] for r in results) == ["ran", "skipped"], results
    assert len(log_lines(log)) == 1
    [row] = runs(engine, "test-export")
    assert row.status == "ran" and row.attempts == 1


@pytest.fixture
def serve_process(settings: Settings, tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    env = job_env(settings, tmp_path / "runs.log")
    with open(tmp_path / "serve.err", "w") as err:
        proc = subprocess.Popen([CIC, "jobs", "serve"], stdout=subprocess.DEVNULL, stderr=err, text=True, env=env)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_serve_runs_jobs_every_period_and_stops_on_sigterm(
    serve_process: subprocess.Popen[str], engine: Engine, tmp_path: Path
) -> None:
    def ticks() -> int:
        assert serve_process.poll() is None, (tmp_path / "serve.err").read_text()
        return len([r for r in runs(engine, "test-tick") if r.status == "ran"])

    wait_until(lambda: ticks() >= 2, timeout=60, what="cic jobs serve to run test-tick twice")
    from tests.jobs.test_scheduler import stored_jobs

    assert {"test-tick", "node-health", "spool-replay", "job-history-prune"} <= set(stored_jobs(engine))
    serve_process.send_signal(signal.SIGTERM)
    assert serve_process.wait(30) == 0
    lines = [json.loads(line) for line in (tmp_path / "serve.err").read_text().splitlines() if line.startswith("{")]
    messages = [entry["msg"] for entry in lines]
    assert "jobs scheduler started" in messages and "jobs scheduler stopped" in messages
    assert any(e["msg"] == "job ran" and e.get("job") == "test-tick" for e in lines)
    assert len({r.period_start for r in runs(engine, "test-tick")}) == len(runs(engine, "test-tick"))
