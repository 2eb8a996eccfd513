"""Billing: credits, the accrual ledger, statements, Stripe accounts, the export outbox, webhooks, alerts.

Money is integer pico-dollars (``*_picousd``, 10⁻¹² USD) in the ledger — the unit usage costs are
computed in, so ledger sums equal usage sums exactly — and integer micro-dollars (``*_micros``) for
amounts people type (credit grants). Never a float.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, Index, UniqueConstraint
from sqlmodel import Field, SQLModel

from cic.models.base import ID_LEN, BigIntPK
from cic.models.types import UTCDateTime, new_id, utcnow


class CreditKind(StrEnum):
    signup = "signup"  # the sign-up bonus (promotional, expires)
    promotional = "promotional"  # granted by an operator, usually with an expiry
    prepaid = "prepaid"  # bought through Stripe Checkout

    @property
    def promotional_class(self) -> bool:
        return self is not CreditKind.prepaid


class CreditGrant(SQLModel, table=True):
    __tablename__ = "credit_grants"
    __table_args__ = (UniqueConstraint("source_ref"),)

    id: str = Field(default_factory=lambda: new_id("cred"), primary_key=True, max_length=ID_LEN)
    org_id: str = Field(foreign_key="orgs.id", ondelete="CASCADE", index=True, max_length=ID_LEN)
    kind: str = Field(max_length=16)
    amount_micros: int = Field(ge=1, sa_type=BigInteger)
    expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    note: str = Field(default="", max_length=500)
    # What the grant came from (a Checkout session id, "signup:<org>"), unique so a redelivered webhook
    # or a retried command cannot grant twice.
    source_ref: str | None = Field(default=None, max_length=255)
    created_by: str | None = Field(default=None, max_length=ID_LEN)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class BillingStatus(StrEnum):
    none = "none"  # no Stripe customer yet
    incomplete = "incomplete"  # customer made, checkout not finished
    active = "active"
    past_due = "past_due"
    canceled = "canceled"


class BillingAccount(SQLModel, table=True):
    """An org's Stripe side: its customer, the metered subscription, and payment standing."""

    __tablename__ = "billing_accounts"

    org_id: str = Field(foreign_key="orgs.id", ondelete="CASCADE", primary_key=True, max_length=ID_LEN)
    stripe_customer_id: str | None = Field(default=None, max_length=255, unique=True)
    stripe_subscription_id: str | None = Field(default=None, max_length=255)
    status: str = Field(default=BillingStatus.none.value, max_length=16)
    past_due_since: datetime | None = Field(default=None, sa_type=UTCDateTime)
    subscribed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class AccrualKind(StrEnum):
    usage = "usage"
    reserved = "reserved"


class BillingAccrual(SQLModel, table=True):
    """One priced line of the append-only billing ledger.

    The accrual job compares each closed hour's roll-ups with what is already accrued and writes the
    difference as a new line, priced once — free allowance, volume discount and credits applied in
    that order — and never rewritten. A statement is the sum of its month's lines.
    """

    __tablename__ = "billing_accruals"
    __table_args__ = (
        Index("ix_billing_accruals_org_id_month", "org_id", "month"),
        Index("ix_billing_accruals_org_id_hour", "org_id", "hour"),
        Index("ix_billing_accruals_export_id", "export_id"),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=BigIntPK)
    org_id: str = Field(max_length=ID_LEN)
    month: str = Field(max_length=7, description="YYYY-MM of the statement the line belongs to")
    hour: datetime = Field(sa_type=UTCDateTime, description="the usage hour it prices")
    kind: str = Field(max_length=16)
    environment_id: str | None = Field(default=None, max_length=ID_LEN)
    model_id: str = Field(max_length=64)
    region_code: str = Field(default="", max_length=32)
    requests: int = Field(default=0, sa_type=BigInteger)
    prompt_tokens: int = Field(default=0, sa_type=BigInteger)
    completion_tokens: int = Field(default=0, sa_type=BigInteger)
    cached_tokens: int = Field(default=0, sa_type=BigInteger)
    tokens_per_s: int | None = Field(default=None, description="reserved capacity priced (kind=reserved)")
    gross_picousd: int = Field(default=0, sa_type=BigInteger)
    allowance_picousd: int = Field(default=0, sa_type=BigInteger)
    discount_picousd: int = Field(default=0, sa_type=BigInteger)
    credits_picousd: int = Field(default=0, sa_type=BigInteger)
    due_picousd: int = Field(default=0, sa_type=BigInteger)
    export_id: str | None = Field(default=None, max_length=ID_LEN, description="the Stripe export batch")
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class CreditApplication(SQLModel, table=True):
    __tablename__ = "credit_applications"

    id: int | None = Field(default=None, primary_key=True, sa_type=BigIntPK)
    accrual_id: int = Field(foreign_key="billing_accruals.id", ondelete="CASCADE", index=True, sa_type=BigInteger)
    grant_id: str = Field(foreign_key="credit_grants.id", ondelete="CASCADE", index=True, max_length=ID_LEN)
    amount_picousd: int = Field(ge=1, sa_type=BigInteger)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class StatementStatus(StrEnum):
    open = "open"
    closed = "closed"


