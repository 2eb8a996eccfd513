"""Pricing rules as pure functions over integer pico-dollars (10⁻¹² USD). No floats, no I/O.

A month's usage is priced in the order it is accrued, each token at its position in the month:
1. **free allowance** — the first N tokens of the month (100K on the free plan) cost nothing;
2. **volume discount** — graduated: tokens 0–10M at list price, 10M–100M 10 % off, 100M–1B 20 % off,
   beyond 1B 30 % off (each token at the band it falls in, like a graduated tier);
3. **credits** — what is left is paid from credits, promotional ones first (soonest to expire first),
   then prepaid ones (oldest first);
4. what remains is **pay-as-you-go**, reported to Stripe.

Shares of an amount (the allowance's part of a line, a band's discount) are rounded down to the
pico-dollar, so a line never discounts more than it costs and sums stay exact integers.
"""

from __future__ import annotations

import calendar
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from fractions import Fraction

from cic.models import Plan

PICO_PER_MICRO = 1_000_000
PICO_PER_USD = 10**12

# (first token of the band, discount in percent)
VOLUME_TIERS: tuple[tuple[int, int], ...] = (
    (0, 0),
    (10_000_000, 10),
    (100_000_000, 20),
    (1_000_000_000, 30),
)

FREE_ALLOWANCE_TOKENS: dict[str, int] = {Plan.free.value: 100_000}


def allowance_tokens(plan: str) -> int:
    return FREE_ALLOWANCE_TOKENS.get(plan, 0)


@dataclass(frozen=True, slots=True)
class PricedUsage:
    gross: int
    allowance: int
    discount: int

    @property
    def net(self) -> int:
        return self.gross - self.allowance - self.discount


def price_usage(*, gross: int, tokens: int, month_tokens_before: int, allowance: int) -> PricedUsage:
    """Price ``tokens`` costing ``gross`` at list price, placed after ``month_tokens_before`` tokens of
    the month, for a plan whose monthly allowance is ``allowance`` tokens."""
    if tokens <= 0 or gross <= 0:
        return PricedUsage(gross, 0, 0)
    start, end = month_tokens_before, month_tokens_before + tokens
    free = max(0, min(end, allowance) - start)
    free_share = Fraction(gross * free, tokens)
    discount = Fraction(0)
    for i, (lo, pct) in enumerate(VOLUME_TIERS):
        if pct == 0:
            continue
        hi = VOLUME_TIERS[i + 1][0] if i + 1 < len(VOLUME_TIERS) else end
        overlap = min(end, hi) - max(start + free, lo)
        if overlap > 0:
            discount += Fraction(gross * overlap * pct, tokens * 100)
    return PricedUsage(gross, int(free_share), int(discount))


def tier_percent(month_tokens: int) -> int:
    """The discount band the next token of the month falls in."""
    pct = 0
    for lo, p in VOLUME_TIERS:
        if month_tokens >= lo:
            pct = p
    return pct


@dataclass(frozen=True, slots=True)
class CreditBalance:
    grant_id: str
    promotional: bool
    remaining: int  # pico-dollars
    expires_at: datetime | None
    created_at: datetime


def credit_order(balances: Sequence[CreditBalance]) -> list[CreditBalance]:
    """Promotional credits first, soonest-expiring first; then prepaid, oldest first."""
    far = datetime.max.replace(tzinfo=None)

    def key(b: CreditBalance) -> tuple[int, datetime, datetime, str]:
        exp = b.expires_at.replace(tzinfo=None) if b.expires_at else far
        return (0 if b.promotional else 1, exp, b.created_at.replace(tzinfo=None), b.grant_id)

    return sorted(balances, key=key)


def usable(b: CreditBalance, at: datetime) -> bool:
    return b.remaining > 0 and (b.expires_at is None or b.expires_at > at)


def apply_credits(amount: int, balances: Sequence[CreditBalance], at: datetime) -> list[tuple[str, int]]:
    """How much of ``amount`` each credit pays, in order. Returns (grant id, pico-dollars) pairs."""
    out: list[tuple[str, int]] = []
    left = amount
    for b in credit_order(balances):
        if left <= 0:
            break
        if not usable(b, at):
            continue
        take = min(left, b.remaining)
        out.append((b.grant_id, take))
        left -= take
    return out


def hours_in_month(t: datetime) -> int:
    return calendar.monthrange(t.year, t.month)[1] * 24


def reserved_hour_charge(*, tokens_per_s: int, micros_per_tps_month: int, hour: datetime) -> int:
    """The charge for one hour of reserved capacity, in pico-dollars. Hour ``i`` of an ``H``-hour month
    is ``⌊T·(i+1)/H⌋ − ⌊T·i/H⌋`` of the month's total ``T``, so a whole month adds up to ``T`` exactly."""
    total = tokens_per_s * micros_per_tps_month * PICO_PER_MICRO
    h = hours_in_month(hour)
    i = (hour.day - 1) * 24 + hour.hour
    return total * (i + 1) // h - total * i // h


def usd(pico: int) -> Decimal:
    """Pico-dollars as an exact USD amount (12 decimal places)."""
    return (Decimal(pico) / PICO_PER_USD).quantize(Decimal("0.000000000001"))


def month_of(t: datetime) -> str:
    return f"{t.year:04d}-{t.month:02d}"
