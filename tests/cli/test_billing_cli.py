"""`cic jobs run` for the billing jobs, `cic billing statement|reconcile` and `cic credits`, as an operator
runs them (the installed console script against PostgreSQL and Redis)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import delete
from sqlalchemy.engine import Engine
from sqlmodel import col

from cic.billing.pricing import month_of
from cic.models import BillingAccrual
from cic.models.types import utcnow
from cic.settings import Settings
from tests.billing.helpers import insert_records, record
from tests.cli.test_cli import js, run


@pytest.mark.usefixtures("engine")
def test_billing_jobs_statement_reconcile_and_credits(settings: Settings, engine: Engine) -> None:
    org = js(settings, "orgs", "create", "--name", "Ledger Co", "--owner", "cfo@ledger.example", "--plan", "developer")
    env = js(
        settings,
        "envs",
        "create",
        "--org",
        org["slug"],
        "--name",
        "prod",
        "--region",
        "us-east",
        "--models",
        "llama-3-8b",
    )
    credit = js(settings, "credits", "grant", "--org", org["slug"], "--amount", "2.50", "--expires-in-days", "30")
    assert credit["kind"] == "promotional" and Decimal(credit["amount_usd"]) == Decimal("2.5")
    assert {c["kind"] for c in js(settings, "credits", "list", "--org", org["slug"])} == {"signup", "promotional"}
    bad = run(settings, "credits", "grant", "--org", org["slug"], "--amount", "-1", ok=False)
    assert bad.returncode == 1 and "error:" in bad.stderr

    now = utcnow()
    hour = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    insert_records(engine, [record(org["id"], env["id"], hour + timedelta(minutes=i), prompt=100) for i in range(20)])

    rolled = js(settings, "jobs", "run", "usage-rollup", "--json")
    assert rolled["status"] == "ran" and rolled["summary"]["records"] >= 20
    accrued = js(settings, "jobs", "run", "billing-accrue", "--json")
    assert accrued["status"] == "ran" and accrued["summary"]["lines"] >= 1
    skipped = js(settings, "jobs", "run", "stripe-export", "--json")
    assert skipped["summary"] == {"skipped": "CIC_BILLING_ENABLED=false"}

    usage = js(settings, "usage", "show", "--org", org["slug"], "--json")
    assert usage["totals"]["requests"] == 20 and usage["as_of"]
    month = month_of(hour)
    statement = js(settings, "billing", "statement", "--org", org["slug"], "--month", month, "--json")
    assert statement["lines"][0]["requests"] == 20 and statement["status"] == "open"
    assert Decimal(statement["gross_usd"]) == Decimal(20 * 105 * 50_000) / 10**12
    assert "amount due" in run(settings, "billing", "statement", "--org", org["slug"], "--month", month).stdout

    report = js(settings, "billing", "reconcile", "--month", month, "--json")
    assert report["ok"] is True
    (mine,) = [o for o in report["orgs"] if o["org_id"] == org["id"]]
    assert mine["records"]["requests"] == 20 == mine["ledger"]["requests"]

    # A ledger that no longer matches the roll-ups is a mismatch: exit status 1, and it is named.
    with engine.begin() as c:
        c.execute(delete(BillingAccrual).where(col(BillingAccrual.org_id) == org["id"]))
    broken = run(settings, "billing", "reconcile", "--month", month, "--no-stripe", ok=False)
    assert broken.returncode == 1 and "MISMATCH" in broken.stdout and "!= ledger" in broken.stdout
    assert run(settings, "billing", "reconcile", "--month", "2026-13", ok=False).returncode == 1
