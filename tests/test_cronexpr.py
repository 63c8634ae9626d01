"""Tests for psabill.cronexpr: the host-time cron expression and its plan.

The policy (``cronexpr.py``'s docstring): the installed expression contains
every occurrence's host wall time; day-of-month and day-of-week are never both
restricted; an occurrence whose host wall time falls on the *second* pass of
the host's repeated hour cannot fire at its minute under Debian cron, so it is
listed in ``plan().late`` and fires at most three hours late.

The independent Debian-cron engine is :class:`cronsim.CronSim` started with an
aware datetime in the host zone: for fixed-time jobs it runs skipped times
right after a spring-forward change and repeated times on the first pass only,
as Debian's cron does.

Transition comments read "02:00 BST -> 01:00 GMT at 01:00Z": at 01:00 UTC the
host's wall clock went from 02:00 (BST) back to 01:00 (GMT).
"""

from __future__ import annotations

import bisect
import io
import struct
from datetime import date, datetime, timedelta
from typing import Dict, List, Optional, Tuple
from zoneinfo import ZoneInfo

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from psabill.schedule.cronplan import HORIZON, MAX_LATENESS, CronPlan, expression, is_second_pass, plan
from psabill.schedule.rules import MODES, Schedule
from support.zones import TWO_YEARS, UTC, ZONES, nows, occurrences_between, schedules, utc

try:  # cronsim >= 2.7 needs Python 3.10 at import time
    from cronsim import CronSim
except Exception:  # pragma: no cover - only on old interpreters
    CronSim = None

needs_cronsim = pytest.mark.skipif(CronSim is None, reason="cronsim is not importable on this Python")

def make(mode: str, hour: int, zone: str, **kw: object) -> Schedule:
    return Schedule(mode=mode, hour=hour, zone=ZoneInfo(zone), **kw)  # type: ignore[arg-type]


def cron_firings(expr: str, host: ZoneInfo, start: datetime, end: datetime) -> List[datetime]:
    """Every instant in [start, end] at which Debian cron (per cronsim) runs ``expr``."""
    assert CronSim is not None
    out: List[datetime] = []
    # CronSim yields firings strictly after its start, so begin a day early.
    for firing in CronSim(expr, (start - timedelta(days=1)).astimezone(host)):
        instant = firing.astimezone(UTC)
        if instant > end:
            break
        if instant >= start:
            out.append(instant)
    assert out == sorted(out)
    return out


def first_firing_at_or_after(firings: List[datetime], instant: datetime) -> Optional[datetime]:
    index = bisect.bisect_left(firings, instant)
    return firings[index] if index < len(firings) else None


def late_map(p: CronPlan) -> Dict[datetime, datetime]:
    return {entry.occurrence: entry.fires_at for entry in p.late}


def four_hour_shift_zone() -> ZoneInfo:
    """A synthetic host zone whose fall-back repeats 01:00-05:00 (four hours).

    TZif v2 with no transitions and the POSIX rule
    ``XST0XDT-4,M3.5.0/1,M10.5.0/5``: UTC+4 from the last Sunday of March
    01:00 to the last Sunday of October 05:00 local, when the clock goes back
    to 01:00 (2024-10-27 01:00Z).
    """

    def block() -> bytes:
        counts = struct.pack(">6l", 0, 0, 0, 0, 1, 4)  # isut, isstd, leap, time, type, char
        return b"TZif2" + b"\0" * 15 + counts + struct.pack(">lBB", 0, 0, 0) + b"XST\0"

    data = block() + block() + b"\nXST0XDT-4,M3.5.0/1,M10.5.0/5\n"
    return ZoneInfo.from_file(io.BytesIO(data), key="Test/FourHourShift")


# ---------------------------------------------------------------------------
# The required example and the expression's shape
# ---------------------------------------------------------------------------


class TestRequiredExample:
    def test_weekly_tuesday_9am_new_york_on_a_utc_host(self) -> None:
        # 09:00 EDT is 13:00Z, 09:00 EST is 14:00Z; Tuesday is 2 in cron.
        schedule = make("weekly", 9, "America/New_York", weekday=1)
        assert expression(schedule, ZoneInfo("UTC"), utc("2024-06-01T00:00")) == "0 13,14 * * 2"

    def test_the_shorthand_is_the_plans_expression(self) -> None:
        schedule = make("weekly", 9, "America/New_York", weekday=1)
        host, now = ZoneInfo("UTC"), utc("2024-06-01T00:00")
        assert expression(schedule, host, now) == plan(schedule, host, now).expression


