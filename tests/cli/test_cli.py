"""The `cic` commands, run as a user runs them: the installed console script, JSON on stdout."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlmodel import Session

from cic.models import UsageRecord
from cic.settings import Settings
from tests.conftest import CIC


def run(settings: Settings, *args: str, ok: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CIC_DATABASE_URL": settings.database_url, "CIC_REDIS_URL": settings.redis_url or ""}
    p = subprocess.run([CIC, *args], capture_output=True, text=True, env=env, input=stdin, timeout=60, check=False)
    if ok:
        assert p.returncode == 0, p.stderr
    return p


def js(settings: Settings, *args: str) -> Any:
    return json.loads(run(settings, *args).stdout)


@pytest.mark.usefixtures("engine")
def test_contract_commands(settings: Settings, session: Session) -> None:
    org = js(settings, "orgs", "create", "--name", "Acme Corp", "--owner", "ops@acme.example", "--plan", "developer")
    assert org["slug"] == "acme-corp" and org["id"].startswith("org_")
    env = js(
        settings,
        "envs",
        "create",
        "--org",
        "acme-corp",
        "--name",
        "prod",
        "--region",
        "us-east",
        "--models",
        "llama-3-8b,mistral-7b",
    )
    assert env["models"] == ["llama-3-8b", "mistral-7b"] and env["region"] == "us-east"
    key = js(
        settings,
        "keys",
        "create",
        "--org",
        org["id"],
        "--env",
        env["id"],
        "--name",
        "backend",
        "--rpm",
        "120",
        "--tpm",
        "50000",
        "--expires-in",
        "30",
    )
    assert key["key"].startswith("clsk_prod_") and key["rpm"] == 120 and key["tpm"] == 50000
    assert key["expires_at"] is not None

    listed = js(settings, "keys", "list", "--org", "acme-corp")
    assert [k["id"] for k in listed] == [key["id"]] and key["key"] not in json.dumps(listed)

    session.add(
        UsageRecord(
            request_id="req_cli_1",
            org_id=org["id"],
            environment_id=env["id"],
            api_key_id=key["id"],
            model_id="llama-3-8b",
            region_code="us-east",
            endpoint="chat.completions",
            status="ok",
            prompt_tokens=1000,
            completion_tokens=500,
            cost_picousd=75_000_000,
            created_at=datetime.now(UTC),
        )
    )
    session.commit()
    usage = js(settings, "usage", "show", "--org", "acme-corp", "--env", "prod", "--since", "2026-01-01", "--json")
    assert usage["models"] == [
        {
            "model": "llama-3-8b",
            "requests": 1,
            "prompt_tokens": 1000,
            "completion_tokens": 500,
            "cached_tokens": 0,
            "errors": 0,
            "cost": 0.000075,
            "cost_usd": "0.000075000000",
        }
    ]
    table = run(settings, "usage", "show", "--org", "acme-corp").stdout
    assert "llama-3-8b" in table and "0.000075" in table

    # Limits can only narrow: the developer plan allows 600 requests/min.
    p = run(settings, "keys", "update", key["id"], "--org", "acme-corp", "--rpm", "601", ok=False)
    assert p.returncode == 1 and "cannot exceed" in p.stderr
    assert js(settings, "keys", "update", key["id"], "--org", "acme-corp", "--rpm", "300")["rpm"] == 300
    assert js(settings, "envs", "update", "--org", "acme-corp", "--env", "prod", "--tpm", "90000")["tpm"] == 90000
    assert js(settings, "orgs", "update", "--org", "acme-corp", "--max-concurrency", "50")["max_concurrency"] == 50

    revoked = js(settings, "keys", "revoke", "--org", "acme-corp", key["id"])
    assert revoked["status"] == "revoked"


@pytest.mark.usefixtures("engine")
def test_errors_are_readable(settings: Settings) -> None:
    run(settings, "orgs", "create", "--name", "Dup", "--owner", "a@dup.example")
    p = run(settings, "orgs", "create", "--name", "Dup", "--owner", "b@dup.example", ok=False)
    assert p.returncode == 1 and p.stderr.startswith("error: The organization slug 'dup' is taken")
    p = run(
        settings,
        "envs",
        "create",
        "--org",
        "dup",
        "--name",
        "dev",
        "--region",
        "mars",
        "--models",
        "llama-3-8b",
        ok=False,
    )
    assert p.returncode == 1 and "Unknown region 'mars'" in p.stderr
    p = run(
        settings,
        "envs",
        "create",
        "--org",
        "dup",
        "--name",
        "dev",
        "--region",
        "us-east",
        "--models",
        "gpt-5",
        ok=False,
    )
    assert "Unknown model: 'gpt-5'" in p.stderr
    p = run(settings, "keys", "create", "--org", "nope", "--env", "dev", "--name", "x", ok=False)
    assert "Organization 'nope' not found" in p.stderr
    p = run(settings, "usage", "show", "--org", "dup", "--since", "yesterday", ok=False)
    assert "not a date" in p.stderr
    assert "Traceback" not in p.stderr


@pytest.mark.usefixtures("engine")
def test_users_and_catalog(settings: Settings) -> None:
    p = run(
        settings,
        "users",
        "create",
        "--email",
        "root@ops.example",
        "--admin",
        "--password-stdin",
        stdin="Sturdy-Passw0rd!\n",
    )
    assert json.loads(p.stdout)["is_platform_admin"] is True
    p = run(settings, "users", "create", "--email", "weak@ops.example", "--password-stdin", stdin="weak\n", ok=False)
    assert "Password is too weak" in p.stderr
    cat = js(settings, "catalog", "list")
    assert len(cat["regions"]) == 4 and any(m["id"] == "all-minilm-l6-v2" for m in cat["models"])
    assert js(settings, "catalog", "seed")["prices_added"] == 0
    cur = js(settings, "db", "current")
    assert cur["current"] == cur["head"]


def test_fresh_sqlite_default(tmp_path: Any) -> None:
    """With no settings at all: a SQLite file under ./.cic/ in the working directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIC_")}
    for args in (
        ["db", "upgrade"],
        ["catalog", "seed"],
        ["orgs", "create", "--name", "Solo", "--owner", "me@solo.example"],
    ):
        p = subprocess.run([CIC, *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60, check=False)
        assert p.returncode == 0, p.stderr
    assert (tmp_path / ".cic" / "cic.db").exists()
