"""Statements per org and month (from the ledger) and the billing summary the dashboard shows.

A statement is the sum of its month's ledger lines: usage by environment × model × region, reserved
capacity, the free allowance, volume discounts, the credits that paid for it, and the amount due. The
open month also shows what the roll-ups hold beyond the last priced hour (``pending_usd``, at list
price), so nothing used is ever invisible.
"""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from pydantic import BaseModel
from sqlalchemy import func
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from cic.billing import accrual, pricing
from cic.billing.credits import remaining_picousd
from cic.billing.pricing import usd
from cic.errors import ValidationFailed
from cic.models import (
    BillingAccount,
    BillingAccrual,
    BillingStatement,
    CatalogModel,
    CreditApplication,
    CreditGrant,
    Environment,
    RollupCursor,
)
from cic.models.billing import AccrualKind, BillingStatus, StatementStatus
from cic.models.types import utcnow
from cic.services import usage
from cic.services.authz import Actor, authorize_org
from cic.settings import Settings

MONTH_RE = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


def money(pico: int) -> str:
    return format(usd(pico), "f")


class StatementLine(BaseModel):
    environment: str | None
    environment_id: str | None
    model: str
    region: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    gross_usd: str
    discount_usd: str
    due_usd: str


class ReservedLine(BaseModel):
    model: str
    region: str
    tokens_per_s: int
    hours: int
    amount_usd: str


class CreditApplied(BaseModel):
    grant_id: str
    kind: str
    amount_usd: str


class Statement(BaseModel):
    org_id: str
    month: str
    status: str
    lines: list[StatementLine]
    reserved: list[ReservedLine]
    tokens: int
    gross_usd: str
    allowance_usd: str
    discount_usd: str
    credits_usd: str
    amount_due_usd: str
    credits_applied: list[CreditApplied]
    priced_through: datetime | None
    pending_usd: str
    closed_at: datetime | None


class StatementSummary(BaseModel):
    month: str
    status: str
    gross_usd: str
    amount_due_usd: str


class BillingSummary(BaseModel):
    org_id: str
    plan: str
    billing_enabled: bool
    status: str
    past_due_since: datetime | None
    keys_blocked: bool
    payment_method: bool
    month: str
    month_to_date_usd: str
    forecast_usd: str
    amount_due_usd: str
    discount_usd: str
    allowance_usd: str
    credits_applied_usd: str
    credits_remaining_usd: str
    free_allowance_tokens: int
    free_allowance_used_tokens: int
    tokens: int
    budget_usd: str | None
    budget_used_fraction: float | None
    reference_cost_usd: str
    savings_usd: str
    priced_through: datetime | None


def parse_month(month: str) -> tuple[datetime, datetime]:
    if not MONTH_RE.match(month):
        raise ValidationFailed(f"'{month}' is not a month (YYYY-MM).", param="month", code="invalid_month")
    y, m = (int(x) for x in month.split("-"))
    start = datetime(y, m, 1, tzinfo=UTC)
    return start, datetime(y + (m == 12), m % 12 + 1, 1, tzinfo=UTC)


def priced_through(session: Session) -> datetime | None:
    row = session.get(RollupCursor, accrual.CLOSED_CURSOR)
    return row.position if row else None


