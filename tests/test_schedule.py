"""Tests for psabill.schedule.rules: the pure schedule core.

Every rule of the policy in ``schedule.py``'s docstring has a class here:
modes (rule 1), month ends (rule 2), the account zone's spring-forward gap
(rule 3) and repeated hour (rule 4), the start date (rule 5) and the saved
moment (rule 6). Instants are compared as ``isoformat()`` strings so the UTC
offset is part of every assertion.

Transition instants quoted in comments come from tzdata (checked with
:mod:`zoneinfo`): "02:00 EST -> 03:00 EDT at 07:00Z" reads "at 07:00 UTC the
wall clock jumped from 02:00 (EST) to 03:00 (EDT)".
"""

from __future__ import annotations

import bisect
import re
from datetime import date, datetime, timedelta, timezone
from typing import List, Optional
from zoneinfo import ZoneInfo

import pytest
from dateutil import rrule
from hypothesis import example, given, settings
from hypothesis import strategies as st

from psabill.schedule.rules import (
    MODES,
    Schedule,
    ScheduleError,
    clamp_note,
    parse_day,
    parse_hour,
    parse_weekday,
)

from support.zones import TWO_YEARS, UTC, nows, occurrences_between, schedules, utc

NEW_YORK = ZoneInfo("America/New_York")
AUCKLAND = ZoneInfo("Pacific/Auckland")
SANTIAGO = ZoneInfo("America/Santiago")



def monthly(day: object, hour: int = 9, zone: str = "America/New_York", **kw: object) -> Schedule:
    return Schedule(mode="monthly", hour=hour, zone=ZoneInfo(zone), day=day, **kw)  # type: ignore[arg-type]


def weekly(weekday: int, hour: int = 9, zone: str = "America/New_York", **kw: object) -> Schedule:
    return Schedule(mode="weekly", hour=hour, zone=ZoneInfo(zone), weekday=weekday, **kw)  # type: ignore[arg-type]


def daily(hour: int = 9, zone: str = "America/New_York", **kw: object) -> Schedule:
    return Schedule(mode="daily", hour=hour, zone=ZoneInfo(zone), **kw)  # type: ignore[arg-type]


def first(schedule: Schedule, after: datetime, n: int = 1) -> List[str]:
    """The first ``n`` occurrences at or after ``after``, as isoformat strings."""
    out = []
    for instant in schedule.occurrences(after):
        out.append(instant.isoformat())
        if len(out) == n:
            break
    return out


def on_date(schedule: Schedule, d: date) -> str:
    """The occurrence belonging to account-local date ``d``, as isoformat."""
    return schedule.resolve(d).isoformat()


# ---------------------------------------------------------------------------
# Parsing the fields
# ---------------------------------------------------------------------------


class TestParse:
    @pytest.mark.parametrize(
        "text, expected",
        [("mon", 0), ("tue", 1), ("Tuesday", 1), ("TUE", 1), ("  wed ", 2), ("SUNDAY", 6), ("sat", 5)],
    )
    def test_it_parses_short_and_full_weekday_names_in_any_case(self, text: str, expected: int) -> None:
        assert parse_weekday(text) == expected

    @pytest.mark.parametrize("text, expected", [("tues", 1), ("Thurs", 3), ("Mo", 0), ("wednes", 2), ("Sat.", 5),
                                                ("su", 6)])
    def test_an_unambiguous_prefix_of_a_weekday_is_that_weekday(self, text: str, expected: int) -> None:
        """Issue 24: `Tues` is accepted; any prefix of two letters or more that one weekday owns."""
        assert parse_weekday(text) == expected

    @pytest.mark.parametrize("text", ["", "t", "s", "1", "weekday", "tuesdays", "tuseday"])
    def test_it_refuses_unknown_weekday_names_naming_the_value(self, text: str) -> None:
        with pytest.raises(ScheduleError, match=re.escape(repr(text))):
            parse_weekday(text)

    @pytest.mark.parametrize(
        "value, expected",
        [(1, 1), (31, 31), ("7", 7), (" 15 ", 15), ("last", "last"), ("LAST", "last"), (" Last ", "last")],
    )
    def test_it_parses_days_1_to_31_and_last(self, value: object, expected: object) -> None:
        assert parse_day(value) == expected  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        "value",
        [0, 32, -1, "0", "32", "-1", "first", "", "1.5", "3rd", True, False, 3.5, "\u00b2", None],
        ids=repr,
    )
    def test_it_refuses_days_outside_1_to_31_with_a_schedule_error(self, value: object) -> None:
        with pytest.raises(ScheduleError, match="is not 1-31 or 'last'"):
            parse_day(value)  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        "value, expected",
        [(0, 0), (23, 23), ("9", 9), ("09", 9), (" 7 ", 7), ("9:00", 9), ("09:00", 9), ("23:00", 23), ("0:00", 0)],
    )
    def test_it_parses_full_hours(self, value: object, expected: int) -> None:
        assert parse_hour(value) == expected  # type: ignore[arg-type]

    @pytest.mark.parametrize("value", ["9:30", "9:15", "9:0", "9:000", "9:", ":00", "nine:00"])
    def test_it_refuses_minutes_with_full_hours_only(self, value: str) -> None:
        with pytest.raises(ScheduleError, match="full hours only"):
            parse_hour(value)

    @pytest.mark.parametrize(
        "value", [24, -1, "24", "24:00", "-1", "", "nine", True, 9.5, "\u00b2", "\u00b2:00"], ids=repr
    )
    def test_it_refuses_hours_outside_0_to_23_with_a_schedule_error(self, value: object) -> None:
        with pytest.raises(ScheduleError):
            parse_hour(value)  # type: ignore[arg-type]

    @given(st.text(max_size=6))
    @settings(max_examples=300, deadline=None)
    def test_any_text_either_parses_or_raises_schedule_error(self, text: str) -> None:
        # The callers catch ScheduleError to print a friendly message; nothing
        # else (a bare ValueError from int(), a TypeError) may escape.
        for parse in (parse_day, parse_hour, parse_weekday):
            try:
                parse(text)
            except ScheduleError:
                pass