class TestExpressionShape:
    @pytest.mark.parametrize(
        "schedule, host, expected",
        [
            (make("daily", 9, "America/New_York"), "America/New_York", "0 9 * * *"),
            (make("daily", 9, "Asia/Kolkata"), "UTC", "30 3 * * *"),  # +05:30
            (make("daily", 9, "Asia/Kathmandu"), "UTC", "15 3 * * *"),  # +05:45
            (make("daily", 9, "Asia/Kolkata"), "Asia/Kathmandu", "15 9 * * *"),  # :30 account on :45 host
            (make("daily", 9, "America/New_York"), "Asia/Kolkata", "30 18,19 * * *"),
            (make("daily", 9, "Australia/Lord_Howe"), "UTC", "0,30 22 * * *"),  # +11 / +10:30
            (make("daily", 9, "Pacific/Chatham"), "UTC", "15 19,20 * * *"),  # +13:45 / +12:45
            # Monday 09:00 in Auckland is Sunday (cron 0) in UTC.
            (make("weekly", 9, "Pacific/Auckland", weekday=0), "UTC", "0 20,21 * * 0"),
            # Saturday 22:00 in New York is Sunday 02:00/03:00 UTC.
            (make("weekly", 22, "America/New_York", weekday=5), "UTC", "0 2,3 * * 0"),
            # Sunday is weekday 6 in the schedule and 0 in cron.
            (make("weekly", 9, "America/New_York", weekday=6), "UTC", "0 13,14 * * 0"),
            # The last day at 21:00 New York is day 1 at 01:00/02:00 UTC.
            (make("monthly", 21, "America/New_York", day="last"), "UTC", "0 1,2 1 * *"),
            # Day 1 at 09:00 in Auckland is the previous month's last day in UTC.
            (make("monthly", 9, "Pacific/Auckland", day=1), "UTC", "0 20,21 28,29,30,31 * *"),
            (make("monthly", 9, "UTC", day=15), "UTC", "0 9 15 * *"),
            (make("monthly", 9, "UTC", day=31), "UTC", "0 9 28,29,30,31 * *"),
        ],
        ids=[
            "same_zone",
            "half_hour_account",
            "quarter_hour_account",
            "half_hour_account_on_quarter_hour_host",
            "dst_account_on_half_hour_host",
            "lord_howe_account_half_hour_shift",
            "chatham_account",
            "weekly_moves_to_previous_weekday",
            "weekly_saturday_night_becomes_sunday_0",
            "weekly_sunday_is_cron_0",
            "monthly_last_becomes_day_1",
            "monthly_day_1_becomes_month_ends",
            "monthly_plain_day",
            "monthly_day_31_month_ends",
        ],
    )
    def test_expression_table(self, schedule: Schedule, host: str, expected: str) -> None:
        assert expression(schedule, ZoneInfo(host), utc("2024-01-01T00:00")) == expected

    def test_fields_are_sorted_numerically_not_as_text(self) -> None:
        p = CronPlan(frozenset({30, 0}), frozenset({10, 2, 9}), None, frozenset({6, 0}), ())
        assert p.expression == "0,30 2,9,10 * * 0,6"

    @pytest.mark.parametrize(
        "now",
        ["2024-03-01T00:00", "2024-02-29T09:00:01", "2025-06-15T12:00", "2027-12-31T23:59", "2028-03-01T00:00"],
    )
    def test_the_horizon_always_contains_a_feb_29(self, now: str) -> None:
        # Day 31 runs on the 29th only in a leap February; the horizon of four
        # years and a day must reach the next one even from just after the last.
        p = plan(make("monthly", 9, "UTC", day=31), ZoneInfo("UTC"), utc(now))
        assert p.expression == "0 9 28,29,30,31 * *"
        assert HORIZON >= timedelta(days=4 * 365 + 1)

    def test_the_plan_ignores_start_and_saved_at(self) -> None:
        # The expression must cover the schedule's whole later life, so a start
        # far in the future (or a saved_at) must not shrink it.
        bounded = make("weekly", 9, "America/New_York", weekday=1, start=date(2031, 1, 1), saved_at=utc("2031-01-01T00:00"))
        assert expression(bounded, ZoneInfo("UTC"), utc("2024-06-01T00:00")) == "0 13,14 * * 2"


class TestNeverBothRestricted:
    @pytest.mark.parametrize("mode", MODES)
    @pytest.mark.parametrize(
        "account, host",
        [("UTC", "UTC"), ("Pacific/Auckland", "America/Anchorage"), ("America/Santiago", "Europe/London")],
    )
    def test_day_of_month_and_day_of_week_are_never_both_restricted(self, mode: str, account: str, host: str) -> None:
        kw = {"monthly": {"day": 31}, "weekly": {"weekday": 6}, "daily": {}}[mode]
        p = plan(make(mode, 23, account, **kw), ZoneInfo(host), utc("2024-01-01T00:00"))
        minute, hour, dom, month, dow = p.expression.split()
        assert month == "*"
        assert dom == "*" or dow == "*"
        assert (dom != "*") == (mode == "monthly")
        assert (dow != "*") == (mode == "weekly")


class TestMatches:
    def test_matches_uses_cron_weekday_numbers_with_sunday_0(self) -> None:
        p = CronPlan(frozenset({0}), frozenset({9}), None, frozenset({0}), ())
        assert p.matches(datetime(2024, 6, 2, 9, 0))  # a Sunday
        assert not p.matches(datetime(2024, 6, 3, 9, 0))  # a Monday

    def test_matches_checks_minute_hour_and_day_of_month(self) -> None:
        p = CronPlan(frozenset({30}), frozenset({9}), frozenset({15}), None, ())
        assert p.matches(datetime(2024, 6, 15, 9, 30))
        assert not p.matches(datetime(2024, 6, 15, 9, 0))
        assert not p.matches(datetime(2024, 6, 15, 10, 30))
        assert not p.matches(datetime(2024, 6, 16, 9, 30))

    def test_a_star_day_field_matches_any_day(self) -> None:
        p = CronPlan(frozenset({0}), frozenset({0}), None, None, ())
        assert all(p.matches(datetime(2024, 1, 1, 0, 0) + timedelta(days=k)) for k in range(40))


# ---------------------------------------------------------------------------
# is_second_pass
# ---------------------------------------------------------------------------