def statement(session: Session, actor: Actor, org_ref: str, month: str) -> Statement:
    org, _ = authorize_org(session, actor, org_ref)
    start, end = parse_month(month)
    a = BillingAccrual
    envs = dict(session.exec(select(Environment.id, Environment.name).where(Environment.org_id == org.id)).all())
    lines: list[StatementLine] = []
    reserved: list[ReservedLine] = []
    totals: dict[str, int] = defaultdict(int)
    usage_q = (
        sa_select(
            col(a.environment_id),
            col(a.model_id),
            col(a.region_code),
            func.sum(a.requests),
            func.sum(a.prompt_tokens),
            func.sum(a.completion_tokens),
            func.sum(a.cached_tokens),
            func.sum(a.gross_picousd),
            func.sum(a.discount_picousd + a.allowance_picousd),
            func.sum(a.due_picousd + a.credits_picousd),
        )
        .where(col(a.org_id) == org.id, col(a.month) == month, col(a.kind) == AccrualKind.usage.value)
        .group_by(col(a.environment_id), col(a.model_id), col(a.region_code))
    )
    for env_id, model, region, req, p, c, cached, gross, disc, net in session.execute(usage_q):
        lines.append(
            StatementLine(
                environment=envs.get(env_id) if env_id else None,
                environment_id=env_id,
                model=model,
                region=region,
                requests=int(req or 0),
                prompt_tokens=int(p or 0),
                completion_tokens=int(c or 0),
                cached_tokens=int(cached or 0),
                gross_usd=money(int(gross or 0)),
                discount_usd=money(int(disc or 0)),
                due_usd=money(int(net or 0)),
            )
        )
        totals["tokens"] += int(p or 0) + int(c or 0)
    lines.sort(key=lambda x: (x.environment or "", x.model, x.region))
    res_q = (
        sa_select(
            col(a.model_id), col(a.region_code), func.max(a.tokens_per_s), func.count(), func.sum(a.gross_picousd)
        )
        .where(col(a.org_id) == org.id, col(a.month) == month, col(a.kind) == AccrualKind.reserved.value)
        .group_by(col(a.model_id), col(a.region_code))
    )
    for model, region, tps, hours, gross in session.execute(res_q):
        reserved.append(
            ReservedLine(
                model=model, region=region, tokens_per_s=int(tps or 0), hours=int(hours), amount_usd=money(int(gross))
            )
        )
    sums = session.execute(
        sa_select(
            func.sum(a.gross_picousd),
            func.sum(a.allowance_picousd),
            func.sum(a.discount_picousd),
            func.sum(a.credits_picousd),
            func.sum(a.due_picousd),
        ).where(col(a.org_id) == org.id, col(a.month) == month)
    ).one()
    gross, allowance, discount, credits, due = (int(v or 0) for v in sums)
    applied = session.execute(
        sa_select(col(CreditApplication.grant_id), col(CreditGrant.kind), func.sum(CreditApplication.amount_picousd))
        .join(BillingAccrual, col(BillingAccrual.id) == col(CreditApplication.accrual_id))
        .join(CreditGrant, col(CreditGrant.id) == col(CreditApplication.grant_id))
        .where(col(BillingAccrual.org_id) == org.id, col(BillingAccrual.month) == month)
        .group_by(col(CreditApplication.grant_id), col(CreditGrant.kind))
    ).all()
    st = session.exec(
        select(BillingStatement).where(BillingStatement.org_id == org.id, BillingStatement.month == month)
    ).first()
    closed = st is not None and st.status == StatementStatus.closed.value
    through = priced_through(session)
    pending = 0
    if not closed and through is not None and through < end:
        pending = usage.total(session, org.id, max(start, through), min(end, utcnow())).cost_picousd
    return Statement(
        org_id=org.id,
        month=month,
        status=StatementStatus.closed.value if closed else StatementStatus.open.value,
        lines=lines,
        reserved=reserved,
        tokens=totals["tokens"],
        gross_usd=money(gross),
        allowance_usd=money(allowance),
        discount_usd=money(discount),
        credits_usd=money(credits),
        amount_due_usd=money(due),
        credits_applied=[CreditApplied(grant_id=g, kind=k, amount_usd=money(int(n))) for g, k, n in applied],
        priced_through=min(through, end) if through else None,
        pending_usd=money(pending),
        closed_at=st.closed_at if st else None,
    )