class TestValidation:
    def test_it_refuses_an_unknown_mode(self) -> None:
        with pytest.raises(ScheduleError, match="mode 'hourly' is not one of monthly, weekly, daily"):
            Schedule(mode="hourly", hour=9, zone=NEW_YORK)

    def test_a_monthly_schedule_needs_a_day(self) -> None:
        with pytest.raises(ScheduleError, match="needs a day"):
            Schedule(mode="monthly", hour=9, zone=NEW_YORK)

    @pytest.mark.parametrize("day", [0, 32, "first"])
    def test_a_monthly_day_must_be_1_to_31_or_last(self, day: object) -> None:
        with pytest.raises(ScheduleError, match="is not 1-31"):
            monthly(day)

    @pytest.mark.parametrize("mode", ["weekly", "daily"])
    def test_a_day_only_applies_to_a_monthly_schedule(self, mode: str) -> None:
        with pytest.raises(ScheduleError, match="only applies to a monthly schedule"):
            Schedule(mode=mode, hour=9, zone=NEW_YORK, day=1, weekday=0 if mode == "weekly" else None)

    @pytest.mark.parametrize("weekday", [None, -1, 7])
    def test_a_weekly_schedule_needs_a_weekday_0_to_6(self, weekday: Optional[int]) -> None:
        with pytest.raises(ScheduleError, match="is not 0-6"):
            Schedule(mode="weekly", hour=9, zone=NEW_YORK, weekday=weekday)

    @pytest.mark.parametrize("mode", ["monthly", "daily"])
    def test_a_weekday_only_applies_to_a_weekly_schedule(self, mode: str) -> None:
        with pytest.raises(ScheduleError, match="only applies to a weekly schedule"):
            Schedule(mode=mode, hour=9, zone=NEW_YORK, weekday=1, day=1 if mode == "monthly" else None)

    @pytest.mark.parametrize("hour", [-1, 24, True])
    def test_the_hour_must_be_0_to_23(self, hour: object) -> None:
        with pytest.raises(ScheduleError):
            daily(hour)  # type: ignore[arg-type]

    def test_saved_at_must_carry_a_utc_offset(self) -> None:
        with pytest.raises(ScheduleError, match="saved_at must carry a UTC offset"):
            daily(saved_at=datetime(2024, 6, 1, 12, 0))

    @pytest.mark.parametrize("mode", MODES)
    def test_every_mode_builds_with_its_own_fields(self, mode: str) -> None:
        fields = {"monthly": {"day": "last"}, "weekly": {"weekday": 6}, "daily": {}}[mode]
        schedule = Schedule(mode=mode, hour=0, zone=NEW_YORK, **fields)  # type: ignore[arg-type]
        assert schedule.mode == mode


# ---------------------------------------------------------------------------
# Rule 1: modes
# ---------------------------------------------------------------------------


class TestModes:
    def test_daily_fires_every_day_at_the_hour_in_the_account_zone(self) -> None:
        # June: EDT (UTC-4), so 09:00 local is 13:00Z.
        assert first(daily(9), utc("2024-06-01T00:00"), 3) == [
            "2024-06-01T13:00:00+00:00",
            "2024-06-02T13:00:00+00:00",
            "2024-06-03T13:00:00+00:00",
        ]

    def test_weekly_fires_on_its_weekday_only(self) -> None:
        # 2024-06-04 is a Tuesday (weekday 1).
        assert first(weekly(1), utc("2024-06-01T00:00"), 3) == [
            "2024-06-04T13:00:00+00:00",
            "2024-06-11T13:00:00+00:00",
            "2024-06-18T13:00:00+00:00",
        ]

    @pytest.mark.parametrize(
        "weekday, expected",
        [
            (0, "2024-06-03T13:00:00+00:00"),  # Monday
            (5, "2024-06-01T13:00:00+00:00"),  # Saturday: the start day itself
            (6, "2024-06-02T13:00:00+00:00"),  # Sunday
        ],
        ids=["monday", "saturday", "sunday"],
    )
    def test_weekday_0_is_monday_and_6_is_sunday(self, weekday: int, expected: str) -> None:
        assert first(weekly(weekday), utc("2024-06-01T00:00")) == [expected]

    def test_monthly_fires_once_a_month_on_its_day(self) -> None:
        assert first(monthly(15), utc("2024-06-01T00:00"), 3) == [
            "2024-06-15T13:00:00+00:00",
            "2024-07-15T13:00:00+00:00",
            "2024-08-15T13:00:00+00:00",
        ]

    @pytest.mark.parametrize(
        "hour, expected",
        # 2024-06-01 00:00Z is still May 31 (20:00 EDT) in New York, so the first
        # 23:00 is May 31's, at 03:00Z on June 1.
        [(0, "2024-06-01T04:00:00+00:00"), (23, "2024-06-01T03:00:00+00:00")],
        ids=["midnight", "eleven_pm"],
    )
    def test_hours_0_and_23_are_local_wall_hours(self, hour: int, expected: str) -> None:
        assert first(daily(hour), utc("2024-06-01T00:00")) == [expected]

    def test_it_fires_at_the_full_hour_in_a_half_hour_zone(self) -> None:
        # Asia/Kolkata is UTC+05:30 all year: 09:00 IST is 03:30Z.
        assert first(daily(9, "Asia/Kolkata"), utc("2024-06-01T00:00"), 2) == [
            "2024-06-01T03:30:00+00:00",
            "2024-06-02T03:30:00+00:00",
        ]

    def test_it_fires_at_the_full_hour_in_a_quarter_hour_zone(self) -> None:
        # Asia/Kathmandu is UTC+05:45 all year: 09:00 NPT is 03:15Z.
        assert first(daily(9, "Asia/Kathmandu"), utc("2024-06-01T00:00")) == ["2024-06-01T03:15:00+00:00"]

    def test_a_local_date_east_of_utc_fires_on_the_previous_utc_date(self) -> None:
        # Auckland in January is NZDT (UTC+13): Monday 2024-01-08 09:00 is Sunday 20:00Z.
        assert first(weekly(0, zone="Pacific/Auckland"), utc("2024-01-05T00:00")) == ["2024-01-07T20:00:00+00:00"]

    def test_every_instant_returned_is_utc(self) -> None:
        for instant in occurrences_between(monthly("last", zone="Asia/Kathmandu"), utc("2024-01-01T00:00"), utc("2025-01-01T00:00")):
            assert instant.tzinfo is UTC
            assert instant.isoformat().endswith("+00:00")