class TestIsSecondPass:
    @pytest.mark.parametrize(
        "zone, instant, expected",
        [
            # New York 2024-11-03 06:00Z: 02:00 EDT -> 01:00 EST.
            ("America/New_York", "2024-11-03T05:30", False),  # 01:30 EDT, first pass
            ("America/New_York", "2024-11-03T06:00", True),  # 01:00 EST
            ("America/New_York", "2024-11-03T06:59:59", True),  # 01:59:59 EST
            ("America/New_York", "2024-11-03T07:00", False),  # 02:00 EST, happens once
            ("America/New_York", "2024-11-04T06:30", False),  # the next day
            # New York 2024-03-10 07:00Z: 02:00 EST -> 03:00 EDT; nothing repeats.
            ("America/New_York", "2024-03-10T07:00", False),
            ("UTC", "2024-11-03T06:30", False),
            ("Asia/Kolkata", "2024-11-03T06:30", False),
            # London 2024-10-27 01:00Z: 02:00 BST -> 01:00 GMT.
            ("Europe/London", "2024-10-27T00:30", False),
            ("Europe/London", "2024-10-27T01:30", True),
            # Dublin's "negative DST" repeats the same wall hour at the same instant.
            ("Europe/Dublin", "2024-10-27T01:30", True),
            # Sydney 2024-04-06 16:00Z: 03:00 AEDT -> 02:00 AEST.
            ("Australia/Sydney", "2024-04-06T15:30", False),
            ("Australia/Sydney", "2024-04-06T16:30", True),
            # Lord Howe 2024-04-06 15:00Z: 02:00 +11 -> 01:30 +10:30 (30 minutes repeat).
            ("Australia/Lord_Howe", "2024-04-06T14:45", False),  # 01:45 +11
            ("Australia/Lord_Howe", "2024-04-06T15:00", True),  # 01:30 +10:30
            ("Australia/Lord_Howe", "2024-04-06T15:29", True),  # 01:59 +10:30
            ("Australia/Lord_Howe", "2024-04-06T15:30", False),  # 02:00 +10:30
            # Troll 2024-10-27 01:00Z: 03:00 +02 -> 01:00 +00 (two hours repeat).
            ("Antarctica/Troll", "2024-10-27T00:30", False),  # 02:30 +02
            ("Antarctica/Troll", "2024-10-27T01:00", True),
            ("Antarctica/Troll", "2024-10-27T02:59", True),
            ("Antarctica/Troll", "2024-10-27T03:00", False),
            # Santiago 2024-04-07 03:00Z: 00:00 -03 -> Sat 23:00 -04.
            ("America/Santiago", "2024-04-07T03:30", True),
            ("America/Santiago", "2024-04-07T04:00", False),
            # Casablanca (Ramadan) 2024-03-10 02:00Z: 03:00 +01 -> 02:00 +00.
            ("Africa/Casablanca", "2024-03-10T02:15", True),
            # Chatham 2024-04-06 14:00Z: 03:45 +13:45 -> 02:45 +12:45.
            ("Pacific/Chatham", "2024-04-06T14:59", True),
            ("Pacific/Chatham", "2024-04-06T15:00", False),
        ],
    )
    def test_is_second_pass(self, zone: str, instant: str, expected: bool) -> None:
        assert is_second_pass(utc(instant), ZoneInfo(zone)) is expected

    def test_it_accepts_an_aware_local_time_with_fold(self) -> None:
        ny = ZoneInfo("America/New_York")
        assert is_second_pass(datetime(2024, 11, 3, 1, 30, fold=1, tzinfo=ny), ny) is True
        assert is_second_pass(datetime(2024, 11, 3, 1, 30, fold=0, tzinfo=ny), ny) is False

    def test_it_is_relative_to_the_zone_asked_about(self) -> None:
        # 06:30Z is New York's second pass, but Chicago's first pass of 01:30 CDT.
        assert is_second_pass(utc("2024-11-03T06:30"), ZoneInfo("America/New_York")) is True
        assert is_second_pass(utc("2024-11-03T06:30"), ZoneInfo("America/Chicago")) is False

    def test_exactly_one_hour_per_year_is_second_pass_in_new_york_2025(self) -> None:
        ny = ZoneInfo("America/New_York")
        t, count = utc("2025-01-01T00:00"), 0
        while t < utc("2026-01-01T00:00"):
            count += is_second_pass(t, ny)
            t += timedelta(minutes=15)
        assert count == 4  # 06:00, 06:15, 06:30, 06:45Z on 2025-11-02


# ---------------------------------------------------------------------------
# DST tables: host only, account only, both
# ---------------------------------------------------------------------------

NOW = "2024-01-01T00:00"


def row(account, hour, host, expr, occurrence, fires_at, late_count, id):  # type: ignore[no-untyped-def]
    return pytest.param(account, hour, host, expr, occurrence, fires_at, late_count, id=id)


