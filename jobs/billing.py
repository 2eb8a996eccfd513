"""The billing jobs: usage roll-up, accrual (pricing), Stripe export, budget alerts.

Each is the one-shot function in ``cic.billing``; the runner adds the lock and the once-per-period
record, so any number of ``cic jobs serve`` instances — or a serverless cron calling
``cic jobs run NAME`` — run each once per period.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from cic.billing import accrual, alerts, export, rollup
from jobs.registry import JobContext, job


@job(
    "usage-rollup",
    every=timedelta(minutes=1),
    timeout=timedelta(minutes=30),
    description="fold new and late usage records into the hourly and daily roll-ups",
)
def usage_rollup(ctx: JobContext) -> Mapping[str, Any]:
    return rollup.run(ctx.engine).summary()


@job(
    "billing-accrue",
    every=timedelta(minutes=5),
    timeout=timedelta(minutes=30),
    description="price closed hours into the billing ledger (allowance, volume discount, credits); close months",
)
def billing_accrue(ctx: JobContext) -> Mapping[str, Any]:
    rollup.run(ctx.engine)  # price what the records say, not what the last roll-up saw
    return accrual.run(ctx.engine, ctx.settings).summary()


@job(
    "stripe-export",
    every=timedelta(minutes=5),
    timeout=timedelta(minutes=30),
    description="report the ledger to Stripe as meter events, one per org, hour and meter (off unless billing is on)",
)
def stripe_export(ctx: JobContext) -> Mapping[str, Any]:
    if not ctx.settings.billing_enabled:
        return {"skipped": "CIC_BILLING_ENABLED=false"}
    result = export.run(ctx.engine, ctx.settings)
    if result.failed:
        raise RuntimeError(f"{result.failed} org(s) not exported: {'; '.join(result.errors)}")
    return result.summary()


@job(
    "budget-alerts",
    every=timedelta(minutes=5),
    timeout=timedelta(minutes=10),
    description="alert owners at 80 % and 100 % of monthly budgets and on spend spikes (mail)",
)
def budget_alerts(ctx: JobContext) -> Mapping[str, Any]:
    return alerts.run(ctx.engine, ctx.settings).summary()