# ---------------------------------------------------------------------------
# Rule 2: short months clamp
# ---------------------------------------------------------------------------


class TestMonthEnds:
    # New York at 09:00: EST (-05:00) until 2nd Sunday of March, then EDT (-04:00),
    # so winter dates fire at 14:00Z and summer dates at 13:00Z.
    @pytest.mark.parametrize(
        "day, month_start, expected",
        [
            (31, "2025-02-01", "2025-02-28T14:00:00+00:00"),
            (31, "2024-02-01", "2024-02-29T14:00:00+00:00"),
            (31, "2028-02-01", "2028-02-29T14:00:00+00:00"),
            (30, "2032-02-01", "2032-02-29T14:00:00+00:00"),
            (30, "2026-02-01", "2026-02-28T14:00:00+00:00"),
            (29, "2026-02-01", "2026-02-28T14:00:00+00:00"),
            (29, "2028-02-01", "2028-02-29T14:00:00+00:00"),
            (28, "2028-02-01", "2028-02-28T14:00:00+00:00"),
            (31, "2025-04-01", "2025-04-30T13:00:00+00:00"),
            (31, "2025-06-01", "2025-06-30T13:00:00+00:00"),
            (31, "2025-09-01", "2025-09-30T13:00:00+00:00"),
            (31, "2025-11-01", "2025-11-30T14:00:00+00:00"),
            (31, "2025-01-01", "2025-01-31T14:00:00+00:00"),
            (31, "2025-12-01", "2025-12-31T14:00:00+00:00"),
            (30, "2025-04-01", "2025-04-30T13:00:00+00:00"),
            ("last", "2025-02-01", "2025-02-28T14:00:00+00:00"),
            ("last", "2024-02-01", "2024-02-29T14:00:00+00:00"),
            ("last", "2025-04-01", "2025-04-30T13:00:00+00:00"),
            ("last", "2025-07-01", "2025-07-31T13:00:00+00:00"),
            ("last", "2025-12-01", "2025-12-31T14:00:00+00:00"),
        ],
        ids=[
            "day_31_clamps_to_feb_28",
            "day_31_clamps_to_feb_29_in_leap_2024",
            "day_31_clamps_to_feb_29_in_leap_2028",
            "day_30_clamps_to_feb_29_in_leap_2032",
            "day_30_clamps_to_feb_28",
            "day_29_clamps_to_feb_28_in_common_year",
            "day_29_exists_in_leap_feb",
            "day_28_never_clamps",
            "day_31_clamps_to_apr_30",
            "day_31_clamps_to_jun_30",
            "day_31_clamps_to_sep_30",
            "day_31_clamps_to_nov_30",
            "day_31_fires_on_jan_31",
            "day_31_fires_on_dec_31",
            "day_30_is_apr_30",
            "last_is_feb_28",
            "last_is_feb_29_in_leap_year",
            "last_is_apr_30",
            "last_is_jul_31",
            "last_is_dec_31",
        ],
    )
    def test_a_day_past_the_month_end_fires_on_the_last_day(self, day: object, month_start: str, expected: str) -> None:
        assert first(monthly(day), utc(month_start + "T00:00")) == [expected]

    def test_it_clamps_day_31_to_feb_28(self) -> None:
        assert first(monthly(31), utc("2025-02-01T00:00")) == ["2025-02-28T14:00:00+00:00"]

    def test_it_clamps_day_31_to_feb_29_in_a_leap_year(self) -> None:
        assert first(monthly(31), utc("2024-02-01T00:00")) == ["2024-02-29T14:00:00+00:00"]

    @pytest.mark.parametrize(
        "year, expected", [(2024, 29), (2025, 28), (2100, 28), (2000, 29)], ids=["leap", "common", "1900_rule", "400_rule"]
    )
    def test_day_in_uses_the_gregorian_leap_rules(self, year: int, expected: int) -> None:
        assert monthly(31).day_in(year, 2) == expected
        assert monthly("last").day_in(year, 2) == expected

    def test_day_31_fires_exactly_once_in_every_month(self) -> None:
        got = occurrences_between(monthly(31), utc("2024-01-01T00:00"), utc("2025-12-31T23:59"))
        local = [i.astimezone(NEW_YORK).date().isoformat() for i in got]
        assert local == [
            "2024-01-31", "2024-02-29", "2024-03-31", "2024-04-30", "2024-05-31", "2024-06-30",
            "2024-07-31", "2024-08-31", "2024-09-30", "2024-10-31", "2024-11-30", "2024-12-31",
            "2025-01-31", "2025-02-28", "2025-03-31", "2025-04-30", "2025-05-31", "2025-06-30",
            "2025-07-31", "2025-08-31", "2025-09-30", "2025-10-31", "2025-11-30", "2025-12-31",
        ]  # fmt: skip

    def test_the_day_after_a_clamped_month_is_the_real_day_again(self) -> None:
        assert first(monthly(30), utc("2025-02-01T00:00"), 2) == [
            "2025-02-28T14:00:00+00:00",
            "2025-03-30T13:00:00+00:00",  # EDT from 2025-03-09
        ]

    def test_last_is_the_local_last_day_even_when_utc_is_a_day_behind(self) -> None:
        # Auckland in February is NZDT (+13:00): Feb 28 09:00 local is Feb 27 20:00Z.
        assert first(monthly("last", zone="Pacific/Auckland"), utc("2025-02-01T00:00")) == ["2025-02-27T20:00:00+00:00"]

    def test_last_in_a_leap_february_on_the_southern_hemisphere(self) -> None:
        # Sydney in Feb 2028 is AEDT (+11:00): Feb 29 09:00 local is Feb 28 22:00Z.
        assert first(monthly("last", zone="Australia/Sydney"), utc("2028-02-01T00:00")) == ["2028-02-28T22:00:00+00:00"]

    def test_previous_finds_the_clamped_day_of_the_previous_month(self) -> None:
        assert monthly(31).previous(utc("2025-03-15T00:00")).isoformat() == "2025-02-28T14:00:00+00:00"

    def test_previous_skips_to_the_previous_month_before_the_day(self) -> None:
        assert monthly(20).previous(utc("2025-03-15T00:00")).isoformat() == "2025-02-20T14:00:00+00:00"