# Daily schedules planned from 2024-01-01. Columns: account zone, hour, host zone,
# expression, one occurrence at a transition (UTC), the instant Debian cron runs it,
# and how many occurrences are late over the four-year horizon (one a year when
# the host repeats the occurrence's hour).
# -- only the host zone changes (the account is UTC) ------------------------
HOST_ONLY_TABLE = [
    row(
        # 2024-10-27 01:00Z: 02:00 BST -> 01:00 GMT. 01:00Z is 01:00 GMT, the second
        # pass: cron runs it at 02:00 GMT.
        "UTC", 1, "Europe/London", "0 1,2 * * *", "2024-10-27T01:00", "2024-10-27T02:00", 4,
        id="fall_back_repeat_host_london",
    ),
    row(
        # 2024-03-31 01:00Z: 01:00 GMT -> 02:00 BST. 01:00Z is 02:00 BST: on time.
        "UTC", 1, "Europe/London", "0 1,2 * * *", "2024-03-31T01:00", "2024-03-31T01:00", 4,
        id="spring_skip_hour_host_london",
    ),
    row(
        # Tzdata's negative DST: 2024-10-27 01:00Z: 02:00 IST -> 01:00 GMT.
        "UTC", 1, "Europe/Dublin", "0 1,2 * * *", "2024-10-27T01:00", "2024-10-27T02:00", 4,
        id="fall_back_repeat_host_dublin",
    ),
    row(
        # 2024-11-03 06:00Z: 02:00 EDT -> 01:00 EST. 06:00Z is 01:00 EST, second pass.
        "UTC", 6, "America/New_York", "0 1,2 * * *", "2024-11-03T06:00", "2024-11-03T07:00", 4,
        id="fall_back_repeat_host_new_york",
    ),
    row(
        # 2024-03-10 07:00Z: 02:00 EST -> 03:00 EDT. 07:00Z is 03:00 EDT, the first
        # instant after the change: on time.
        "UTC", 7, "America/New_York", "0 2,3 * * *", "2024-03-10T07:00", "2024-03-10T07:00", 0,
        id="spring_skip_hour_host_new_york",
    ),
    row(
        # Southern: 2024-04-06 16:00Z: 03:00 AEDT -> 02:00 AEST.
        "UTC", 16, "Australia/Sydney", "0 2,3 * * *", "2024-04-06T16:00", "2024-04-06T17:00", 4,
        id="fall_back_repeat_host_sydney",
    ),
    row(
        # Southern: 2024-10-05 16:00Z: 02:00 AEST -> 03:00 AEDT. 16:00Z is 03:00 AEDT.
        "UTC", 16, "Australia/Sydney", "0 2,3 * * *", "2024-10-05T16:00", "2024-10-05T16:00", 4,
        id="spring_skip_hour_host_sydney",
    ),
    row(
        # Southern: 2024-04-06 14:00Z: 03:00 NZDT -> 02:00 NZST.
        "UTC", 14, "Pacific/Auckland", "0 2,3 * * *", "2024-04-06T14:00", "2024-04-06T15:00", 4,
        id="fall_back_repeat_host_auckland",
    ),
    row(
        # Southern: 2024-09-28 14:00Z: 02:00 NZST -> 03:00 NZDT. 14:00Z is 03:00 NZDT.
        "UTC", 14, "Pacific/Auckland", "0 2,3 * * *", "2024-09-28T14:00", "2024-09-28T14:00", 4,
        id="spring_skip_hour_host_auckland",
    ),
    row(
        # Southern, at midnight: 2024-04-07 03:00Z: Sun 00:00 -03 -> Sat 23:00 -04.
        # 03:00Z is Sat 23:00 -04, second pass; the late firing is Sun 00:00 -04.
        "UTC", 3, "America/Santiago", "0 0,23 * * *", "2024-04-07T03:00", "2024-04-07T04:00", 4,
        id="fall_back_repeat_host_santiago_across_midnight",
    ),
    row(
        # Southern, at midnight: 2024-09-08 04:00Z: Sat 24:00 -04 -> Sun 01:00 -03.
        "UTC", 4, "America/Santiago", "0 0,1 * * *", "2024-09-08T04:00", "2024-09-08T04:00", 0,
        id="spring_skip_midnight_host_santiago",
    ),
    row(
        # :45 host: 2024-04-06 14:00Z: 03:45 +13:45 -> 02:45 +12:45.
        "UTC", 14, "Pacific/Chatham", "45 2,3 * * *", "2024-04-06T14:00", "2024-04-06T15:00", 4,
        id="fall_back_repeat_host_chatham",
    ),
    row(
        # 30-minute repeat: 2024-04-06 15:00Z: 02:00 +11 -> 01:30 +10:30. 15:00Z is 01:30
        # +10:30 (second pass); 15:30Z is 02:00 +10:30, in the product: 30 minutes late.
        "UTC", 15, "Australia/Lord_Howe", "0,30 1,2 * * *", "2024-04-06T15:00", "2024-04-06T15:30", 4,
        id="half_hour_repeat_host_lord_howe",
    ),
    row(
        # Two-hour repeat: 2024-10-27 01:00Z: 03:00 +02 -> 01:00 +00. 01:00Z and 02:00Z are
        # both second passes: it runs at 03:00 +00, two hours late.
        "UTC", 1, "Antarctica/Troll", "0 1,3 * * *", "2024-10-27T01:00", "2024-10-27T03:00", 4,
        id="two_hour_repeat_host_troll",
    ),
    row(
        # Two-hour gap: 2024-03-31 01:00Z: 01:00 +00 -> 03:00 +02. 01:00Z is 03:00 +02.
        "UTC", 1, "Antarctica/Troll", "0 1,3 * * *", "2024-03-31T01:00", "2024-03-31T01:00", 4,
        id="two_hour_gap_host_troll",
    ),
    row(
        # Ramadan: 2024-03-10 02:00Z: 03:00 +01 -> 02:00 +00.
        "UTC", 2, "Africa/Casablanca", "0 2,3 * * *", "2024-03-10T02:00", "2024-03-10T03:00", 4,
        id="fall_back_repeat_host_casablanca_ramadan",
    ),
]

