"""Zones and Hypothesis strategies shared by the schedule-core tests.

The zones cover northern and southern DST, DST at midnight (Havana, Santiago),
a 30-minute shift (Lord_Howe), a 2-hour shift (Troll), "negative" DST
(Dublin, Casablanca), :30/:45 offsets, and zones that dropped DST.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import List
from zoneinfo import ZoneInfo

from hypothesis import strategies as st

from psabill.schedule.rules import MODES, Schedule

UTC = timezone.utc
TWO_YEARS = timedelta(days=731)

ZONES = (
    "America/New_York",
    "America/Chicago",
    "America/Denver",
    "America/Phoenix",
    "America/Los_Angeles",
    "America/Anchorage",
    "Pacific/Honolulu",
    "America/St_Johns",
    "America/Havana",
    "America/Santiago",
    "America/Sao_Paulo",
    "Europe/London",
    "Europe/Dublin",
    "Europe/Berlin",
    "Europe/Moscow",
    "Africa/Casablanca",
    "Asia/Tehran",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Asia/Tokyo",
    "Asia/Shanghai",
    "Australia/Sydney",
    "Australia/Adelaide",
    "Australia/Lord_Howe",
    "Pacific/Auckland",
    "Pacific/Chatham",
    "Antarctica/Troll",
    "UTC",
)


def utc(text: str) -> datetime:
    """An aware UTC datetime from 'YYYY-MM-DDTHH:MM[:SS]'."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def occurrences_between(schedule: Schedule, start: datetime, end: datetime) -> List[datetime]:
    out = []
    for instant in schedule.occurrences(start):
        if instant > end:
            break
        out.append(instant)
    return out


@st.composite
def schedules(draw: st.DrawFn) -> Schedule:
    mode = draw(st.sampled_from(MODES))
    hour = draw(st.integers(0, 23))
    zone = ZoneInfo(draw(st.sampled_from(ZONES)))
    if mode == "monthly":
        day = draw(st.one_of(st.integers(1, 31), st.just("last")))
        return Schedule(mode=mode, hour=hour, zone=zone, day=day)
    if mode == "weekly":
        return Schedule(mode=mode, hour=hour, zone=zone, weekday=draw(st.integers(0, 6)))
    return Schedule(mode=mode, hour=hour, zone=zone)


nows = st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2032, 12, 31, 23, 59, 59)).map(
    lambda d: d.replace(tzinfo=UTC)
)