# ---------------------------------------------------------------------------
# Rules 3 and 4: DST in the account zone
# ---------------------------------------------------------------------------

# (zone, hour, local date, expected UTC instant). Each comment gives the
# transition instant; "gap" rows expect the wall time shifted forward by the
# gap (fold=0), "repeat" rows the first pass (fold=0).
DST_ACCOUNT_TABLE = [
    pytest.param(
        # 2024-03-10 07:00Z: 02:00 EST -> 03:00 EDT. 02:00 runs at 03:00 EDT.
        "America/New_York", 2, "2024-03-10", "2024-03-10T07:00:00+00:00", "2024-03-10T03:00:00-04:00",
        id="spring_skip_hour_new_york",
    ),
    pytest.param(
        # 2024-11-03 06:00Z: 02:00 EDT -> 01:00 EST. 01:00 runs at 01:00 EDT (first pass).
        "America/New_York", 1, "2024-11-03", "2024-11-03T05:00:00+00:00", "2024-11-03T01:00:00-04:00",
        id="fall_back_repeat_new_york",
    ),
    pytest.param(
        # 2024-03-31 01:00Z: 01:00 GMT -> 02:00 BST.
        "Europe/London", 1, "2024-03-31", "2024-03-31T01:00:00+00:00", "2024-03-31T02:00:00+01:00",
        id="spring_skip_hour_london",
    ),
    pytest.param(
        # 2024-10-27 01:00Z: 02:00 BST -> 01:00 GMT.
        "Europe/London", 1, "2024-10-27", "2024-10-27T00:00:00+00:00", "2024-10-27T01:00:00+01:00",
        id="fall_back_repeat_london",
    ),
    pytest.param(
        # 2024-03-31 01:00Z: 02:00 CET -> 03:00 CEST.
        "Europe/Berlin", 2, "2024-03-31", "2024-03-31T01:00:00+00:00", "2024-03-31T03:00:00+02:00",
        id="spring_skip_hour_berlin",
    ),
    pytest.param(
        # 2024-10-27 01:00Z: 03:00 CEST -> 02:00 CET.
        "Europe/Berlin", 2, "2024-10-27", "2024-10-27T00:00:00+00:00", "2024-10-27T02:00:00+02:00",
        id="fall_back_repeat_berlin",
    ),
    pytest.param(
        # Southern: 2024-10-05 16:00Z: Sun 02:00 AEST -> 03:00 AEDT.
        "Australia/Sydney", 2, "2024-10-06", "2024-10-05T16:00:00+00:00", "2024-10-06T03:00:00+11:00",
        id="spring_skip_hour_sydney",
    ),
    pytest.param(
        # Southern: 2024-04-06 16:00Z: Sun 03:00 AEDT -> 02:00 AEST.
        "Australia/Sydney", 2, "2024-04-07", "2024-04-06T15:00:00+00:00", "2024-04-07T02:00:00+11:00",
        id="fall_back_repeat_sydney",
    ),
    pytest.param(
        # :30 zone: 2024-10-05 16:30Z: Sun 02:00 ACST (+09:30) -> 03:00 ACDT (+10:30).
        "Australia/Adelaide", 2, "2024-10-06", "2024-10-05T16:30:00+00:00", "2024-10-06T03:00:00+10:30",
        id="spring_skip_hour_adelaide",
    ),
    pytest.param(
        # :30 zone: 2024-04-06 16:30Z: Sun 03:00 ACDT -> 02:00 ACST.
        "Australia/Adelaide", 2, "2024-04-07", "2024-04-06T15:30:00+00:00", "2024-04-07T02:00:00+10:30",
        id="fall_back_repeat_adelaide",
    ),
    pytest.param(
        # 2024-09-28 14:00Z: Sun 02:00 NZST -> 03:00 NZDT.
        "Pacific/Auckland", 2, "2024-09-29", "2024-09-28T14:00:00+00:00", "2024-09-29T03:00:00+13:00",
        id="spring_skip_hour_auckland",
    ),
    pytest.param(
        # 2024-04-06 14:00Z: Sun 03:00 NZDT -> 02:00 NZST.
        "Pacific/Auckland", 2, "2024-04-07", "2024-04-06T13:00:00+00:00", "2024-04-07T02:00:00+13:00",
        id="fall_back_repeat_auckland",
    ),
    pytest.param(
        # :45 zone: 2024-09-28 14:00Z: 02:45 +12:45 -> 03:45 +13:45; 03:00 is skipped.
        "Pacific/Chatham", 3, "2024-09-29", "2024-09-28T14:15:00+00:00", "2024-09-29T04:00:00+13:45",
        id="spring_skip_hour_chatham",
    ),
    pytest.param(
        # :45 zone: 2024-04-06 14:00Z: 03:45 +13:45 -> 02:45 +12:45; 03:00 is repeated.
        "Pacific/Chatham", 3, "2024-04-07", "2024-04-06T13:15:00+00:00", "2024-04-07T03:00:00+13:45",
        id="fall_back_repeat_chatham",
    ),
    pytest.param(
        # DST at midnight: 2024-09-08 04:00Z: Sun 00:00 -04 -> 01:00 -03. Midnight never exists.
        "America/Santiago", 0, "2024-09-08", "2024-09-08T04:00:00+00:00", "2024-09-08T01:00:00-03:00",
        id="spring_skip_midnight_santiago",
    ),
    pytest.param(
        # 2024-04-07 03:00Z: Sun 00:00 -03 -> Sat 23:00 -04. Saturday's 23:00 is repeated.
        "America/Santiago", 23, "2024-04-06", "2024-04-07T02:00:00+00:00", "2024-04-06T23:00:00-03:00",
        id="fall_back_repeat_santiago",
    ),
    pytest.param(
        # 2024-03-10 05:00Z: 00:00 CST -> 01:00 CDT.
        "America/Havana", 0, "2024-03-10", "2024-03-10T05:00:00+00:00", "2024-03-10T01:00:00-04:00",
        id="spring_skip_midnight_havana",
    ),
    pytest.param(
        # 2024-11-03 05:00Z: 01:00 CDT -> 00:00 CST.
        "America/Havana", 0, "2024-11-03", "2024-11-03T04:00:00+00:00", "2024-11-03T00:00:00-04:00",
        id="fall_back_repeat_midnight_havana",
    ),
    pytest.param(
        # 30-minute shift: 2024-10-05 15:30Z: 02:00 +10:30 -> 02:30 +11. 02:00 runs at 02:30.
        "Australia/Lord_Howe", 2, "2024-10-06", "2024-10-05T15:30:00+00:00", "2024-10-06T02:30:00+11:00",
        id="spring_skip_half_hour_lord_howe",
    ),
    pytest.param(
        # 2024-04-06 15:00Z: 02:00 +11 -> 01:30 +10:30. Only 01:30-02:00 repeats, so 01:00 is unique.
        "Australia/Lord_Howe", 1, "2024-04-07", "2024-04-06T14:00:00+00:00", "2024-04-07T01:00:00+11:00",
        id="fall_back_half_hour_lord_howe_full_hour_not_repeated",
    ),
    pytest.param(
        # 2024-04-06 15:00Z (as above): 02:00 +11 never shows; 02:00 +10:30 happens once.
        "Australia/Lord_Howe", 2, "2024-04-07", "2024-04-06T15:30:00+00:00", "2024-04-07T02:00:00+10:30",
        id="fall_back_half_hour_lord_howe_end_of_repeat",
    ),
    pytest.param(
        # Two-hour shift: 2024-03-31 01:00Z: 01:00 +00 -> 03:00 +02. 02:00 runs at 04:00.
        "Antarctica/Troll", 2, "2024-03-31", "2024-03-31T02:00:00+00:00", "2024-03-31T04:00:00+02:00",
        id="spring_skip_two_hours_troll",
    ),
    pytest.param(
        # 2024-10-27 01:00Z: 03:00 +02 -> 01:00 +00. 02:00 runs at its first pass.
        "Antarctica/Troll", 2, "2024-10-27", "2024-10-27T00:00:00+00:00", "2024-10-27T02:00:00+02:00",
        id="fall_back_repeat_two_hours_troll",
    ),
    pytest.param(
        # "Negative DST" for Ramadan: 2024-03-10 02:00Z: 03:00 +01 -> 02:00 +00.
        "Africa/Casablanca", 2, "2024-03-10", "2024-03-10T01:00:00+00:00", "2024-03-10T02:00:00+01:00",
        id="fall_back_repeat_casablanca_ramadan",
    ),
    pytest.param(
        # 2024-04-14 02:00Z: 02:00 +00 -> 03:00 +01.
        "Africa/Casablanca", 2, "2024-04-14", "2024-04-14T02:00:00+00:00", "2024-04-14T03:00:00+01:00",
        id="spring_skip_hour_casablanca_after_ramadan",
    ),
    pytest.param(
        # "Negative DST" in tzdata: 2024-10-27 01:00Z: 02:00 IST -> 01:00 GMT.
        "Europe/Dublin", 1, "2024-10-27", "2024-10-27T00:00:00+00:00", "2024-10-27T01:00:00+01:00",
        id="fall_back_repeat_dublin_negative_dst",
    ),
]