# -- only the account zone changes (the host has no DST) ----------------------
ACCOUNT_ONLY_TABLE = [
    row(
        # 2024-03-10 07:00Z: 02:00 EST -> 03:00 EDT; the skipped 02:00 runs at 07:00Z.
        "America/New_York", 2, "UTC", "0 6,7 * * *", "2024-03-10T07:00", "2024-03-10T07:00", 0,
        id="spring_skip_hour_account_new_york_on_utc",
    ),
    row(
        # 2024-11-03 06:00Z: 02:00 EDT -> 01:00 EST; 01:00 runs at its first pass, 05:00Z.
        "America/New_York", 1, "UTC", "0 5,6 * * *", "2024-11-03T05:00", "2024-11-03T05:00", 0,
        id="fall_back_repeat_account_new_york_on_utc",
    ),
    row(
        # Southern: 2024-10-05 16:00Z: 02:00 AEST -> 03:00 AEDT; 02:00 runs at 16:00Z
        # = 21:30 IST the day before.
        "Australia/Sydney", 2, "Asia/Kolkata", "30 20,21 * * *", "2024-10-05T16:00", "2024-10-05T16:00", 0,
        id="spring_skip_hour_account_sydney_on_kolkata",
    ),
    row(
        # Southern, midnight: 2024-09-08 04:00Z: 00:00 -04 -> 01:00 -03 in Santiago;
        # Sao Paulo has been -03 all year since 2019.
        "America/Santiago", 0, "America/Sao_Paulo", "0 0,1 * * *", "2024-09-08T04:00", "2024-09-08T04:00", 0,
        id="spring_skip_midnight_account_santiago_on_sao_paulo",
    ),
    row(
        # 30-minute gap: 2024-10-05 15:30Z: 02:00 +10:30 -> 02:30 +11; 02:00 runs at 15:30Z.
        "Australia/Lord_Howe", 2, "UTC", "0,30 15 * * *", "2024-10-05T15:30", "2024-10-05T15:30", 0,
        id="half_hour_gap_account_lord_howe_on_utc",
    ),
]

# -- both zones change ----------------------------------------------------------
BOTH_TABLE = [
    row(
        # Same rules, same instant (2024-11-03 06:00Z): equal wall times, first pass.
        "America/Toronto", 1, "America/New_York", "0 1 * * *", "2024-11-03T05:00", "2024-11-03T05:00", 0,
        id="fall_back_repeat_both_same_rules_toronto_on_new_york",
    ),
    row(
        # EU-wide, both at 2024-03-31 01:00Z (Berlin 02:00 -> 03:00, London 01:00 -> 02:00):
        # Berlin's skipped 02:00 runs at 01:00Z = 02:00 BST.
        "Europe/Berlin", 2, "Europe/London", "0 1,2 * * *", "2024-03-31T01:00", "2024-03-31T01:00", 0,
        id="spring_skip_hour_both_same_instant_berlin_on_london",
    ),
    row(
        # EU-wide, both at 2024-10-27 01:00Z: Berlin 02:00 (first pass, 00:00Z) is 01:00
        # BST, London's first pass too.
        "Europe/Berlin", 2, "Europe/London", "0 1,2 * * *", "2024-10-27T00:00", "2024-10-27T00:00", 0,
        id="fall_back_repeat_both_same_instant_berlin_on_london",
    ),
    row(
        # Same instant, different shift size: at 2024-10-27 01:00Z Troll goes 03:00 +02 ->
        # 01:00 +00 and Berlin 03:00 CEST -> 02:00 CET. Berlin 03:00 CET is 02:00Z =
        # 02:00 +00, Troll's second pass; it runs at 03:00 +00.
        "Europe/Berlin", 3, "Antarctica/Troll", "0 2,3 * * *", "2024-10-27T02:00", "2024-10-27T03:00", 4,
        id="fall_back_repeat_both_berlin_on_troll",
    ),
    row(
        # Host falls back first: New York at 06:00Z, Chicago at 07:00Z (2024-11-03).
        # Chicago 01:00 CDT (its first pass) is 06:00Z = 01:00 EST, New York's second pass.
        "America/Chicago", 1, "America/New_York", "0 2,3 * * *", "2024-11-03T06:00", "2024-11-03T07:00", 4,
        id="fall_back_repeat_both_host_first_chicago_on_new_york",
    ),
    row(
        # Account falls back first: New York 02:00 EST is 07:00Z = 01:00 CST, Chicago's
        # second pass (Chicago: 02:00 CDT -> 01:00 CST at 07:00Z).
        "America/New_York", 2, "America/Chicago", "0 1,2 * * *", "2024-11-03T07:00", "2024-11-03T08:00", 4,
        id="fall_back_repeat_both_account_first_new_york_on_chicago",
    ),
    row(
        # Spring forward an hour apart (New York 07:00Z, Chicago 08:00Z, 2024-03-10):
        # Chicago 01:00 CST is 07:00Z = 03:00 EDT; on time.
        "America/Chicago", 1, "America/New_York", "0 2,3 * * *", "2024-03-10T07:00", "2024-03-10T07:00", 4,
        id="spring_skip_hour_both_chicago_on_new_york",
    ),
    row(
        # Northern account, southern host: London 04:00 BST on 2024-04-07 is 03:00Z = Sat
        # 23:00 -04 in Santiago, its second pass (00:00 -03 -> 23:00 -04 at 03:00Z).
        "Europe/London", 4, "America/Santiago", "0 0,1,23 * * *", "2024-04-07T03:00", "2024-04-07T04:00", 4,
        id="fall_back_repeat_both_london_on_santiago",
    ),
    row(
        # Southern account, northern host: Sydney 09:00 is 22:00Z / 23:00Z, i.e. 22:00,
        # 23:00 or 00:00 in London; never inside London's repeat. 2024-10-26 23:00Z is
        # Sydney 10-27 09:00 AEDT = 00:00 BST in London.
        "Australia/Sydney", 9, "Europe/London", "0 0,22,23 * * *", "2024-10-26T22:00", "2024-10-26T22:00", 0,
        id="both_opposite_hemispheres_sydney_on_london",
    ),
    row(
        # London 06:00 on 2024-11-03 (GMT since 10-27) is 06:00Z = 01:00 EST, New York's
        # second pass.
        "Europe/London", 6, "America/New_York", "0 1,2 * * *", "2024-11-03T06:00", "2024-11-03T07:00", 4,
        id="fall_back_repeat_both_london_on_new_york",
    ),
    row(
        # Both southern, host first: Auckland falls back at 2024-04-06 14:00Z, Sydney at
        # 16:00Z. Sydney 01:00 AEDT is 14:00Z = 02:00 NZST, Auckland's second pass.
        "Australia/Sydney", 1, "Pacific/Auckland", "0 3,4 * * *", "2024-04-06T14:00", "2024-04-06T15:00", 4,
        id="fall_back_repeat_both_southern_sydney_on_auckland",
    ),
    row(
        # Both southern, account first: Auckland 04:00 NZST is 16:00Z = 02:00 AEST,
        # Sydney's second pass.
        "Pacific/Auckland", 4, "Australia/Sydney", "0 1,2,3 * * *", "2024-04-06T16:00", "2024-04-06T17:00", 4,
        id="fall_back_repeat_both_southern_auckland_on_sydney",
    ),
    row(
        # Sydney (1 h shift) on Lord Howe (30 min shift): Lord Howe's repeat (01:30-02:00
        # on 2024-04-07, from 15:00Z) comes after Sydney 01:00 AEDT (14:00Z = 01:00 +11).
        "Australia/Sydney", 1, "Australia/Lord_Howe", "0,30 1 * * *", "2024-04-06T14:00", "2024-04-06T14:00", 0,
        id="fall_back_both_sydney_on_lord_howe",
    ),
]


