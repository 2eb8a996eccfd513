"""Closed hours' roll-ups → the append-only billing ledger (``billing_accruals``).

An hour is priced once it has ended and settled (``CIC_BILLING_SETTLE_S``). For every (org, hour) with
usage, the ledger's lines are compared with the hour's roll-ups per environment × model × region; any
difference — all of it the first time, the late records of a spool replay afterwards — becomes a new
line, priced at the org's position in the month (allowance, volume band) and paid from its credits.
Nothing already written changes, so a line exported to Stripe stays true; running twice adds nothing.

Reserved capacity is accrued the same way, one line per reservation and hour.

Months close ``CIC_BILLING_CLOSE_AFTER_H`` after they end: the statement's totals are frozen and any
later usage of a closed month is billed in the month it is found in.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func
from sqlalchemy import select as sa_select
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from cic.billing import locks, pricing
from cic.billing.rollup import HOUR, floor_hour
from cic.models import (
    BillingAccrual,
    BillingStatement,
    CreditApplication,
    CreditGrant,
    Org,
    Reservation,
    RollupCursor,
    UsageHourly,
)
from cic.models.billing import AccrualKind, CreditKind, StatementStatus
from cic.models.types import utcnow
from cic.services import catalog
from cic.settings import Settings

log = logging.getLogger(__name__)

CLOSED_CURSOR = "billing:closed_through"
UPDATES_CURSOR = "billing:hourly_updates"
MARGIN = timedelta(minutes=5)

LineKey = tuple[str | None, str, str]  # environment, model, region
_SUMS = ("requests", "prompt_tokens", "completion_tokens", "cached_tokens", "gross_picousd")


@dataclass
class AccrualResult:
    orgs: int = 0
    lines: int = 0
    gross_picousd: int = 0
    due_picousd: int = 0
    closed_through: datetime | None = None
    months_closed: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "orgs": self.orgs,
            "lines": self.lines,
            "gross_usd": str(pricing.usd(self.gross_picousd)),
            "due_usd": str(pricing.usd(self.due_picousd)),
            "closed_through": self.closed_through.isoformat() if self.closed_through else None,
            "months_closed": self.months_closed,
        }


def run(engine: Engine, settings: Settings, *, now: datetime | None = None) -> AccrualResult:
    now = now or utcnow()
    closed_before = floor_hour(now - timedelta(seconds=settings.billing_settle_s))
    result = AccrualResult()
    with locks.advisory_lock(engine, locks.ACCRUAL):
        with Session(engine) as s:
            start = _cursor(s, CLOSED_CURSOR) or _first_hour(s) or closed_before
            upd = _cursor(s, UPDATES_CURSOR)
            work: dict[str, set[datetime]] = defaultdict(set)
            q = select(UsageHourly.org_id, UsageHourly.hour).distinct()
            for org_id, hour in s.execute(
                q.where(col(UsageHourly.hour) >= start, col(UsageHourly.hour) < closed_before)
            ):
                work[org_id].add(hour)
            if upd is not None:  # late records folded into hours already priced
                late = q.where(col(UsageHourly.hour) < start, col(UsageHourly.updated_at) >= upd - MARGIN)
                for org_id, hour in s.execute(late):
                    work[org_id].add(hour)
            upd_high = s.execute(
                select(func.max(UsageHourly.updated_at)).where(col(UsageHourly.hour) < closed_before)
            ).scalar_one()
            reserved_orgs = set(s.execute(select(Reservation.org_id).distinct()).scalars())
        for org_id in sorted(set(work) | reserved_orgs):
            with Session(engine) as s, s.begin():
                org = s.get(Org, org_id)
                if org is None:
                    continue
                ledger = _OrgLedger(s, org, now)
                for hour in sorted(work.get(org_id, ())):
                    ledger.accrue_usage_hour(hour)
                if org_id in reserved_orgs:
                    ledger.accrue_reserved(start, closed_before)
            if ledger.lines:
                result.orgs += 1
                result.lines += ledger.lines
                result.gross_picousd += ledger.gross
                result.due_picousd += ledger.due
        with Session(engine) as s, s.begin():
            if closed_before > start:
                _set_cursor(s, CLOSED_CURSOR, closed_before)
            if upd_high is not None:
                _set_cursor(s, UPDATES_CURSOR, _aware(upd_high))
            result.months_closed = close_months(s, now, settings)
        result.closed_through = max(start, closed_before)
    return result


class _OrgLedger:
    """One org's pricing state while its new lines are written (inside one transaction)."""

    def __init__(self, session: Session, org: Org, now: datetime) -> None:
        self.s = session
        self.org = org
        self.now = now
        self.current_month = pricing.month_of(now)
        self.allowance = pricing.allowance_tokens(org.plan)
        self.closed = set(
            session.exec(
                select(BillingStatement.month).where(
                    BillingStatement.org_id == org.id, BillingStatement.status == StatementStatus.closed.value
                )
            ).all()
        )
        self._month_tokens: dict[str, int] = {}
        self.balances = credit_balances(session, org.id)
        self.lines = 0
        self.gross = 0
        self.due = 0

    def month_for(self, hour: datetime) -> str:
        m = pricing.month_of(hour)
        return self.current_month if m in self.closed else m

    def month_tokens(self, month: str) -> int:
        if month not in self._month_tokens:
            self._month_tokens[month] = int(
                self.s.execute(
                    select(
                        func.coalesce(func.sum(BillingAccrual.prompt_tokens + BillingAccrual.completion_tokens), 0)
                    ).where(
                        BillingAccrual.org_id == self.org.id,
                        BillingAccrual.month == month,
                        BillingAccrual.kind == AccrualKind.usage.value,
                    )
                ).scalar_one()
            )
        return self._month_tokens[month]

    def accrue_usage_hour(self, hour: datetime) -> None:
        h = UsageHourly
        target = self._sums(
            sa_select(
                col(h.environment_id),
                col(h.model_id),
                col(h.region_code),
                func.sum(h.requests),
                func.sum(h.prompt_tokens),
                func.sum(h.completion_tokens),
                func.sum(h.cached_tokens),
                func.sum(h.cost_picousd),
            )
            .where(col(h.org_id) == self.org.id, col(h.hour) == hour)
            .group_by(col(h.environment_id), col(h.model_id), col(h.region_code))
        )
        a = BillingAccrual
        accrued = self._sums(
            sa_select(
                col(a.environment_id),
                col(a.model_id),
                col(a.region_code),
                func.sum(a.requests),
                func.sum(a.prompt_tokens),
                func.sum(a.completion_tokens),
                func.sum(a.cached_tokens),
                func.sum(a.gross_picousd),
            )
            .where(col(a.org_id) == self.org.id, col(a.hour) == hour, col(a.kind) == AccrualKind.usage.value)
            .group_by(col(a.environment_id), col(a.model_id), col(a.region_code))
        )
        for key in sorted(set(target) | set(accrued), key=lambda k: (k[0] or "", k[1], k[2])):
            t, d = target.get(key, (0,) * 5), accrued.get(key, (0,) * 5)
            delta = tuple(x - y for x, y in zip(t, d, strict=True))
            if any(delta):
                self._write_usage(hour, key, delta)

    def _sums(self, q: Any) -> dict[LineKey, tuple[int, ...]]:
        return {(r[0], r[1], r[2]): tuple(int(v or 0) for v in r[3:]) for r in self.s.execute(q)}

    def _write_usage(self, hour: datetime, key: LineKey, delta: tuple[int, ...]) -> None:
        requests, prompt, completion, cached, gross = delta
        if min(delta) < 0:
            # Roll-ups only grow (records are never deleted); a shrink means data was changed by hand.
            log.error(
                "usage shrank after it was billed; writing a correcting line",
                extra={"org_id": self.org.id, "hour": hour.isoformat(), "line": key, "delta": delta},
            )
        month = self.month_for(hour)
        before = self.month_tokens(month)
        tokens = prompt + completion
        priced = pricing.price_usage(gross=gross, tokens=tokens, month_tokens_before=before, allowance=self.allowance)
        self._month_tokens[month] = before + tokens
        self._insert(
            BillingAccrual(
                org_id=self.org.id,
                month=month,
                hour=hour,
                kind=AccrualKind.usage.value,
                environment_id=key[0],
                model_id=key[1],
                region_code=key[2],
                requests=requests,
                prompt_tokens=prompt,
                completion_tokens=completion,
                cached_tokens=cached,
                gross_picousd=gross,
                allowance_picousd=priced.allowance,
                discount_picousd=priced.discount,
            ),
            priced.net,
            hour,
        )

    def accrue_reserved(self, start: datetime, end: datetime) -> None:
        reservations = self.s.exec(select(Reservation).where(Reservation.org_id == self.org.id)).all()
        if not reservations:
            return
        a = BillingAccrual
        done: dict[tuple[datetime, str, str], int] = {}
        for hour, model, region, gross in self.s.execute(
            select(a.hour, a.model_id, a.region_code, func.sum(a.gross_picousd))
            .where(
                a.org_id == self.org.id,
                a.kind == AccrualKind.reserved.value,
                col(a.hour) >= start,
                col(a.hour) < end,
            )
            .group_by(col(a.hour), col(a.model_id), col(a.region_code))
        ):
            done[(_aware(hour), model, region)] = int(gross)
        for r in sorted(reservations, key=lambda r: (r.model_id, r.region_code)):
            hour = max(start, floor_hour(r.created_at))
            while hour < end:
                price = catalog.prices_in_force(self.s, r.model_id, hour).get(r.region_code)
                charge = (
                    pricing.reserved_hour_charge(
                        tokens_per_s=r.tokens_per_s, micros_per_tps_month=price.reserved_tps_month_micros, hour=hour
                    )
                    if price is not None
                    else 0
                )
                delta = charge - done.get((hour, r.model_id, r.region_code), 0)
                if delta:
                    self._insert(
                        BillingAccrual(
                            org_id=self.org.id,
                            month=self.month_for(hour),
                            hour=hour,
                            kind=AccrualKind.reserved.value,
                            model_id=r.model_id,
                            region_code=r.region_code,
                            tokens_per_s=r.tokens_per_s,
                            gross_picousd=delta,
                        ),
                        delta,
                        hour,
                    )
                hour += HOUR

    def _insert(self, line: BillingAccrual, net: int, hour: datetime) -> None:
        paid = pricing.apply_credits(net, self.balances, hour) if net > 0 else []
        credits = sum(p for _, p in paid)
        line.credits_picousd = credits
        line.due_picousd = net - credits
        line.created_at = utcnow()
        self.s.add(line)
        self.s.flush()
        assert line.id is not None
        for grant_id, amount in paid:
            self.s.add(CreditApplication(accrual_id=line.id, grant_id=grant_id, amount_picousd=amount))
        if paid:
            taken = dict(paid)
            self.balances = [
                pricing.CreditBalance(
                    b.grant_id, b.promotional, b.remaining - taken.get(b.grant_id, 0), b.expires_at, b.created_at
                )
                for b in self.balances
            ]
        self.lines += 1
        self.gross += line.gross_picousd
        self.due += line.due_picousd