class TestDstAccountZone:
    @pytest.mark.parametrize("zone, hour, local_date, expected_utc, expected_local", DST_ACCOUNT_TABLE)
    def test_dst_table(self, zone: str, hour: int, local_date: str, expected_utc: str, expected_local: str) -> None:
        schedule = daily(hour, zone)
        d = date.fromisoformat(local_date)
        assert on_date(schedule, d) == expected_utc
        assert schedule.resolve(d).astimezone(ZoneInfo(zone)).isoformat() == expected_local
        # It is also what occurrences() yields for that day, once.
        day_start = utc(expected_utc) - timedelta(hours=12)
        got = [i.isoformat() for i in occurrences_between(schedule, day_start, utc(expected_utc) + timedelta(hours=12))]
        assert got == [expected_utc]

    def test_spring_forward_gap_shifts_forward_by_the_gap(self) -> None:
        # 2024-03-10 07:00Z: 02:00 EST -> 03:00 EDT. 02:00 + 1 h gap = 03:00 EDT.
        instant = daily(2).resolve(date(2024, 3, 10))
        assert instant.isoformat() == "2024-03-10T07:00:00+00:00"
        assert instant.astimezone(NEW_YORK).isoformat() == "2024-03-10T03:00:00-04:00"

    def test_spring_forward_gap_of_half_an_hour_shifts_by_half_an_hour(self) -> None:
        # Lord Howe 2024-10-05 15:30Z: 02:00 +10:30 -> 02:30 +11.
        instant = daily(2, "Australia/Lord_Howe").resolve(date(2024, 10, 6))
        assert instant.astimezone(ZoneInfo("Australia/Lord_Howe")).isoformat() == "2024-10-06T02:30:00+11:00"

    def test_spring_forward_days_around_the_gap_are_unaffected(self) -> None:
        assert first(daily(2), utc("2024-03-09T00:00"), 3) == [
            "2024-03-09T07:00:00+00:00",  # 02:00 EST
            "2024-03-10T07:00:00+00:00",  # skipped 02:00 -> 03:00 EDT
            "2024-03-11T06:00:00+00:00",  # 02:00 EDT
        ]

    def test_an_hour_outside_the_gap_on_the_spring_day_is_exact(self) -> None:
        assert on_date(daily(3), date(2024, 3, 10)) == "2024-03-10T07:00:00+00:00"  # 03:00 EDT
        assert on_date(daily(1), date(2024, 3, 10)) == "2024-03-10T06:00:00+00:00"  # 01:00 EST

    def test_repeated_hour_runs_once_at_first_pass(self) -> None:
        # 2024-11-03 06:00Z: 02:00 EDT -> 01:00 EST; 01:00 happens at 05:00Z and 06:00Z.
        got = [i.isoformat() for i in occurrences_between(daily(1), utc("2024-11-02T00:00"), utc("2024-11-04T23:59"))]
        assert got == [
            "2024-11-02T05:00:00+00:00",  # 01:00 EDT
            "2024-11-03T05:00:00+00:00",  # first pass, 01:00 EDT
            "2024-11-04T06:00:00+00:00",  # 01:00 EST
        ]
        assert "2024-11-03T06:00:00+00:00" not in got  # never the second pass

    def test_repeated_hour_is_not_picked_up_again_after_the_first_pass(self) -> None:
        # Asking from inside the second pass must not yield the same local 01:00 again.
        assert first(daily(1), utc("2024-11-03T06:00")) == ["2024-11-04T06:00:00+00:00"]

    def test_previous_during_the_second_pass_is_the_first_pass(self) -> None:
        # 06:30Z is 01:30 EST, the second pass of 01:00-02:00.
        assert daily(1).previous(utc("2024-11-03T06:30")).isoformat() == "2024-11-03T05:00:00+00:00"

    def test_previous_in_the_spring_gap_instant(self) -> None:
        assert daily(2).previous(utc("2024-03-10T07:00")).isoformat() == "2024-03-10T07:00:00+00:00"
        assert daily(2).previous(utc("2024-03-10T06:59:59")).isoformat() == "2024-03-09T07:00:00+00:00"

    def test_weekly_across_both_transitions_keeps_local_time(self) -> None:
        # Sundays at 09:00 New York around 2024-03-10 and 2024-11-03.
        spring = first(weekly(6), utc("2024-03-03T00:00"), 2)
        fall = first(weekly(6), utc("2024-10-27T00:00"), 2)
        assert spring == ["2024-03-03T14:00:00+00:00", "2024-03-10T13:00:00+00:00"]
        assert fall == ["2024-10-27T13:00:00+00:00", "2024-11-03T14:00:00+00:00"]

    def test_southern_hemisphere_is_summer_time_in_january(self) -> None:
        # Santiago is -03 in January, -04 in July.
        assert first(monthly(15, zone="America/Santiago"), utc("2025-01-01T00:00")) == ["2025-01-15T12:00:00+00:00"]
        assert first(monthly(15, zone="America/Santiago"), utc("2025-07-01T00:00")) == ["2025-07-15T13:00:00+00:00"]


