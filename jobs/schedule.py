"""Schedules: fixed intervals aligned to the Unix epoch, or 5-field crontab strings in UTC.

A *period* is the schedule slot containing an instant: for ``every=1 min`` the minute, for a cron
schedule the last fire time at or before it. Every instance computes the same period from the same
instant, which is what lets ``job_runs`` record one run per (job, period).

Crontab semantics are the standard ones (day of week 0 or 7 = Sunday), not APScheduler 3's (where
0 = Monday): ``cron_trigger`` rewrites the day-of-week field into names before handing it over. A
schedule that restricts both day of month and day of week is refused, because crontab ORs the two
and APScheduler ANDs them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from apscheduler.triggers.base import BaseTrigger  # type: ignore[import-untyped]
from apscheduler.triggers.cron import CronTrigger  # type: ignore[import-untyped]
from apscheduler.triggers.interval import IntervalTrigger  # type: ignore[import-untyped]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_LOOKBACK_LIMIT = timedelta(days=366 * 9)  # "29 February on a Monday" recurs within 28 years; 9 covers leap days


def _dow_number(token: str) -> int:
    """0-7 (0 and 7 are Sunday) from a number or a name."""
    token = token.strip().lower()
    if token in _DAY_NAMES:
        return _DAY_NAMES.index(token)
    if not token.isdigit() or int(token) > 7:
        raise ValueError(f"bad day of week {token!r} (0-7 or sun-sat)")
    return int(token)


def _crontab_days_of_week(field: str) -> str:
    """A crontab day-of-week field (0/7 = Sunday, ranges, steps, names) as APScheduler day names."""
    if field == "*":
        return "*"
    days: set[int] = set()
    for part in field.split(","):
        base, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if step < 1:
            raise ValueError(f"bad step in day of week {part!r}")
        if base == "*":
            first, last = 0, 6
        elif "-" in base:
            lo, hi = base.split("-", 1)
            first, last = _dow_number(lo), _dow_number(hi)  # "5-7" is Friday to Sunday
            if last < first:
                raise ValueError(f"bad day-of-week range {base!r}")
        else:
            first = _dow_number(base)
            last = 6 if step_text else first  # "1/2": from Monday on, every other day
        days.update(d % 7 for d in range(first, last + 1, step))
    return ",".join(_DAY_NAMES[d] for d in sorted(days))


def cron_trigger(expr: str) -> CronTrigger:
    """An APScheduler trigger for a 5-field crontab string (minute hour day month day-of-week), UTC."""
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(f"cron schedule {expr!r} must have 5 fields: minute hour day month day-of-week")
    minute, hour, day, month, dow = fields
    if day != "*" and dow != "*":
        raise ValueError(
            f"cron schedule {expr!r} restricts both day of month and day of week; crontab would run on either, "
            "so say which one (use two jobs for both)"
        )
    trigger = CronTrigger(
        minute=minute, hour=hour, day=day, month=month, day_of_week=_crontab_days_of_week(dow), timezone=UTC
    )
    if trigger.get_next_fire_time(None, datetime.now(UTC)) is None:
        raise ValueError(f"cron schedule {expr!r} never fires")
    return trigger


def interval_trigger(every: timedelta) -> IntervalTrigger:
    """Fires at ``EPOCH + k·every``: the start of each period, the same instants on every instance."""
    return IntervalTrigger(seconds=every.total_seconds(), start_date=EPOCH, timezone=UTC)


def trigger_for(every: timedelta | None, cron: str | None) -> BaseTrigger:
    if every is not None:
        return interval_trigger(every)
    if cron is not None:
        return cron_trigger(cron)
    raise ValueError("a schedule needs every or cron")


def period_start(every: timedelta | None, cron: str | None, now: datetime) -> datetime:
    """The start of the schedule slot containing ``now`` (tz-aware)."""
    if now.tzinfo is None:
        raise ValueError("period_start needs a timezone-aware datetime")
    now = now.astimezone(UTC)
    if every is not None:
        return EPOCH + ((now - EPOCH) // every) * every
    if cron is not None:
        return last_fire_time(cron_trigger(cron), now)
    raise ValueError("a schedule needs every or cron")


def last_fire_time(trigger: CronTrigger, now: datetime) -> datetime:
    """The latest fire time ≤ ``now``: look back over a doubling window, then walk forward."""
    window = timedelta(minutes=1)
    while window <= _LOOKBACK_LIMIT:
        current = trigger.get_next_fire_time(None, now - window)
        if current is not None and current <= now:
            while True:
                following = trigger.get_next_fire_time(current, current + timedelta(seconds=1))
                if following is None or following > now:
                    return current
                current = following
        window *= 2
    raise ValueError(f"{trigger} has not fired in the last {_LOOKBACK_LIMIT.days} days")


def describe(every: timedelta | None, cron: str | None) -> str:
    """``every 5s`` / ``every 1h30m`` / ``cron 5 * * * * (UTC)``."""
    if cron is not None:
        return f"cron {cron} (UTC)"
    assert every is not None
    total = every.total_seconds()
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if total >= size:
            parts.append(f"{int(total // size)}{unit}")
            total %= size
    if total or not parts:
        parts.append(f"{total:g}s")
    return "every " + "".join(parts)
