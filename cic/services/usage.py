"""Usage queries: totals per day / model / environment over an org's usage records."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import Date, case, cast, func
from sqlmodel import Session, col, select

from cic.models import Environment, UsageRecord
from cic.models.types import utcnow
from cic.models.usage import UsageReport, UsageRow
from cic.services.authz import Actor, authorize_org
from cic.services.environments import find_env

GroupBy = Literal["day", "model", "environment"]
PICO = Decimal(10) ** 12


def picousd_to_usd(pico: int) -> Decimal:
    return (Decimal(pico) / PICO).quantize(Decimal("0.000000000001"))


def _row(values: dict[str, Any]) -> UsageRow:
    cost = picousd_to_usd(int(values.pop("cost_picousd") or 0))
    day = values.get("day")
    if isinstance(day, str):  # SQLite hands dates back as text
        values["day"] = date.fromisoformat(day)
    elif isinstance(day, datetime):
        values["day"] = day.date()
    for k in ("requests", "prompt_tokens", "completion_tokens", "cached_tokens", "errors"):
        values[k] = int(values.get(k) or 0)
    return UsageRow(**values, cost=float(cost), cost_usd=format(cost, "f"))


def report(
    session: Session,
    actor: Actor,
    org_ref: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    env_ref: str | None = None,
    group_by: list[GroupBy] | None = None,
) -> UsageReport:
    org, _ = authorize_org(session, actor, org_ref)
    until = until or utcnow()
    since = since or (until - timedelta(days=30))
    group_by = list(dict.fromkeys(group_by or ["day"]))

    keys: list[Any] = []
    labels: dict[str, Any] = {}
    if "day" in group_by:
        created = col(UsageRecord.created_at)
        sqlite = session.get_bind().dialect.name == "sqlite"
        labels["day"] = (func.date(created) if sqlite else cast(created, Date)).label("day")
    if "model" in group_by:
        labels["model"] = col(UsageRecord.model_id).label("model")
    if "environment" in group_by:
        labels["environment"] = col(Environment.name).label("environment")
    keys = [labels[g] for g in group_by]

    measures = [
        func.count().label("requests"),
        func.coalesce(func.sum(UsageRecord.prompt_tokens), 0).label("prompt_tokens"),
        func.coalesce(func.sum(UsageRecord.completion_tokens), 0).label("completion_tokens"),
        func.coalesce(func.sum(UsageRecord.cached_tokens), 0).label("cached_tokens"),
        func.coalesce(func.sum(case((col(UsageRecord.status) != "ok", 1), else_=0)), 0).label("errors"),
        func.coalesce(func.sum(UsageRecord.cost_picousd), 0).label("cost_picousd"),
    ]
    q = (
        select(*keys, *measures)
        .select_from(UsageRecord)
        .join(Environment, col(Environment.id) == col(UsageRecord.environment_id))
        .where(
            UsageRecord.org_id == org.id,
            col(UsageRecord.created_at) >= since,
            col(UsageRecord.created_at) < until,
        )
    )
    if env_ref:
        # A deleted environment's usage stays queryable by id.
        env_id = env_ref if env_ref.startswith("env_") else find_env(session, org, env_ref).id
        q = q.where(UsageRecord.environment_id == env_id)
    if keys:
        q = q.group_by(*keys).order_by(*keys)
    rows = [_row(dict(r._mapping)) for r in session.exec(q)]
    totals = _row(
        {
            "requests": sum(r.requests for r in rows),
            "prompt_tokens": sum(r.prompt_tokens for r in rows),
            "completion_tokens": sum(r.completion_tokens for r in rows),
            "cached_tokens": sum(r.cached_tokens for r in rows),
            "errors": sum(r.errors for r in rows),
            "cost_picousd": sum(int(Decimal(r.cost_usd) * PICO) for r in rows),
        }
    )
    return UsageReport(org_id=org.id, since=since, until=until, group_by=list(group_by), rows=rows, totals=totals)
