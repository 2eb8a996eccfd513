"""Limits: the plans' defaults and the rule that an environment or key can only narrow its org's."""

from __future__ import annotations

from dataclasses import dataclass

from cic.errors import ValidationFailed
from cic.models import Plan

FIELDS = ("rpm", "tpm", "tpd", "max_concurrency", "monthly_budget_cents")


@dataclass(frozen=True, slots=True)
class Limits:
    rpm: int | None = None
    tpm: int | None = None
    tpd: int | None = None
    max_concurrency: int | None = None
    monthly_budget_cents: int | None = None  # a spend cap for the calendar month (UTC)

    @classmethod
    def of(cls, row: object) -> Limits:
        """The limits set on a row (an org, environment or key) or any object with these attributes."""
        return cls(*(getattr(row, f, None) for f in FIELDS))

    def narrowed_by(self, other: Limits) -> Limits:
        """Each limit the tighter of the two (None = no limit)."""
        return Limits(*(_min(getattr(self, f), getattr(other, f)) for f in FIELDS))

    @property
    def empty(self) -> bool:
        return all(getattr(self, f) is None for f in FIELDS)


def _min(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


# From the seeds: free 60 req/min and 100K tokens/day; developer 600 req/min and 10M tokens/day;
# business 6,000 req/min and 100M tokens/day; enterprise is set per contract (org overrides).
PLAN_LIMITS: dict[str, Limits] = {
    Plan.free.value: Limits(rpm=60, tpd=100_000),
    Plan.developer.value: Limits(rpm=600, tpd=10_000_000),
    Plan.business.value: Limits(rpm=6_000, tpd=100_000_000),
    Plan.enterprise.value: Limits(),
}


def org_limits(plan: str, overrides: Limits) -> Limits:
    """An org's limits: its own overrides where set, else its plan's."""
    base = PLAN_LIMITS.get(plan, Limits())
    return Limits(*(getattr(overrides, f) if getattr(overrides, f) is not None else getattr(base, f) for f in FIELDS))


def check_narrows(parent: Limits, child: Limits, parent_name: str, child_name: str) -> None:
    """Refuse a child limit wider than its parent's (a key above its environment, say)."""
    for f in FIELDS:
        p, c = getattr(parent, f), getattr(child, f)
        if p is not None and c is not None and c > p:
            raise ValidationFailed(
                f"The {child_name}'s {f} ({c}) cannot exceed the {parent_name}'s ({p}); limits can only narrow.",
                param=f,
                code="limit_exceeds_parent",
            )
