"""Billing of an org: the month's summary, statements, credits, alerts, Stripe Checkout and portal."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Literal

from fastapi import APIRouter, status
from pydantic import BaseModel, Field
from sqlmodel import col, select

from api.deps import ActorDep, AdminDep, SessionDep, SettingsDep
from cic.billing import credits, payments, statements
from cic.billing.pricing import usd
from cic.errors import ValidationFailed
from cic.models import BudgetAlert
from cic.models.billing import CreditKind
from cic.services.authz import authorize_org
from cic.settings import Settings

router = APIRouter(prefix="/orgs/{org}", tags=["billing"])


@router.get("/billing", response_model=statements.BillingSummary)
def billing_summary(org: str, actor: ActorDep, session: SessionDep, settings: SettingsDep) -> statements.BillingSummary:
    """This month so far: spend at list price, forecast, allowance, discounts, credits, amount due, budget,
    savings against OpenAI's list prices, and the Stripe standing."""
    return statements.summary(session, actor, org, settings)


class CheckoutCreate(BaseModel):
    mode: Literal["subscription", "credits"] = Field(
        description="subscription: save a payment method for pay-as-you-go; credits: buy prepaid credits"
    )
    amount_usd: Decimal | None = Field(default=None, description="credits to buy (5 to 10,000 USD)")
    success_url: str | None = None
    cancel_url: str | None = None


class RedirectUrl(BaseModel):
    url: str


def _own_url(url: str | None, settings: Settings, param: str) -> str | None:
    """Stripe sends the customer back here: only to our own dashboard or API."""
    if url is None:
        return None
    if not any(
        url == base or url.startswith(base + "/") for base in (settings.dashboard_url, settings.public_base_url)
    ):
        raise ValidationFailed(f"{param} must be a page of this platform ({settings.dashboard_url}/…).", param=param)
    return url


@router.post("/billing/checkout", response_model=RedirectUrl)
def start_checkout(
    org: str, body: CheckoutCreate, actor: ActorDep, session: SessionDep, settings: SettingsDep
) -> RedirectUrl:
    """A Stripe Checkout page to add a payment method or buy credits (owners and admins)."""
    url = payments.checkout(
        session,
        actor,
        org,
        settings,
        mode=body.mode,
        amount_usd=body.amount_usd,
        success_url=_own_url(body.success_url, settings, "success_url"),
        cancel_url=_own_url(body.cancel_url, settings, "cancel_url"),
    )
    session.commit()
    return RedirectUrl(url=url)


class PortalCreate(BaseModel):
    return_url: str | None = None


@router.post("/billing/portal", response_model=RedirectUrl)
def open_portal(
    org: str, actor: ActorDep, session: SessionDep, settings: SettingsDep, body: PortalCreate | None = None
) -> RedirectUrl:
    """Stripe's billing portal: payment methods, invoices (owners and admins)."""
    return_url = _own_url(body.return_url if body else None, settings, "return_url")
    return RedirectUrl(url=payments.portal(session, actor, org, settings, return_url))


@router.get("/billing/statements", response_model=list[statements.StatementSummary])
def list_statements(org: str, actor: ActorDep, session: SessionDep) -> list[statements.StatementSummary]:
    return statements.list_statements(session, actor, org)


@router.get("/billing/statements/{month}", response_model=statements.Statement)
def get_statement(org: str, month: str, actor: ActorDep, session: SessionDep) -> statements.Statement:
    """Usage by environment, model and region, reserved capacity, allowance, discounts, credits and the
    amount due for one month (YYYY-MM)."""
    return statements.statement(session, actor, org, month)


@router.get("/credits", response_model=list[credits.CreditPublic])
def list_credits(org: str, actor: ActorDep, session: SessionDep) -> list[credits.CreditPublic]:
    """Credit grants with what is left of each."""
    return credits.list_credits(session, actor, org)


class CreditGrantCreate(BaseModel):
    amount_usd: Decimal = Field(gt=0)
    kind: Literal["promotional", "prepaid"] = "promotional"
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)
    note: str = Field(default="", max_length=500)


@router.post("/credits", status_code=status.HTTP_201_CREATED, response_model=credits.CreditPublic)
def grant_credit(org: str, body: CreditGrantCreate, actor: AdminDep, session: SessionDep) -> credits.CreditPublic:
    """Grant credits (platform operators)."""
    g = credits.grant(
        session,
        actor,
        org,
        amount_usd=body.amount_usd,
        kind=CreditKind(body.kind),
        expires_in_days=body.expires_in_days,
        note=body.note,
    )
    session.commit()
    return next(c for c in credits.list_credits(session, actor, org) if c.id == g.id)


class AlertPublic(BaseModel):
    id: str
    scope: str
    scope_id: str
    kind: str
    period: str
    spent_usd: str
    threshold_usd: str
    created_at: datetime
    notified_at: datetime | None


@router.get("/billing/alerts", response_model=list[AlertPublic])
def list_alerts(org: str, actor: ActorDep, session: SessionDep, limit: int = 50) -> list[AlertPublic]:
    """Budget and spike alerts, newest first."""
    row, _ = authorize_org(session, actor, org)
    alerts = session.exec(
        select(BudgetAlert)
        .where(BudgetAlert.org_id == row.id)
        .order_by(col(BudgetAlert.created_at).desc())
        .limit(max(1, min(limit, 200)))
    ).all()
    return [
        AlertPublic(
            id=a.id,
            scope=a.scope,
            scope_id=a.scope_id,
            kind=a.kind,
            period=a.period,
            spent_usd=format(usd(a.spent_picousd), "f"),
            threshold_usd=format(usd(a.threshold_picousd), "f"),
            created_at=a.created_at,
            notified_at=a.notified_at,
        )
        for a in alerts
    ]
