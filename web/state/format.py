"""Display formatting for API values (dates, money, counts): the pages show strings ready to read."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any


def when(value: Any, empty: str = "—") -> str:
    """An ISO timestamp from the API as 'Nov 28, 2026 14:05' (UTC)."""
    if not value:
        return empty
    try:
        dt = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return str(value)
    if dt.tzinfo is not None:
        dt = dt.astimezone(UTC)
    return dt.strftime("%b %-d, %Y %H:%M")


def day(value: Any, empty: str = "—") -> str:
    if not value:
        return empty
    try:
        return datetime.fromisoformat(str(value)).strftime("%b %-d, %Y")
    except ValueError:
        return str(value)


def usd(value: Any, places: int = 2) -> str:
    """Exact decimal strings (``"12.345600000000"``) or floats as '$12.35'; small amounts keep precision."""
    if value is None or value == "":
        return "—"
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        return str(value)
    if amount != 0 and abs(amount) < Decimal("0.0001"):
        return "<$0.0001" if amount > 0 else "-<$0.0001"
    if amount != 0 and abs(amount) < Decimal("0.01"):
        return f"${amount:.4f}".replace("$-", "-$")
    return f"${amount:,.{places}f}".replace("$-", "-$")


def count(value: Any) -> str:
    if value is None:
        return "—"
    n = int(value)
    if n >= 1_000_000_000:
        return f"{n / 1e9:.2f}B"
    if n >= 1_000_000:
        return f"{n / 1e6:.2f}M"
    if n >= 10_000:
        return f"{n / 1e3:.1f}K"
    return f"{n:,}"


def limit(value: Any) -> str:
    return "inherit" if value in (None, "") else f"{int(value):,}"