def credit_balances(session: Session, org_id: str) -> list[pricing.CreditBalance]:
    used = dict(
        session.execute(
            select(CreditApplication.grant_id, func.sum(CreditApplication.amount_picousd))
            .join(CreditGrant, col(CreditGrant.id) == col(CreditApplication.grant_id))
            .where(CreditGrant.org_id == org_id)
            .group_by(CreditApplication.grant_id)
        ).all()
    )
    return [
        pricing.CreditBalance(
            grant_id=g.id,
            promotional=CreditKind(g.kind).promotional_class,
            remaining=g.amount_micros * pricing.PICO_PER_MICRO - int(used.get(g.id) or 0),
            expires_at=g.expires_at,
            created_at=g.created_at,
        )
        for g in session.exec(select(CreditGrant).where(CreditGrant.org_id == org_id)).all()
    ]


def close_months(session: Session, now: datetime, settings: Settings) -> list[str]:
    """Freeze the statements of months that ended more than ``billing_close_after_h`` ago."""
    closed: list[str] = []
    a = BillingAccrual
    for org_id, month in session.execute(
        select(a.org_id, a.month).distinct().where(col(a.month) < pricing.month_of(now))
    ).all():
        y, m = (int(x) for x in month.split("-"))
        ends = datetime(y + (m == 12), m % 12 + 1, 1, tzinfo=UTC)
        if now < ends + timedelta(hours=settings.billing_close_after_h):
            continue
        st = session.exec(
            select(BillingStatement).where(BillingStatement.org_id == org_id, BillingStatement.month == month)
        ).first()
        if st is not None and st.status == StatementStatus.closed.value:
            continue
        totals = session.execute(
            sa_select(
                func.sum(a.gross_picousd),
                func.sum(a.allowance_picousd),
                func.sum(a.discount_picousd),
                func.sum(a.credits_picousd),
                func.sum(a.due_picousd),
            ).where(col(a.org_id) == org_id, col(a.month) == month)
        ).one()
        st = st or BillingStatement(org_id=org_id, month=month)
        st.gross_picousd, st.allowance_picousd, st.discount_picousd, st.credits_picousd, st.due_picousd = (
            int(v or 0) for v in totals
        )
        st.status = StatementStatus.closed.value
        st.closed_at = now
        session.add(st)
        closed.append(f"{org_id}:{month}")
    return closed


def _first_hour(session: Session) -> datetime | None:
    first = session.execute(select(func.min(UsageHourly.hour))).scalar_one()
    first_r = session.execute(select(func.min(Reservation.created_at))).scalar_one()
    candidates = [floor_hour(_aware(t)) for t in (first, first_r) if t is not None]
    return min(candidates) if candidates else None


def _cursor(session: Session, name: str) -> datetime | None:
    row = session.get(RollupCursor, name)
    return row.position if row else None


def _set_cursor(session: Session, name: str, position: datetime) -> None:
    row = session.get(RollupCursor, name) or RollupCursor(name=name, position=position)
    row.position = position
    row.updated_at = utcnow()
    session.add(row)


def _aware(t: Any) -> datetime:
    if isinstance(t, str):
        t = datetime.fromisoformat(t)
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)