def list_statements(session: Session, actor: Actor, org_ref: str) -> list[StatementSummary]:
    org, _ = authorize_org(session, actor, org_ref)
    a = BillingAccrual
    rows = session.execute(
        sa_select(col(a.month), func.sum(a.gross_picousd), func.sum(a.due_picousd))
        .where(col(a.org_id) == org.id)
        .group_by(col(a.month))
    ).all()
    closed = set(
        session.exec(
            select(BillingStatement.month).where(
                BillingStatement.org_id == org.id, BillingStatement.status == StatementStatus.closed.value
            )
        ).all()
    )
    by_month = {m: (int(g or 0), int(d or 0)) for m, g, d in rows}
    by_month.setdefault(pricing.month_of(utcnow()), (0, 0))
    return [
        StatementSummary(
            month=m,
            status=StatementStatus.closed.value if m in closed else StatementStatus.open.value,
            gross_usd=money(g),
            amount_due_usd=money(d),
        )
        for m, (g, d) in sorted(by_month.items(), reverse=True)
    ]


def account(session: Session, org_id: str) -> BillingAccount:
    return session.get(BillingAccount, org_id) or BillingAccount(org_id=org_id)


def blocked_after(acct: BillingAccount, settings: Settings) -> datetime | None:
    """When an org with a failed payment stops being served (its grace period's end), if it does."""
    if acct.status != BillingStatus.past_due.value or acct.past_due_since is None:
        return None
    return acct.past_due_since + timedelta(days=settings.billing_grace_days)


def summary(session: Session, actor: Actor, org_ref: str, settings: Settings) -> BillingSummary:
    org, _ = authorize_org(session, actor, org_ref)
    now = utcnow()
    month = pricing.month_of(now)
    start, end = parse_month(month)
    acct = account(session, org.id)
    block = blocked_after(acct, settings)

    per_model = {k[0]: t for k, t in usage.aggregate(session, start, now, org_id=org.id, by=["model"]).items()}
    gross = sum(t.cost_picousd for t in per_model.values())
    tokens = sum(t.tokens for t in per_model.values())
    refs = {
        m.id: (m.reference_input_per_1m_micros, m.reference_output_per_1m_micros)
        for m in session.exec(select(CatalogModel).where(col(CatalogModel.id).in_(list(per_model)))).all()
    }
    reference = 0
    for model, t in per_model.items():
        ref_in, ref_out = refs.get(model, (0, 0))
        reference += t.prompt_tokens * ref_in + t.completion_tokens * ref_out  # tokens × µ$ per 1M = pico-dollars

    # Forecast: this month so far, plus the last seven days' daily average for the days left.
    week = usage.total(session, org.id, now - timedelta(days=7), now).cost_picousd
    days_left = Decimal((end - now).total_seconds()) / 86400
    forecast = gross + int(Decimal(week) / 7 * days_left)

    a = BillingAccrual
    sums = session.execute(
        sa_select(
            func.sum(a.allowance_picousd),
            func.sum(a.discount_picousd),
            func.sum(a.credits_picousd),
            func.sum(a.due_picousd),
        ).where(col(a.org_id) == org.id, col(a.month) == month)
    ).one()
    allowance, discount, credits, due = (int(v or 0) for v in sums)
    free_tokens = pricing.allowance_tokens(org.plan)
    budget = org.monthly_budget_cents
    return BillingSummary(
        org_id=org.id,
        plan=org.plan,
        billing_enabled=settings.billing_enabled,
        status=acct.status,
        past_due_since=acct.past_due_since,
        keys_blocked=block is not None and now >= block,
        payment_method=acct.status in (BillingStatus.active.value, BillingStatus.past_due.value),
        month=month,
        month_to_date_usd=money(gross),
        forecast_usd=money(forecast),
        amount_due_usd=money(due),
        discount_usd=money(discount),
        allowance_usd=money(allowance),
        credits_applied_usd=money(credits),
        credits_remaining_usd=money(remaining_picousd(session, org.id, now)),
        free_allowance_tokens=free_tokens,
        free_allowance_used_tokens=min(free_tokens, tokens),
        tokens=tokens,
        budget_usd=format(Decimal(budget) / 100, "f") if budget else None,
        budget_used_fraction=round(gross / (budget * 10**10), 4) if budget else None,
        reference_cost_usd=money(reference),
        savings_usd=money(max(0, reference - gross)),
        priced_through=priced_through(session),
    )