# ---------------------------------------------------------------------------
# Rule 5: start date
# ---------------------------------------------------------------------------


class TestStartDate:
    def test_start_date_excludes_earlier_local_dates(self) -> None:
        schedule = daily(9, start=date(2024, 6, 10))
        assert first(schedule, utc("2024-06-01T00:00")) == ["2024-06-10T13:00:00+00:00"]

    def test_start_date_is_an_account_local_date_not_a_utc_date(self) -> None:
        # Auckland 2025-03-01 09:00 NZDT (+13) is 2025-02-28 20:00Z: the UTC date is
        # before the start date but the local date is not, so it runs.
        schedule = daily(9, "Pacific/Auckland", start=date(2025, 3, 1))
        assert first(schedule, utc("2025-02-20T00:00")) == ["2025-02-28T20:00:00+00:00"]

    def test_start_date_west_of_utc_excludes_the_day_before_even_when_utc_date_matches(self) -> None:
        # Honolulu (-10) 2025-02-28 20:00 is 2025-03-01 06:00Z: UTC date == start, local date before.
        schedule = daily(20, "Pacific/Honolulu", start=date(2025, 3, 1))
        assert first(schedule, utc("2025-02-25T00:00")) == ["2025-03-02T06:00:00+00:00"]

    def test_start_date_includes_midnight_of_the_start_date(self) -> None:
        schedule = daily(0, start=date(2024, 6, 10))
        assert first(schedule, utc("2024-06-01T00:00")) == ["2024-06-10T04:00:00+00:00"]

    def test_start_date_whose_midnight_is_skipped_still_runs_that_day(self) -> None:
        # Santiago 2024-09-08 04:00Z: 00:00 -04 -> 01:00 -03; the start day's midnight
        # never exists and its 00:00 occurrence runs at 01:00 -03.
        schedule = daily(0, "America/Santiago", start=date(2024, 9, 8))
        assert first(schedule, utc("2024-09-01T00:00")) == ["2024-09-08T04:00:00+00:00"]

    def test_start_date_in_the_past_changes_nothing(self) -> None:
        with_start = daily(9, start=date(2020, 1, 1))
        assert first(with_start, utc("2024-06-01T00:00"), 3) == first(daily(9), utc("2024-06-01T00:00"), 3)

    def test_start_date_after_the_monthly_day_waits_for_next_month(self) -> None:
        schedule = monthly(5, start=date(2024, 6, 10))
        assert first(schedule, utc("2024-05-01T00:00")) == ["2024-07-05T13:00:00+00:00"]

    def test_start_date_on_a_clamped_day_runs_that_day(self) -> None:
        schedule = monthly(31, start=date(2025, 2, 28))
        assert first(schedule, utc("2025-01-01T00:00")) == ["2025-02-28T14:00:00+00:00"]

    def test_start_date_for_weekly_skips_earlier_weekdays(self) -> None:
        # Tuesdays; start on Wednesday 2024-06-05 -> first is Tuesday 2024-06-11.
        schedule = weekly(1, start=date(2024, 6, 5))
        assert first(schedule, utc("2024-06-01T00:00")) == ["2024-06-11T13:00:00+00:00"]

    def test_previous_before_the_start_date_is_none(self) -> None:
        schedule = daily(9, start=date(2024, 6, 10))
        assert schedule.previous(utc("2024-06-10T12:59")) is None
        assert schedule.previous(utc("2024-06-10T13:00")).isoformat() == "2024-06-10T13:00:00+00:00"

    def test_describe_mentions_the_start_date(self) -> None:
        assert daily(9, start=date(2024, 6, 10)).describe() == (
            "Every day at 09:00 (America/New_York), starting 2024-06-10"
        )


# ---------------------------------------------------------------------------
# Rule 6: saved moment
# ---------------------------------------------------------------------------