def check_row(account: str, hour: int, host: str, expr: str, occurrence: str, fires_at: str, late_count: int) -> None:
    """The plan's expression, the row's occurrence's firing, the late count and bound."""
    schedule = make("daily", hour, account)
    p = plan(schedule, ZoneInfo(host), utc(NOW))
    assert p.expression == expr
    probe = utc(occurrence)
    assert probe in occurrences_between(schedule, probe, probe)  # the row names a real occurrence
    assert late_map(p).get(probe, probe).isoformat() == utc(fires_at).isoformat()
    assert len(p.late) == late_count
    for entry in p.late:
        assert timedelta(0) < entry.fires_at - entry.occurrence <= MAX_LATENESS


def check_row_under_debian_cron(account: str, hour: int, host: str, occurrence: str, fires_at: str) -> None:
    """cronsim, independently, runs the row's occurrence at the row's instant, and every
    other occurrence of the year at its exact minute or at its plan.late firing."""
    schedule, host_zone, now = make("daily", hour, account), ZoneInfo(host), utc(NOW)
    p = plan(schedule, host_zone, now)
    end = now + timedelta(days=366)
    firings = cron_firings(p.expression, host_zone, now, end + MAX_LATENESS)
    late = late_map(p)
    fired = first_firing_at_or_after(firings, utc(occurrence))
    assert fired is not None and fired.isoformat() == utc(fires_at).isoformat()
    for instant in occurrences_between(schedule, now, end):
        assert first_firing_at_or_after(firings, instant) == late.get(instant, instant), instant.isoformat()


COLUMNS = "account, hour, host, expr, occurrence, fires_at, late_count"


class TestDstHostZone:
    @pytest.mark.parametrize(COLUMNS, HOST_ONLY_TABLE)
    def test_host_dst_table(
        self, account: str, hour: int, host: str, expr: str, occurrence: str, fires_at: str, late_count: int
    ) -> None:
        check_row(account, hour, host, expr, occurrence, fires_at, late_count)

    @needs_cronsim
    @pytest.mark.parametrize(COLUMNS, HOST_ONLY_TABLE)
    def test_host_dst_table_under_debian_cron(
        self, account: str, hour: int, host: str, expr: str, occurrence: str, fires_at: str, late_count: int
    ) -> None:
        check_row_under_debian_cron(account, hour, host, occurrence, fires_at)


class TestDstAccountZone:
    @pytest.mark.parametrize(COLUMNS, ACCOUNT_ONLY_TABLE)
    def test_account_dst_table(
        self, account: str, hour: int, host: str, expr: str, occurrence: str, fires_at: str, late_count: int
    ) -> None:
        check_row(account, hour, host, expr, occurrence, fires_at, late_count)

    @needs_cronsim
    @pytest.mark.parametrize(COLUMNS, ACCOUNT_ONLY_TABLE)
    def test_account_dst_table_under_debian_cron(
        self, account: str, hour: int, host: str, expr: str, occurrence: str, fires_at: str, late_count: int
    ) -> None:
        check_row_under_debian_cron(account, hour, host, occurrence, fires_at)

    def test_account_dst_on_a_host_without_dst_is_never_late(self) -> None:
        for account in ("America/New_York", "Australia/Sydney", "America/Santiago", "Australia/Lord_Howe"):
            for host in ("UTC", "Asia/Kolkata", "Asia/Kathmandu", "America/Phoenix"):
                assert plan(make("daily", 2, account), ZoneInfo(host), utc(NOW)).late == ()


