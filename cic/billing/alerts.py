"""Budget alerts: 80 % and 100 % of a monthly budget (org, environment or key), and spend spikes.

Spend is read from the roll-ups (list price, the same figure the gateway's spend caps count). Each
alert is a row, unique per scope × kind × period, so it fires once a month (budgets) or once a day
(spikes) however often the job runs; then the org's owners and admins are mailed through
``cic.notify``. A mail that fails is retried by later runs until it goes out.

A spike: the last 24 hours cost more than ``CIC_SPIKE_FACTOR`` (10) × the average day of the 7 before
(which must have had some spend), and at least ``CIC_SPIKE_MIN_USD``.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from cic.billing.pricing import PICO_PER_USD, month_of, usd
from cic.models import ApiKey, BudgetAlert, Environment, Membership, Org, Role, User
from cic.models.billing import AlertKind
from cic.models.types import utcnow
from cic.notify import EmailSender, NotificationError, email_sender
from cic.services import usage
from cic.settings import Settings

log = logging.getLogger(__name__)

PICO_PER_CENT = PICO_PER_USD // 100


@dataclass
class AlertResult:
    fired: list[str] = field(default_factory=list)
    notified: int = 0
    notify_failed: int = 0

    def summary(self) -> dict[str, Any]:
        return {"fired": self.fired, "notified": self.notified, "notify_failed": self.notify_failed}


def run(
    engine: Engine, settings: Settings, *, now: datetime | None = None, sender: EmailSender | None = None
) -> AlertResult:
    now = now or utcnow()
    result = AlertResult()
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    with Session(engine) as s:
        budgeted = _budgets(s)
        orgs = {org_id for org_id, *_ in budgeted} | set(
            s.exec(select(Org.id)).all()  # every org can spike
        )
    for org_id in sorted(orgs):
        with Session(engine) as s, s.begin():
            _check_org(s, org_id, [b for b in budgeted if b[0] == org_id], month_start, now, settings, result)
    _notify_pending(engine, settings, sender or email_sender(settings), result)
    return result


Budget = tuple[str, str, str, int]  # org id, scope (org/environment/key), scope id, cents


def _budgets(session: Session) -> list[Budget]:
    out: list[Budget] = []
    for o in session.exec(select(Org).where(col(Org.monthly_budget_cents).is_not(None))):
        out.append((o.id, "org", o.id, int(o.monthly_budget_cents or 0)))
    for e in session.exec(
        select(Environment).where(
            col(Environment.monthly_budget_cents).is_not(None), col(Environment.deleted_at).is_(None)
        )
    ):
        out.append((e.org_id, "environment", e.id, int(e.monthly_budget_cents or 0)))
    for k in session.exec(
        select(ApiKey).where(col(ApiKey.monthly_budget_cents).is_not(None), col(ApiKey.revoked_at).is_(None))
    ):
        out.append((k.org_id, "key", k.id, int(k.monthly_budget_cents or 0)))
    return out


def _check_org(
    s: Session,
    org_id: str,
    budgets: list[Budget],
    month_start: datetime,
    now: datetime,
    settings: Settings,
    result: AlertResult,
) -> None:
    spend: dict[tuple[str, str], int] = defaultdict(int)
    if budgets:
        for (env_id, key_id), t in usage.aggregate(
            s, month_start, now, org_id=org_id, by=["environment_id", "api_key_id"]
        ).items():
            spend[("org", org_id)] += t.cost_picousd
            spend[("environment", env_id)] += t.cost_picousd
            spend[("key", key_id)] += t.cost_picousd
    period = month_of(now)
    for _, scope, scope_id, cents in budgets:
        spent, limit = spend[(scope, scope_id)], cents * PICO_PER_CENT
        for kind, threshold in ((AlertKind.budget_100, limit), (AlertKind.budget_80, limit * 8 // 10)):
            if spent >= threshold:
                _fire(
                    s,
                    org_id,
                    scope,
                    scope_id,
                    kind,
                    period,
                    spent,
                    threshold,
                    {"budget_usd": str(Decimal(cents) / 100)},
                    result,
                )
                break  # 100 % implies 80 %: one mail, the more urgent one

    last_day = usage.total(s, org_id, now - timedelta(days=1), now).cost_picousd
    week = usage.total(s, org_id, now - timedelta(days=8), now - timedelta(days=1)).cost_picousd
    average = week // 7
    floor = int(Decimal(str(settings.spike_min_usd)) * PICO_PER_USD)
    # No baseline (a new org, a dormant one) is no spike: there is no average to be a multiple of.
    if average > 0 and last_day >= floor and last_day > settings.spike_factor * average:
        _fire(
            s,
            org_id,
            "org",
            org_id,
            AlertKind.spike,
            f"{now.astimezone(UTC):%Y-%m-%d}",
            last_day,
            int(settings.spike_factor * average),
            {"daily_average_usd": str(usd(average)), "factor": settings.spike_factor},
            result,
        )


def _fire(
    s: Session,
    org_id: str,
    scope: str,
    scope_id: str,
    kind: AlertKind,
    period: str,
    spent: int,
    threshold: int,
    details: dict[str, Any],
    result: AlertResult,
) -> None:
    exists = s.exec(
        select(BudgetAlert.id).where(
            BudgetAlert.scope_id == scope_id, BudgetAlert.kind == kind.value, BudgetAlert.period == period
        )
    ).first()
    if exists is not None:
        return
    alert = BudgetAlert(
        org_id=org_id,
        scope=scope,
        scope_id=scope_id,
        kind=kind.value,
        period=period,
        spent_picousd=spent,
        threshold_picousd=threshold,
        details=details,
    )
    try:
        with s.begin_nested():
            s.add(alert)
    except IntegrityError:  # another runner fired it in the meantime
        return
    result.fired.append(f"{org_id}:{scope}:{scope_id}:{kind.value}:{period}")


def _recipients(s: Session, org_id: str) -> list[str]:
    return list(
        s.exec(
            select(User.email)
            .join(Membership, col(Membership.user_id) == col(User.id))
            .where(Membership.org_id == org_id, col(Membership.role).in_([Role.owner.value, Role.admin.value]))
            .order_by(col(User.email))
        ).all()
    )


def _scope_label(s: Session, alert: BudgetAlert) -> str:
    if alert.scope == "environment":
        env = s.get(Environment, alert.scope_id)
        return f"environment '{env.name}'" if env else "an environment"
    if alert.scope == "key":
        key = s.get(ApiKey, alert.scope_id)
        return f"API key '{key.name}' ({key.prefix}…)" if key else "an API key"
    return "the organization"


def message(s: Session, alert: BudgetAlert, settings: Settings) -> tuple[str, str]:
    org = s.get(Org, alert.org_id)
    name = org.name if org else alert.org_id
    where = _scope_label(s, alert)
    spent = f"${usd(alert.spent_picousd):,.2f}"
    link = f"{settings.dashboard_url}/billing"
    if alert.kind == AlertKind.spike.value:
        subject = f"[CrossLogic] Unusual spend in {name}"
        body = (
            f"{name} spent {spent} in the last 24 hours, more than {alert.details.get('factor', 10)}× its "
            f"daily average of ${Decimal(str(alert.details.get('daily_average_usd', '0'))):,.2f}.\n\n"
            f"If this is not expected, check your API keys and usage: {settings.dashboard_url}/usage\n"
        )
    else:
        pct = "100%" if alert.kind == AlertKind.budget_100.value else "80%"
        budget = f"${Decimal(str(alert.details.get('budget_usd', '0'))):,.2f}"
        subject = f"[CrossLogic] {name}: {pct} of the monthly budget of {where} used"
        body = (
            f"{where[0].upper() + where[1:]} of {name} has spent {spent} this month, {pct} of its {budget} budget.\n"
            + (
                "Requests are now refused with insufficient_quota until the budget is raised or the month ends.\n"
                if pct == "100%"
                else "At 100% its requests will be refused until the budget is raised or the month ends.\n"
            )
            + f"\nBudgets and spend: {link}\n"
        )
    return subject, body


def _notify_pending(engine: Engine, settings: Settings, sender: EmailSender, result: AlertResult) -> None:
    with Session(engine) as s:
        pending = s.exec(select(BudgetAlert).where(col(BudgetAlert.notified_at).is_(None))).all()
        for alert in pending:
            to = _recipients(s, alert.org_id)
            subject, body = message(s, alert, settings)
            try:
                if to:
                    sender.send(to=to, subject=subject, text=body)
                alert.notified_at = utcnow()
                alert.notify_error = None
                result.notified += 1
            except NotificationError as exc:
                alert.notify_error = exc.message[:1000]
                result.notify_failed += 1
                log.warning("budget alert %s not mailed: %s", alert.id, exc.message)
            s.add(alert)
            s.commit()
