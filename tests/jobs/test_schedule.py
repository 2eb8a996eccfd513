"""Periods: interval slots aligned to the epoch, cron slots = the last fire time at or before now."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from jobs.schedule import EPOCH, cron_trigger, describe, interval_trigger, period_start

NOW = datetime(2026, 11, 28, 15, 7, 31, 250_000, tzinfo=UTC)  # a Saturday


@pytest.mark.parametrize(
    ("every", "expected"),
    [
        (timedelta(minutes=1), datetime(2026, 11, 28, 15, 7, tzinfo=UTC)),
        (timedelta(seconds=5), datetime(2026, 11, 28, 15, 7, 30, tzinfo=UTC)),
        (timedelta(seconds=30), datetime(2026, 11, 28, 15, 7, 30, tzinfo=UTC)),
        (timedelta(hours=1), datetime(2026, 11, 28, 15, tzinfo=UTC)),
        (timedelta(days=1), datetime(2026, 11, 28, tzinfo=UTC)),
    ],
)
def test_interval_period(every: timedelta, expected: datetime) -> None:
    assert period_start(every, None, NOW) == expected


def test_interval_period_boundaries_and_alignment() -> None:
    every = timedelta(seconds=7)  # does not divide a day: slots still line up on every instance
    start = period_start(every, None, NOW)
    assert (start - EPOCH) % every == timedelta(0)
    assert start <= NOW < start + every
    assert period_start(every, None, start) == start  # a slot contains its own start
    assert period_start(every, None, start - timedelta(microseconds=1)) == start - every
    # The scheduler fires at exactly these instants.
    trigger = interval_trigger(every)
    assert trigger.get_next_fire_time(None, NOW) == start + every


def test_period_is_the_same_in_any_timezone() -> None:
    from zoneinfo import ZoneInfo

    local = NOW.astimezone(ZoneInfo("America/New_York"))
    assert period_start(timedelta(days=1), None, local) == datetime(2026, 11, 28, tzinfo=UTC)
    with pytest.raises(ValueError, match="timezone-aware"):
        period_start(timedelta(days=1), None, NOW.replace(tzinfo=None))


@pytest.mark.parametrize(
    ("cron", "expected"),
    [
        ("*/15 * * * *", datetime(2026, 11, 28, 15, 0, tzinfo=UTC)),
        ("7 * * * *", datetime(2026, 11, 28, 15, 7, tzinfo=UTC)),
        ("8 * * * *", datetime(2026, 11, 28, 14, 8, tzinfo=UTC)),
        ("5 0 * * *", datetime(2026, 11, 28, 0, 5, tzinfo=UTC)),
        ("0 0 1 * *", datetime(2026, 11, 1, tzinfo=UTC)),
        ("0 0 * * 0", datetime(2026, 11, 22, tzinfo=UTC)),  # crontab's 0 is Sunday (APScheduler's is Monday)
        ("0 0 * * 7", datetime(2026, 11, 22, tzinfo=UTC)),
        ("0 0 * * 1", datetime(2026, 11, 23, tzinfo=UTC)),  # Monday
        ("30 9 * * 1-5", datetime(2026, 11, 27, 9, 30, tzinfo=UTC)),  # Friday
        ("0 12 * * 5-7", datetime(2026, 11, 28, 12, tzinfo=UTC)),  # Friday to Sunday: today, Saturday
        ("0 0 * * sun", datetime(2026, 11, 22, tzinfo=UTC)),
        ("0 0 29 2 *", datetime(2024, 2, 29, tzinfo=UTC)),
        ("0 0 1 1 *", datetime(2026, 1, 1, tzinfo=UTC)),
    ],
)
def test_cron_period(cron: str, expected: datetime) -> None:
    assert period_start(None, cron, NOW) == expected


def test_cron_period_on_a_fire_time_is_that_fire_time() -> None:
    fire = datetime(2026, 11, 28, 15, 0, tzinfo=UTC)
    assert period_start(None, "*/15 * * * *", fire) == fire
    assert period_start(None, "*/15 * * * *", fire - timedelta(microseconds=1)) == fire - timedelta(minutes=15)


@pytest.mark.parametrize(
    ("cron", "message"),
    [
        ("* * * *", "5 fields"),
        ("0 * * * * *", "5 fields"),
        ("0 0 1 * 1", "both day of month and day of week"),
        ("61 * * * *", "maximum value"),
        ("0 0 * * 8", "day of week"),
        ("0 0 * * 5-2", "range"),
        ("0 0 31 2 *", "never fires"),
    ],
)
def test_bad_cron(cron: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        cron_trigger(cron)


def test_describe() -> None:
    assert describe(timedelta(seconds=5), None) == "every 5s"
    assert describe(timedelta(hours=1, minutes=30), None) == "every 1h30m"
    assert describe(timedelta(days=1), None) == "every 1d"
    assert describe(None, "17 * * * *") == "cron 17 * * * * (UTC)"