class TestDstBothZones:
    @pytest.mark.parametrize(COLUMNS, BOTH_TABLE)
    def test_both_dst_table(
        self, account: str, hour: int, host: str, expr: str, occurrence: str, fires_at: str, late_count: int
    ) -> None:
        check_row(account, hour, host, expr, occurrence, fires_at, late_count)

    @needs_cronsim
    @pytest.mark.parametrize(COLUMNS, BOTH_TABLE)
    def test_both_dst_table_under_debian_cron(
        self, account: str, hour: int, host: str, expr: str, occurrence: str, fires_at: str, late_count: int
    ) -> None:
        check_row_under_debian_cron(account, hour, host, occurrence, fires_at)

    def test_same_zone_on_both_sides_is_never_late(self) -> None:
        # Occurrences resolve with fold=0, the first pass, which cron runs.
        for zone in ("America/New_York", "Australia/Lord_Howe", "Antarctica/Troll", "America/Santiago"):
            for hour in range(24):
                assert plan(make("daily", hour, zone), ZoneInfo(zone), utc(NOW)).late == ()


class TestLateness:
    def test_an_occurrence_on_the_first_pass_is_not_late(self) -> None:
        # UTC 05:00 on 2024-11-03 is 01:00 EDT in New York: the first pass.
        p = plan(make("daily", 5, "UTC"), ZoneInfo("America/New_York"), utc(NOW))
        assert p.late == ()
        assert p.expression == "0 0,1 * * *"

    def test_a_utc_host_is_never_late(self) -> None:
        for account in ("America/New_York", "Europe/London", "Australia/Lord_Howe", "Antarctica/Troll"):
            for hour in range(24):
                assert plan(make("daily", hour, account), ZoneInfo("UTC"), utc(NOW)).late == ()

    def test_late_occurrence_fires_at_the_next_full_hour(self) -> None:
        p = plan(make("daily", 1, "UTC"), ZoneInfo("Europe/London"), utc(NOW))
        entry = p.late[0]
        assert entry.occurrence.astimezone(ZoneInfo("Europe/London")).isoformat() == "2024-10-27T01:00:00+00:00"
        assert entry.fires_at.astimezone(ZoneInfo("Europe/London")).isoformat() == "2024-10-27T02:00:00+00:00"
        assert entry.fires_at - entry.occurrence == timedelta(hours=1)

    def test_late_occurrence_fires_at_an_earlier_product_minute_when_there_is_one(self) -> None:
        # Lord Howe: the repeat is 30 minutes, and 02:00 is in the product (0,30 x 1,2),
        # so the late occurrence runs 30 minutes late rather than an hour.
        p = plan(make("daily", 15, "UTC"), ZoneInfo("Australia/Lord_Howe"), utc(NOW))
        entry = p.late[0]
        assert entry.fires_at.astimezone(ZoneInfo("Australia/Lord_Howe")).isoformat() == "2024-04-07T02:00:00+10:30"
        assert entry.fires_at - entry.occurrence == timedelta(minutes=30)

    def test_a_two_hour_repeat_makes_it_two_hours_late(self) -> None:
        p = plan(make("daily", 1, "UTC"), ZoneInfo("Antarctica/Troll"), utc(NOW))
        assert [(e.occurrence.isoformat(), (e.fires_at - e.occurrence)) for e in p.late[:1]] == [
            ("2024-10-27T01:00:00+00:00", timedelta(hours=2))
        ]

    def test_late_firing_is_a_real_cron_firing_outside_the_second_pass(self) -> None:
        host = ZoneInfo("America/New_York")
        p = plan(make("daily", 1, "America/Chicago"), host, utc(NOW))
        assert p.late
        for entry in p.late:
            assert not is_second_pass(entry.fires_at, host)
            assert p.matches(entry.fires_at.astimezone(host))
            assert is_second_pass(entry.occurrence, host)

    def test_the_late_target_hour_is_added_to_the_product(self) -> None:
        # Troll host, UTC 02:00: 02:00 +00 in winter, 04:00 +02 in summer. On
        # 2024-10-27 (03:00 +02 -> 01:00 +00 at 01:00Z) 02:00Z is 02:00 +00 on the
        # second pass; only the added 03:00 lets it run one hour late, not two.
        p = plan(make("daily", 2, "UTC"), ZoneInfo("Antarctica/Troll"), utc("2024-07-01T00:00"))
        assert p.expression == "0 2,3,4 * * *"
        entry = p.late[0]
        assert entry.occurrence.isoformat() == "2024-10-27T02:00:00+00:00"
        assert entry.fires_at.isoformat() == "2024-10-27T03:00:00+00:00"

    def test_a_repeat_longer_than_three_hours_is_refused(self) -> None:
        # 01:00Z on 2024-10-27 is 01:00 on the second pass of a four-hour repeat;
        # 02:00, 03:00 and 04:00Z are too, so no firing is within three hours.
        host = four_hour_shift_zone()
        assert is_second_pass(utc("2024-10-27T04:30"), host)
        with pytest.raises(ValueError, match="repeats more than three hours"):
            plan(make("daily", 1, "UTC"), host, utc(NOW))

    def test_three_hours_late_is_allowed(self) -> None:
        # 02:00Z is 02:00 +00 on the second pass of the four-hour repeat; 05:00Z (three
        # hours on) is 05:00 +00, after the repeat.
        host = four_hour_shift_zone()
        p = plan(make("daily", 2, "UTC"), host, utc(NOW))
        assert p.late[0].occurrence.isoformat() == "2024-10-27T02:00:00+00:00"
        assert p.late[0].fires_at.isoformat() == "2024-10-27T05:00:00+00:00"
        assert MAX_LATENESS == timedelta(hours=3)