class TestSavedAt:
    def test_occurrence_before_saved_at_never_runs(self) -> None:
        # Saved on Tuesday 2024-06-11 at 09:30 EDT, half an hour after that day's 09:00.
        schedule = weekly(1, saved_at=utc("2024-06-11T13:30"))
        assert first(schedule, utc("2024-06-01T00:00")) == ["2024-06-18T13:00:00+00:00"]
        assert schedule.previous(utc("2024-06-11T14:00")) is None

    def test_occurrence_at_the_saved_instant_still_runs(self) -> None:
        schedule = weekly(1, saved_at=utc("2024-06-11T13:00"))
        assert first(schedule, utc("2024-06-01T00:00")) == ["2024-06-11T13:00:00+00:00"]
        assert schedule.previous(utc("2024-06-11T13:00")).isoformat() == "2024-06-11T13:00:00+00:00"

    def test_occurrence_one_second_before_saved_at_never_runs(self) -> None:
        schedule = weekly(1, saved_at=utc("2024-06-11T13:00:01"))
        assert first(schedule, utc("2024-06-01T00:00")) == ["2024-06-18T13:00:00+00:00"]

    def test_saved_at_with_a_non_utc_offset_is_the_same_instant(self) -> None:
        # 09:30-04:00 is 13:30Z: after Tuesday's 09:00 EDT.
        saved = datetime(2024, 6, 11, 9, 30, tzinfo=timezone(timedelta(hours=-4)))
        assert first(weekly(1, saved_at=saved), utc("2024-06-01T00:00")) == ["2024-06-18T13:00:00+00:00"]
        # 09:30+00:00 is before 13:00Z: that Tuesday still runs.
        saved_utc = datetime(2024, 6, 11, 9, 30, tzinfo=UTC)
        assert first(weekly(1, saved_at=saved_utc), utc("2024-06-01T00:00")) == ["2024-06-11T13:00:00+00:00"]

    def test_saving_mid_month_does_not_trigger_the_past_monthly_run(self) -> None:
        schedule = monthly(1, saved_at=utc("2024-06-15T00:00"))
        assert schedule.previous(utc("2024-06-20T00:00")) is None
        assert schedule.next_after(utc("2024-06-15T00:00")).isoformat() == "2024-07-01T13:00:00+00:00"

    def test_saved_at_later_than_start_wins(self) -> None:
        schedule = daily(9, start=date(2024, 6, 1), saved_at=utc("2024-06-05T14:00"))
        assert first(schedule, utc("2024-05-01T00:00")) == ["2024-06-06T13:00:00+00:00"]

    def test_start_later_than_saved_at_wins(self) -> None:
        schedule = daily(9, start=date(2024, 6, 10), saved_at=utc("2024-06-05T14:00"))
        assert first(schedule, utc("2024-05-01T00:00")) == ["2024-06-10T13:00:00+00:00"]

    def test_previous_after_saved_at_sees_later_occurrences(self) -> None:
        schedule = weekly(1, saved_at=utc("2024-06-11T13:30"))
        assert schedule.previous(utc("2024-06-25T00:00")).isoformat() == "2024-06-18T13:00:00+00:00"


# ---------------------------------------------------------------------------
# occurrences / previous / next_after
# ---------------------------------------------------------------------------


class TestOccurrences:
    def test_occurrences_are_inclusive_by_default(self) -> None:
        assert first(daily(9), utc("2024-06-01T13:00")) == ["2024-06-01T13:00:00+00:00"]

    def test_occurrences_can_be_strictly_after(self) -> None:
        got = next(daily(9).occurrences(utc("2024-06-01T13:00"), inclusive=False))
        assert got.isoformat() == "2024-06-02T13:00:00+00:00"

    def test_next_after_is_strictly_after(self) -> None:
        assert daily(9).next_after(utc("2024-06-01T13:00")).isoformat() == "2024-06-02T13:00:00+00:00"
        assert daily(9).next_after(utc("2024-06-01T12:59:59")).isoformat() == "2024-06-01T13:00:00+00:00"

    def test_after_in_another_zone_is_the_same_instant(self) -> None:
        after = datetime(2024, 6, 1, 22, 0, tzinfo=ZoneInfo("Asia/Tokyo"))  # 13:00Z
        assert first(daily(9), after) == ["2024-06-01T13:00:00+00:00"]

    def test_an_occurrence_on_the_previous_local_date_can_still_be_after(self) -> None:
        # `after` is 2024-06-02 00:30 in Auckland (+12), i.e. 2024-06-01 12:30Z; the
        # Auckland schedule's 2024-06-02 00:00 occurrence (06-01 12:00Z) has passed,
        # so the 2024-06-03 one is next.
        after = utc("2024-06-01T12:30")
        assert first(daily(0, "Pacific/Auckland"), after) == ["2024-06-02T12:00:00+00:00"]

    def test_occurrences_are_strictly_ascending(self) -> None:
        got = occurrences_between(daily(2, "Antarctica/Troll"), utc("2024-01-01T00:00"), utc("2026-01-01T00:00"))
        assert all(a < b for a, b in zip(got, got[1:]))
        assert len(got) == 731

    def test_previous_at_an_occurrence_is_that_occurrence(self) -> None:
        assert weekly(1).previous(utc("2024-06-11T13:00")).isoformat() == "2024-06-11T13:00:00+00:00"

    def test_previous_just_before_an_occurrence_is_the_one_before(self) -> None:
        assert weekly(1).previous(utc("2024-06-11T12:59:59")).isoformat() == "2024-06-04T13:00:00+00:00"

    def test_previous_returns_utc(self) -> None:
        got = daily(9, "Asia/Kathmandu").previous(datetime(2024, 6, 1, 12, tzinfo=ZoneInfo("Asia/Kathmandu")))
        assert got is not None and got.tzinfo is UTC
        assert got.isoformat() == "2024-06-01T03:15:00+00:00"

    def test_previous_east_of_utc_can_be_on_the_next_local_date(self) -> None:
        # 2024-06-01 12:30Z is 2024-06-02 00:30 in Auckland; the 2024-06-02 00:00 run has happened.
        assert daily(0, "Pacific/Auckland").previous(utc("2024-06-01T12:30")).isoformat() == "2024-06-01T12:00:00+00:00"


class TestDescribe:
    @pytest.mark.parametrize(
        "schedule, expected",
        [
            (daily(9), "Every day at 09:00 (America/New_York)"),
            (weekly(1), "Every Tuesday at 09:00 (America/New_York)"),
            (weekly(6, 0, "UTC"), "Every Sunday at 00:00 (UTC)"),
            (monthly(15, 23), "On day 15 of every month at 23:00 (America/New_York)"),
            (monthly(28), "On day 28 of every month at 09:00 (America/New_York)"),
            (
                monthly(31),
                "On day 31 of every month at 09:00 (America/New_York); in shorter months, on the month's last day",
            ),
            (monthly("last"), "On the last day of every month at 09:00 (America/New_York)"),
        ],
        ids=["daily", "weekly", "weekly_sunday_midnight", "monthly", "monthly_28", "monthly_31", "monthly_last"],
    )
    def test_describe_reads_as_a_sentence(self, schedule: Schedule, expected: str) -> None:
        assert schedule.describe() == expected


