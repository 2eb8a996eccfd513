"""The Stripe export: ledger lines → meter events, through an outbox, exactly once.

For each subscribed org, the ledger lines not yet exported are batched per (statement month, hour);
a batch becomes up to three ``stripe_exports`` rows — one per meter (``amount_due`` in µ$,
``input_tokens``, ``output_tokens``) — written as *pending* in the same transaction that marks the
lines, then sent, then marked *sent*. Each event's ``identifier`` is deterministic
(``cic-<org>-<YYYYMMDDHH>-<meter>-<n>``): a run that crashed between Stripe's answer and our record
re-sends the same identifier, which Stripe de-duplicates, so nothing is billed twice or lost.

Money: a month's ``amount_due`` events add up to ⌊Σ due / 1 µ$⌋ of the month's exported lines — the
fractions below a micro-dollar carry to the next event of the month and are waived at its end.
Event timestamps are the usage hour (or the start of the statement month for usage of a closed month
billed later), never older than Stripe's 35-day limit allows.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import stripe
from sqlalchemy import func, update
from sqlalchemy import select as sa_select
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from cic.billing import locks, payments
from cic.billing.pricing import PICO_PER_MICRO
from cic.billing.statements import parse_month
from cic.models import BillingAccount, BillingAccrual, StripeExport
from cic.models.billing import BillingStatus, ExportStatus
from cic.models.types import new_id, utcnow
from cic.settings import Settings

log = logging.getLogger(__name__)

MAX_EVENT_AGE = timedelta(days=34)  # Stripe takes timestamps up to 35 days old
EXPORTING = (BillingStatus.active.value, BillingStatus.past_due.value, BillingStatus.canceled.value)


@dataclass
class ExportResult:
    orgs: int = 0
    batches: int = 0
    sent: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "orgs": self.orgs,
            "batches": self.batches,
            "sent": self.sent,
            "failed": self.failed,
            "errors": self.errors[:10],
        }


def run(engine: Engine, settings: Settings, *, now: datetime | None = None) -> ExportResult:
    result = ExportResult()
    if not settings.billing_enabled:
        return result
    gw = payments.StripeGateway(settings)
    now = now or utcnow()
    with locks.advisory_lock(engine, locks.EXPORT):
        with Session(engine) as s:
            names = {m.key: m.event_name for m in payments.METERS}
            payments.require(s, "meter:amount_due")
            accounts = s.exec(
                select(BillingAccount).where(
                    col(BillingAccount.stripe_customer_id).is_not(None),
                    col(BillingAccount.status).in_(EXPORTING),
                )
            ).all()
        for acct in accounts:
            with Session(engine) as s, s.begin():
                result.batches += batch(s, acct, names, now)
            sent, error = send_pending(engine, gw, acct.org_id)
            result.orgs += 1
            result.sent += sent
            if error:
                result.failed += 1
                result.errors.append(f"{acct.org_id}: {error}")
    return result


def batch(session: Session, acct: BillingAccount, event_names: dict[str, str], now: datetime) -> int:
    """Turn the org's unexported ledger lines into pending export rows. Returns the number of batches."""
    assert acct.stripe_customer_id is not None
    a = BillingAccrual
    first_month = f"{acct.subscribed_at:%Y-%m}" if acct.subscribed_at else "0000-00"
    lines = session.exec(
        select(BillingAccrual)
        .where(a.org_id == acct.org_id, col(a.export_id).is_(None), col(a.month) >= first_month)
        .order_by(col(a.month), col(a.hour), col(a.id))
    ).all()
    groups: dict[tuple[str, datetime], list[BillingAccrual]] = defaultdict(list)
    for line in lines:
        groups[(line.month, line.hour)].append(line)
    done_due: dict[str, int] = {}
    done_micros: dict[str, int] = {}
    for (month, hour), members in groups.items():
        if month not in done_due:
            done_due[month], done_micros[month] = _exported_so_far(session, acct.org_id, month)
        batch_id = new_id("xb")
        due = sum(x.due_picousd for x in members)
        micros = (done_due[month] + due) // PICO_PER_MICRO - done_micros[month]
        values = {
            "amount_due": micros,
            "input_tokens": sum(x.prompt_tokens for x in members),
            "output_tokens": sum(x.completion_tokens for x in members),
        }
        start, _ = parse_month(month)
        ts = max(hour, start, now - MAX_EVENT_AGE)
        for meter, value in values.items():
            if value <= 0:
                continue  # nothing to report (a correction below zero carries in the month's sums)
            seq = session.exec(
                select(func.count())
                .select_from(StripeExport)
                .where(StripeExport.org_id == acct.org_id, StripeExport.hour == hour, StripeExport.meter == meter)
            ).one()
            session.add(
                StripeExport(
                    batch_id=batch_id,
                    org_id=acct.org_id,
                    stripe_customer_id=acct.stripe_customer_id,
                    meter=meter,
                    event_name=event_names[meter],
                    identifier=f"cic-{acct.org_id}-{hour:%Y%m%d%H}-{meter}-{seq}",
                    hour=hour,
                    event_timestamp=ts,
                    value=value,
                )
            )
        session.exec(
            update(BillingAccrual).where(col(BillingAccrual.id).in_([x.id for x in members])).values(export_id=batch_id)
        )
        session.flush()
        done_due[month] += due
        done_micros[month] += max(0, micros)
    return len(groups)