# ---------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------


hosts = st.sampled_from(ZONES).map(ZoneInfo)

# Interesting fixed cases, always run in addition to the random ones.
EXAMPLES = [
    (make("daily", 1, "America/Chicago"), ZoneInfo("America/New_York"), utc("2024-06-01T00:00")),
    (make("daily", 1, "UTC"), ZoneInfo("Europe/London"), utc("2024-06-01T00:00")),
    (make("daily", 1, "UTC"), ZoneInfo("Antarctica/Troll"), utc("2024-06-01T00:00")),
    (make("daily", 15, "UTC"), ZoneInfo("Australia/Lord_Howe"), utc("2024-01-15T00:00")),
    (make("weekly", 3, "UTC", weekday=6), ZoneInfo("America/Santiago"), utc("2024-01-15T00:00")),
    (make("monthly", 3, "UTC", day=7), ZoneInfo("America/Santiago"), utc("2024-01-15T00:00")),
    (make("monthly", 1, "Australia/Sydney", day="last"), ZoneInfo("Pacific/Auckland"), utc("2025-02-15T00:00")),
    (make("monthly", 2, "America/New_York", day=31), ZoneInfo("Europe/London"), utc("2027-12-31T23:59")),
    (make("weekly", 2, "Pacific/Chatham", weekday=6), ZoneInfo("America/Havana"), utc("2030-03-01T00:00")),
]


def with_examples(test):  # type: ignore[no-untyped-def]
    for schedule, host, now in EXAMPLES:
        test = example(schedule, host, now)(test)
    return test


class TestPlanProperties:
    @given(schedules(), hosts, nows)
    @with_examples
    @settings(max_examples=300, deadline=None)
    def test_every_occurrence_is_covered_and_only_second_passes_are_late(
        self, schedule: Schedule, host: ZoneInfo, now: datetime
    ) -> None:
        p = plan(schedule, host, now)
        minute, hour, dom, month, dow = p.expression.split()
        assert month == "*" and (dom == "*" or dow == "*")
        late = late_map(p)
        occurrences = occurrences_between(schedule, now, now + HORIZON)
        assert sorted(late) == [o for o in occurrences if is_second_pass(o, host)]
        for occurrence in occurrences:
            if occurrence in late:
                fires_at = late[occurrence]
                assert timedelta(0) < fires_at - occurrence <= MAX_LATENESS
                assert not is_second_pass(fires_at, host)
                assert p.matches(fires_at.astimezone(host))
            else:
                assert p.matches(occurrence.astimezone(host)), occurrence.isoformat()


@needs_cronsim
class TestDebianCronProperties:
    @given(schedules(), hosts, nows)
    @with_examples
    @settings(max_examples=300, deadline=None)
    def test_cron_fires_at_every_occurrence_or_its_late_firing(
        self, schedule: Schedule, host: ZoneInfo, now: datetime
    ) -> None:
        p = plan(schedule, host, now)
        late = late_map(p)
        end = now + TWO_YEARS
        firings = cron_firings(p.expression, host, now, end + MAX_LATENESS)
        for occurrence in occurrences_between(schedule, now, end):
            fired = first_firing_at_or_after(firings, occurrence)
            if occurrence in late:
                assert fired == late[occurrence], occurrence.isoformat()
                assert fired - occurrence <= MAX_LATENESS
            else:
                assert fired == occurrence, occurrence.isoformat()

    @given(schedules(), hosts, nows)
    @with_examples
    @settings(max_examples=300, deadline=None)
    def test_a_simulated_guard_runs_every_occurrence_exactly_once(
        self, schedule: Schedule, host: ZoneInfo, now: datetime
    ) -> None:
        # `run --scheduled` at each firing: run schedule.previous(firing) unless
        # the ledger has it. Saving at `now` means nothing earlier is due.
        p = plan(schedule, host, now)
        late = late_map(p)
        guarded = Schedule(
            mode=schedule.mode, hour=schedule.hour, zone=schedule.zone,
            day=schedule.day, weekday=schedule.weekday, saved_at=now,
        )  # fmt: skip
        end = now + TWO_YEARS
        ledger = set()
        runs: List[Tuple[datetime, datetime]] = []
        for firing in cron_firings(p.expression, host, now, end + MAX_LATENESS):
            due = guarded.previous(firing)
            if due is not None and due not in ledger:
                ledger.add(due)
                runs.append((due, firing))
        expected = occurrences_between(schedule, now, end)
        assert [due for due, _ in runs if due <= end] == expected  # none missed, none doubled, in order
        for due, firing in runs:
            if due in late:
                assert firing == late[due]
            else:
                assert firing == due, due.isoformat()  # runs at its exact minute
