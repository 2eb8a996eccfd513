"""Pricing rules as pure functions: allowance, graduated volume discount, credits order, reserved hours."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cic.billing import pricing
from cic.billing.pricing import CreditBalance, apply_credits, price_usage, reserved_hour_charge

M = 10**6
NOW = datetime(2026, 11, 15, tzinfo=UTC)


def test_allowance_covers_the_first_tokens_of_the_month_pro_rata() -> None:
    inside = price_usage(gross=1_000, tokens=50_000, month_tokens_before=0, allowance=100_000)
    assert (inside.allowance, inside.discount, inside.net) == (1_000, 0, 0)
    across = price_usage(gross=1_000, tokens=100, month_tokens_before=99_950, allowance=100_000)
    assert (across.allowance, across.net) == (500, 500)
    after = price_usage(gross=1_000, tokens=100, month_tokens_before=100_000, allowance=100_000)
    assert after.allowance == 0 and after.net == 1_000


def test_graduated_volume_discount() -> None:
    below = price_usage(gross=7_000, tokens=1_000, month_tokens_before=5 * M, allowance=0)
    assert below.discount == 0
    # Half the tokens below 10M (0 %), half above (10 %): 5 % of the line.
    straddle = price_usage(gross=10_000, tokens=1_000, month_tokens_before=10 * M - 500, allowance=0)
    assert straddle.discount == 500
    assert price_usage(gross=10_000, tokens=1_000, month_tokens_before=150 * M, allowance=0).discount == 2_000
    assert price_usage(gross=10_000, tokens=1_000, month_tokens_before=2_000 * M, allowance=0).discount == 3_000
    # One line spanning every band: 0 % on 10M, 10 % on 90M, 20 % on 900M, 30 % on the last 1B.
    whole = price_usage(gross=2_000 * M * 10, tokens=2_000 * M, month_tokens_before=0, allowance=0)
    assert whole.discount == (90 * M * 10 * 10 + 900 * M * 10 * 20 + 1_000 * M * 10 * 30) // 100
    assert pricing.tier_percent(10 * M - 1) == 0 and pricing.tier_percent(10 * M) == 10


def test_shares_round_down_and_never_exceed_the_line() -> None:
    for gross, tokens, before in [(1, 3, 99_999), (7, 3, 10 * M - 1), (10**15 + 7, 123_457, 99_000)]:
        p = price_usage(gross=gross, tokens=tokens, month_tokens_before=before, allowance=100_000)
        assert 0 <= p.allowance + p.discount <= gross and p.net >= 0


def test_credits_promotional_soonest_expiry_first_then_prepaid_oldest_first() -> None:
    t = NOW - timedelta(days=30)
    balances = [
        CreditBalance("prepaid-old", False, 500, None, t),
        CreditBalance("prepaid-new", False, 500, None, t + timedelta(days=1)),
        CreditBalance("promo-late", True, 300, NOW + timedelta(days=60), t),
        CreditBalance("promo-soon", True, 200, NOW + timedelta(days=5), t + timedelta(days=2)),
        CreditBalance("promo-expired", True, 999, NOW - timedelta(days=1), t),
    ]
    assert apply_credits(1_200, balances, NOW) == [
        ("promo-soon", 200),
        ("promo-late", 300),
        ("prepaid-old", 500),
        ("prepaid-new", 200),
    ]
    assert apply_credits(50, balances, NOW) == [("promo-soon", 50)]
    # Usage from before an expiry is still paid by that credit.
    assert apply_credits(100, balances, NOW - timedelta(days=2))[0] == ("promo-expired", 100)


def test_reserved_hours_add_up_to_the_month_exactly() -> None:
    for month in (datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC)):
        hours = pricing.hours_in_month(month)
        total = sum(
            reserved_hour_charge(tokens_per_s=7, micros_per_tps_month=518_400, hour=month + timedelta(hours=i))
            for i in range(hours)
        )
        assert total == 7 * 518_400 * pricing.PICO_PER_MICRO