def _exported_so_far(session: Session, org_id: str, month: str) -> tuple[int, int]:
    """(due pico-dollars of the month's exported lines, µ$ of the month's amount_due events)."""
    start, end = parse_month(month)
    a = BillingAccrual
    due = session.execute(
        sa_select(func.coalesce(func.sum(a.due_picousd), 0)).where(
            col(a.org_id) == org_id, col(a.month) == month, col(a.export_id).is_not(None)
        )
    ).scalar_one()
    e = StripeExport
    micros = session.execute(
        sa_select(func.coalesce(func.sum(e.value), 0)).where(
            col(e.org_id) == org_id,
            col(e.meter) == "amount_due",
            col(e.event_timestamp) >= start,
            col(e.event_timestamp) < end,
        )
    ).scalar_one()
    return int(due), int(micros)


def send_pending(engine: Engine, gw: payments.StripeGateway, org_id: str) -> tuple[int, str | None]:
    """Send the org's pending events in order; stop at the first failure (the next run retries it)."""
    with Session(engine) as s:
        pending = s.exec(
            select(StripeExport)
            .where(StripeExport.org_id == org_id, StripeExport.status == ExportStatus.pending.value)
            .order_by(col(StripeExport.created_at), col(StripeExport.identifier))
        ).all()
    sent = 0
    for ev in pending:
        error = _send_one(gw, ev)
        with Session(engine) as s, s.begin():
            row = s.get(StripeExport, ev.id)
            assert row is not None
            row.attempts += 1
            if error is None:
                row.status = ExportStatus.sent.value
                row.sent_at = utcnow()
                row.last_error = None
            else:
                row.last_error = error[:1000]
            s.add(row)
        if error is not None:
            return sent, error
        sent += 1
    return sent, None


def _send_one(gw: payments.StripeGateway, ev: StripeExport) -> str | None:
    events: Any = gw.client.v1.billing.meter_events
    params = {
        "event_name": ev.event_name,
        "payload": {"stripe_customer_id": ev.stripe_customer_id, "value": str(ev.value)},
        "identifier": ev.identifier,
        "timestamp": int(ev.event_timestamp.timestamp()),
    }
    try:
        events.create(params, {"idempotency_key": ev.identifier})
    except stripe.InvalidRequestError as exc:
        if _already_recorded(exc):
            return None  # Stripe has this identifier: an earlier attempt got through
        log.error("stripe refused meter event %s: %s", ev.identifier, exc)
        return f"{exc.code or 'invalid_request'}: {exc.user_message or exc}"
    except stripe.StripeError as exc:
        log.warning("meter event %s not confirmed, will retry: %s", ev.identifier, exc)
        return f"{type(exc).__name__}: {exc.user_message or exc}"
    return None


def _already_recorded(exc: stripe.InvalidRequestError) -> bool:
    text = f"{exc.code or ''} {exc.user_message or ''}".lower()
    return "identifier" in text and ("already" in text or "duplicate" in text or "exists" in text)