class BillingStatement(SQLModel, table=True):
    """A month is closed once it has ended and settled; later usage of that month bills in the next."""

    __tablename__ = "billing_statements"
    __table_args__ = (UniqueConstraint("org_id", "month"),)

    id: int | None = Field(default=None, primary_key=True, sa_type=BigIntPK)
    org_id: str = Field(foreign_key="orgs.id", ondelete="CASCADE", max_length=ID_LEN)
    month: str = Field(max_length=7)
    status: str = Field(default=StatementStatus.open.value, max_length=16)
    gross_picousd: int = Field(default=0, sa_type=BigInteger)
    allowance_picousd: int = Field(default=0, sa_type=BigInteger)
    discount_picousd: int = Field(default=0, sa_type=BigInteger)
    credits_picousd: int = Field(default=0, sa_type=BigInteger)
    due_picousd: int = Field(default=0, sa_type=BigInteger)
    closed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class ExportStatus(StrEnum):
    pending = "pending"
    sent = "sent"


class StripeExport(SQLModel, table=True):
    """The outbox of meter events: written (pending) before sending, marked sent after. A run that
    crashed in between re-sends the same ``identifier``, which Stripe de-duplicates."""

    __tablename__ = "stripe_exports"
    __table_args__ = (Index("ix_stripe_exports_org_id_status", "org_id", "status"),)

    id: str = Field(default_factory=lambda: new_id("exp"), primary_key=True, max_length=ID_LEN)
    batch_id: str = Field(max_length=ID_LEN, index=True)
    org_id: str = Field(max_length=ID_LEN)
    stripe_customer_id: str = Field(max_length=255)
    meter: str = Field(max_length=32, description="amount_due, input_tokens, output_tokens")
    event_name: str = Field(max_length=100)
    identifier: str = Field(max_length=100, unique=True)
    hour: datetime = Field(sa_type=UTCDateTime)
    event_timestamp: datetime = Field(sa_type=UTCDateTime)
    value: int = Field(ge=1, sa_type=BigInteger)
    status: str = Field(default=ExportStatus.pending.value, max_length=16)
    attempts: int = Field(default=0)
    last_error: str | None = Field(default=None, max_length=1000)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    sent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class StripeObject(SQLModel, table=True):
    """The platform's own Stripe objects (meters, product, prices), made once by ``cic billing setup``."""

    __tablename__ = "stripe_objects"

    key: str = Field(primary_key=True, max_length=64, description="e.g. meter:amount_due, price:amount_due")
    stripe_id: str = Field(max_length=255)
    livemode: bool = Field(default=False)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class StripeEvent(SQLModel, table=True):
    """Webhook events already processed (Stripe delivers at least once)."""

    __tablename__ = "stripe_events"

    id: str = Field(primary_key=True, max_length=255)
    type: str = Field(max_length=100)
    org_id: str | None = Field(default=None, max_length=ID_LEN)
    received_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class AlertKind(StrEnum):
    budget_80 = "budget_80"
    budget_100 = "budget_100"
    spike = "spike"


class BudgetAlert(SQLModel, table=True):
    """An alert fires once per scope, kind and period (the month for budgets, the day for spikes)."""

    __tablename__ = "budget_alerts"
    __table_args__ = (UniqueConstraint("scope_id", "kind", "period"),)

    id: str = Field(default_factory=lambda: new_id("alrt"), primary_key=True, max_length=ID_LEN)
    org_id: str = Field(foreign_key="orgs.id", ondelete="CASCADE", index=True, max_length=ID_LEN)
    scope: str = Field(max_length=16, description="org, environment or key")
    scope_id: str = Field(max_length=ID_LEN)
    kind: str = Field(max_length=16)
    period: str = Field(max_length=10, description="YYYY-MM or YYYY-MM-DD")
    spent_picousd: int = Field(default=0, sa_type=BigInteger)
    threshold_picousd: int = Field(default=0, sa_type=BigInteger)
    details: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    notified_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    notify_error: str | None = Field(default=None, max_length=1000)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