class TestClampNote:
    @pytest.mark.parametrize("day", [29, 30, 31])
    def test_days_past_28_get_a_note(self, day: int) -> None:
        note = clamp_note(monthly(day))
        assert note is not None and f"day {day} does not exist in every month" in note

    @pytest.mark.parametrize(
        "schedule", [monthly(28), monthly(1), monthly("last"), weekly(1), daily(9)],
        ids=["day_28", "day_1", "last", "weekly", "daily"],
    )
    def test_no_note_when_the_day_always_exists(self, schedule: Schedule) -> None:
        assert clamp_note(schedule) is None


# ---------------------------------------------------------------------------
# Properties: an independent calendar engine (dateutil.rrule)
# ---------------------------------------------------------------------------

def rrule_occurrences(schedule: Schedule, start: datetime, end: datetime) -> List[datetime]:
    """Occurrences in [start, end] from dateutil.rrule, localized with fold=0."""
    zone = schedule.zone
    first_local = (start.astimezone(zone) - timedelta(days=3)).replace(
        hour=schedule.hour, minute=0, second=0, microsecond=0, tzinfo=None
    )
    last_local = (end.astimezone(zone) + timedelta(days=3)).replace(tzinfo=None)
    common = dict(dtstart=first_local, until=last_local, byhour=schedule.hour, byminute=0, bysecond=0)
    if schedule.mode == "daily":
        rule = rrule.rrule(rrule.DAILY, **common)
    elif schedule.mode == "weekly":
        rule = rrule.rrule(rrule.WEEKLY, byweekday=schedule.weekday, **common)
    elif schedule.day == "last":
        rule = rrule.rrule(rrule.MONTHLY, bymonthday=-1, **common)
    elif int(schedule.day) > 28:  # type: ignore[arg-type]
        rule = rrule.rrule(
            rrule.MONTHLY, bymonthday=list(range(28, int(schedule.day) + 1)), bysetpos=-1, **common  # type: ignore[arg-type]
        )
    else:
        rule = rrule.rrule(rrule.MONTHLY, bymonthday=schedule.day, **common)
    out = []
    for naive in rule:
        instant = naive.replace(tzinfo=zone, fold=0).astimezone(UTC)
        if start <= instant <= end:
            out.append(instant)
    return out


class TestCalendarProperties:
    @given(schedules(), nows)
    @example(Schedule(mode="monthly", hour=9, zone=ZoneInfo("America/New_York"), day=31), utc("2024-01-01T00:00"))
    @example(Schedule(mode="daily", hour=2, zone=ZoneInfo("Australia/Lord_Howe")), utc("2024-03-01T00:00"))
    @example(Schedule(mode="daily", hour=0, zone=ZoneInfo("America/Santiago")), utc("2024-03-01T00:00"))
    @example(Schedule(mode="weekly", hour=2, zone=ZoneInfo("Antarctica/Troll"), weekday=6), utc("2024-03-01T00:00"))
    @settings(max_examples=300, deadline=None)
    def test_occurrences_agree_with_dateutil_rrule_over_two_years(self, schedule: Schedule, now: datetime) -> None:
        end = now + TWO_YEARS
        expected = [i.isoformat() for i in rrule_occurrences(schedule, now, end)]
        got = [i.isoformat() for i in occurrences_between(schedule, now, end)]
        assert got == expected

    @given(schedules(), nows, st.lists(st.floats(0, 1), min_size=1, max_size=20))
    @example(
        Schedule(mode="daily", hour=1, zone=ZoneInfo("America/New_York")), utc("2024-10-01T00:00"), [0.0]
    )
    @settings(max_examples=300, deadline=None)
    def test_previous_is_the_last_occurrence_at_or_before(
        self, schedule: Schedule, now: datetime, fractions: List[float]
    ) -> None:
        end = now + timedelta(days=400)
        reference = rrule_occurrences(schedule, now - timedelta(days=40), end)
        probes = [now + (end - now) * f for f in fractions]
        # Probe exactly at occurrences and one microsecond either side, too.
        for occurrence in reference[40:44]:
            probes += [occurrence, occurrence - timedelta(microseconds=1), occurrence + timedelta(microseconds=1)]
        for t in probes:
            index = bisect.bisect_right(reference, t) - 1
            assert index >= 0
            got = schedule.previous(t)
            assert got is not None and got.isoformat() == reference[index].isoformat(), t.isoformat()

    @given(
        schedules(),
        nows,
        st.integers(-60, 400),
        st.one_of(st.none(), st.integers(-60 * 24 * 60, 400 * 24 * 60)),
    )
    @settings(max_examples=300, deadline=None)
    def test_start_and_saved_at_only_filter(
        self, base: Schedule, now: datetime, start_offset_days: int, saved_offset_minutes: Optional[int]
    ) -> None:
        # Rules 5 and 6: the bounded schedule is the base schedule minus the
        # occurrences on local dates before `start` or at instants before `saved_at`.
        start = (now.astimezone(base.zone) + timedelta(days=start_offset_days)).date()
        saved = None if saved_offset_minutes is None else now + timedelta(minutes=saved_offset_minutes)
        bounded = Schedule(
            mode=base.mode, hour=base.hour, zone=base.zone, day=base.day, weekday=base.weekday,
            start=start, saved_at=saved,
        )  # fmt: skip
        end = now + timedelta(days=500)
        expected = [
            i for i in occurrences_between(base, now, end)
            if i.astimezone(base.zone).date() >= start and (saved is None or i >= saved)
        ]  # fmt: skip
        assert occurrences_between(bounded, now, end) == expected
        # previous() respects the same bounds.
        for t in (now + timedelta(days=k) for k in (0, 30, 200, 450)):
            allowed = [i for i in expected if i <= t]
            before_now = bounded.previous(t)
            if allowed:
                assert before_now == allowed[-1]
            elif before_now is not None:
                # An allowed occurrence before `now` (outside the listed window) is fine.
                assert before_now < now
                assert before_now.astimezone(base.zone).date() >= start
                assert saved is None or before_now >= saved
