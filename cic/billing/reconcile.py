"""Reconciliation for one month, per org: usage records = roll-ups = ledger = exported (= Stripe).

* **records = roll-ups**: requests, prompt and completion tokens and cost of the raw records created
  in the month equal the month's hourly rows and its daily rows.
* **roll-ups = ledger**: for every hour already priced, the ledger's usage lines add up to the hourly
  roll-ups (tokens and list cost).
* **ledger = exported**: tokens of exported lines equal the token meters' events; the ``amount_due``
  events of the month equal ⌊Σ due of its exported lines / 1 µ$⌋.
* **exported = Stripe** (billing on): Stripe's meter event summaries for the customer over the month
  equal the events we sent.

What is merely not done yet (the current hour, lines waiting for the next export) is reported as
pending, not as a mismatch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func
from sqlalchemy import select as sa_select
from sqlalchemy.engine import Engine
from sqlmodel import Session, col

from cic.billing import payments
from cic.billing.pricing import PICO_PER_MICRO, usd
from cic.billing.statements import parse_month, priced_through
from cic.models import BillingAccount, BillingAccrual, Org, StripeExport, UsageDaily, UsageHourly, UsageRecord
from cic.models.billing import AccrualKind, ExportStatus
from cic.settings import Settings


@dataclass(frozen=True)
class Totals:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_picousd: int = 0


@dataclass
class OrgReconciliation:
    org_id: str
    org_slug: str
    records: Totals
    hourly: Totals
    daily: Totals
    priced_rollups: Totals
    ledger: Totals
    exported: dict[str, int] = field(default_factory=dict)
    expected_export: dict[str, int] = field(default_factory=dict)
    pending_export: dict[str, int] = field(default_factory=dict)
    stripe: dict[str, int] | None = None
    mismatches: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ok"] = self.ok
        for k in ("records", "hourly", "daily", "priced_rollups", "ledger"):
            out[k]["cost_usd"] = str(usd(out[k]["cost_picousd"]))
        return out


def _totals(row: Any) -> Totals:
    return Totals(*(int(v or 0) for v in row))


def reconcile(engine: Engine, settings: Settings, month: str, *, stripe_check: bool = True) -> list[OrgReconciliation]:
    start, end = parse_month(month)
    gw = payments.StripeGateway(settings) if settings.billing_enabled and stripe_check else None
    out: list[OrgReconciliation] = []
    with Session(engine) as s:
        through = priced_through(s)
        priced_end = min(end, through) if through else start
        r, h, d, a = UsageRecord, UsageHourly, UsageDaily, BillingAccrual
        org_ids = set(
            s.execute(
                sa_select(col(r.org_id)).distinct().where(col(r.created_at) >= start, col(r.created_at) < end)
            ).scalars()
        ) | set(s.execute(sa_select(col(a.org_id)).distinct().where(col(a.hour) >= start, col(a.hour) < end)).scalars())
        for org_id in sorted(org_ids):
            org = s.get(Org, org_id)
            rec = OrgReconciliation(
                org_id=org_id,
                org_slug=org.slug if org else "?",
                records=_totals(
                    s.execute(
                        sa_select(
                            func.count(),
                            func.sum(r.prompt_tokens),
                            func.sum(r.completion_tokens),
                            func.sum(r.cost_picousd),
                        ).where(col(r.org_id) == org_id, col(r.created_at) >= start, col(r.created_at) < end)
                    ).one()
                ),
                hourly=_sum(s, h, org_id, col(h.hour) >= start, col(h.hour) < end),
                daily=_sum(s, d, org_id, col(d.day) >= start.date(), col(d.day) < end.date()),
                priced_rollups=_sum(s, h, org_id, col(h.hour) >= start, col(h.hour) < priced_end),
                ledger=_totals(
                    s.execute(
                        sa_select(
                            func.sum(a.requests),
                            func.sum(a.prompt_tokens),
                            func.sum(a.completion_tokens),
                            func.sum(a.gross_picousd),
                        ).where(
                            col(a.org_id) == org_id,
                            col(a.kind) == AccrualKind.usage.value,
                            col(a.hour) >= start,
                            col(a.hour) < priced_end,
                        )
                    ).one()
                ),
            )
            if rec.records != rec.hourly:
                rec.mismatches.append(f"usage records {rec.records} != hourly roll-ups {rec.hourly}")
            if rec.hourly != rec.daily:
                rec.mismatches.append(f"hourly roll-ups {rec.hourly} != daily roll-ups {rec.daily}")
            if rec.priced_rollups != rec.ledger:
                rec.mismatches.append(f"roll-ups of priced hours {rec.priced_rollups} != ledger {rec.ledger}")
            _exports(s, rec, month, start, end)
            if gw is not None:
                _stripe(s, gw, rec, start, end)
            out.append(rec)
    return out


def _sum(s: Session, table: Any, org_id: str, *where: Any) -> Totals:
    return _totals(
        s.execute(
            sa_select(
                func.sum(table.requests),
                func.sum(table.prompt_tokens),
                func.sum(table.completion_tokens),
                func.sum(table.cost_picousd),
            ).where(table.org_id == org_id, *where)
        ).one()
    )


def _exports(s: Session, rec: OrgReconciliation, month: str, start: datetime, end: datetime) -> None:
    a, e = BillingAccrual, StripeExport
    tokens = s.execute(
        sa_select(func.sum(a.prompt_tokens), func.sum(a.completion_tokens)).where(
            col(a.org_id) == rec.org_id, col(a.hour) >= start, col(a.hour) < end, col(a.export_id).is_not(None)
        )
    ).one()
    due = s.execute(
        sa_select(func.sum(a.due_picousd)).where(
            col(a.org_id) == rec.org_id, col(a.month) == month, col(a.export_id).is_not(None)
        )
    ).scalar_one()
    rec.expected_export = {
        "input_tokens": int(tokens[0] or 0),
        "output_tokens": int(tokens[1] or 0),
        "amount_due": max(0, int(due or 0)) // PICO_PER_MICRO,
    }
    for meter, status, value in s.execute(
        sa_select(col(e.meter), col(e.status), func.sum(e.value))
        .where(
            col(e.org_id) == rec.org_id,
            col(e.hour) >= start,
            col(e.hour) < end,
        )
        .group_by(col(e.meter), col(e.status))
    ):
        target = rec.exported if status == ExportStatus.sent.value else rec.pending_export
        target[meter] = target.get(meter, 0) + int(value)
    # amount_due events are counted by statement month (their timestamps lie in it)
    amount = s.execute(
        sa_select(func.sum(e.value)).where(
            col(e.org_id) == rec.org_id,
            col(e.meter) == "amount_due",
            col(e.event_timestamp) >= start,
            col(e.event_timestamp) < end,
        )
    ).scalar_one()
    sent_or_pending = {
        m: rec.exported.get(m, 0) + rec.pending_export.get(m, 0) for m in ("input_tokens", "output_tokens")
    }
    sent_or_pending["amount_due"] = int(amount or 0)
    for meter, expected in rec.expected_export.items():
        if sent_or_pending.get(meter, 0) != expected:
            rec.mismatches.append(f"exported {meter} {sent_or_pending.get(meter, 0)} != ledger's {expected}")


def _stripe(s: Session, gw: payments.StripeGateway, rec: OrgReconciliation, start: datetime, end: datetime) -> None:
    acct = s.get(BillingAccount, rec.org_id)
    if acct is None or not acct.stripe_customer_id:
        return
    rec.stripe = {}
    e = StripeExport
    summaries: Any = gw.client.v1.billing.meters.event_summaries
    params = {
        "customer": acct.stripe_customer_id,
        "start_time": int(start.timestamp()),
        "end_time": int(end.timestamp()),
    }
    for meter in payments.METERS:
        meter_id = payments.stored(s, f"meter:{meter.key}")
        if meter_id is None:
            continue
        page = _summaries(gw, summaries, meter_id, params)
        held = int(sum(float(x.aggregated_value) for x in page.auto_paging_iter()))
        rec.stripe[meter.key] = held
        sent = s.execute(
            sa_select(func.coalesce(func.sum(e.value), 0)).where(
                col(e.org_id) == rec.org_id,
                col(e.meter) == meter.key,
                col(e.status) == ExportStatus.sent.value,
                col(e.event_timestamp) >= start,
                col(e.event_timestamp) < end,
            )
        ).scalar_one()
        if held != int(sent):
            rec.mismatches.append(f"Stripe holds {held} {meter.key} for the month, we sent {int(sent)}")


def _summaries(gw: payments.StripeGateway, service: Any, meter_id: str, params: dict[str, Any]) -> Any:
    return gw.call("read meter event summaries", lambda: service.list(meter_id, params))
