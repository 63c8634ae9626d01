"""When a recurring billing update is due: the pure schedule core.

Nothing here reads the clock or touches a file. "Now" and every zone are
arguments; every instant returned is an aware ``datetime`` in UTC.

Policy (the README repeats it; each rule has a test named after it):

1. **Modes.** ``monthly`` on a day 1-31 or ``"last"``; ``weekly`` on a weekday
   (0 = Monday); ``daily``. Each fires once per period at ``hour``:00 in the
   account zone. Only full hours exist.
2. **Short months clamp.** A monthly day past the end of a month fires on that
   month's last day: the 31st fires on Feb 28 (Feb 29 in leap years), Apr 30...
   ``"last"`` is always the month's last day.
3. **Spring-forward gap.** A wall time the account zone skips fires at the
   same wall time shifted forward by the gap: 02:00 on a day where 02:00-03:00
   does not exist fires at 03:00 (the instant ``fold=0`` resolves to).
4. **Repeated hour.** A wall time the account zone passes twice fires once,
   at its first pass (``fold=0``).
5. **Start date.** With ``start``, no occurrence falls on an account-local
   date before it.
6. **Saved moment.** No occurrence earlier than ``saved_at`` ever fires, so
   saving a schedule never triggers a run for a time already past.

Rules 3 and 4 are exactly how :mod:`zoneinfo` resolves a naive wall time with
``fold=0``, so one function, :func:`resolve`, applies both.
"""


from datetime import date, datetime, time, timedelta, timezone, tzinfo
from typing import Any, Iterator, NamedTuple, Optional, Union

UTC = timezone.utc

MODES = ("monthly", "weekly", "daily")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
WEEKDAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

Day = Union[int, str]  # 1..31 or "last"


class ScheduleError(ValueError):
    """A schedule field is out of range; the message names the value."""


def parse_weekday(value: str) -> int:
    """``tue``, ``Tuesday``, ``TUE``, ``Tues``, ``tu`` -> 1: a name, or a prefix of one (two letters or
    more) that no other weekday shares. Unknown or ambiguous names raise ScheduleError."""
    key = value.strip().lower().rstrip(".")
    matches = [index for index, full in enumerate(WEEKDAY_NAMES)
               if len(key) >= 2 and full.lower().startswith(key)]
    if len(matches) == 1:
        return matches[0]
    raise ScheduleError(f"unknown weekday {value!r}: use mon..sun or a full name such as Tuesday")


def parse_day(value: Union[int, str]) -> Day:
    """``1``..``31`` or ``last``; anything else raises ScheduleError."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "last":
            return "last"
        if not text.isdecimal():
            raise ScheduleError(f"day {value!r} is not 1-31 or 'last'")
        value = int(text)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 31:
        raise ScheduleError(f"day {value!r} is not 1-31 or 'last'")
    return value


def parse_hour(value: Union[int, str]) -> int:
    """``0``..``23``; ``9:30`` is refused with "full hours only"."""
    if isinstance(value, str):
        text = value.strip()
        if ":" in text:
            hh, _, mm = text.partition(":")
            if hh.isdecimal() and mm.isdecimal() and int(mm) == 0 and len(mm) == 2:
                text = hh
            else:
                raise ScheduleError(f"hour {value!r}: full hours only (0-23)")
        if not text.isdecimal():
            raise ScheduleError(f"hour {value!r} is not 0-23")
        value = int(text)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 23:
        raise ScheduleError(f"hour {value!r} is not 0-23 (full hours only)")
    return value


class _Fields(NamedTuple):
    mode: str
    hour: int
    zone: tzinfo
    day: Optional[Day] = None  # monthly only
    weekday: Optional[int] = None  # weekly only, 0 = Monday
    start: Optional[date] = None
    saved_at: Optional[datetime] = None  # aware


class Schedule(_Fields):
    """A recurring billing update, in the account's zone: immutable, and checked when built.

    A NamedTuple (not a frozen dataclass) because the not-due cron path builds
    one on every firing; see :mod:`psabill.config.settings`.
    """

    __slots__ = ()

    def __new__(cls, *args: Any, **kwargs: Any) -> "Schedule":
        self = super().__new__(cls, *args, **kwargs)
        self._check()
        return self

    def _check(self) -> None:
        if self.mode not in MODES:
            raise ScheduleError(f"mode {self.mode!r} is not one of {', '.join(MODES)}")
        parse_hour(self.hour)
        if self.mode == "monthly":
            if self.day is None:
                raise ScheduleError("a monthly schedule needs a day (1-31 or 'last')")
            parse_day(self.day)
        elif self.day is not None:
            raise ScheduleError(f"day {self.day!r} only applies to a monthly schedule")
        if self.mode == "weekly":
            if self.weekday is None or not 0 <= self.weekday <= 6:
                raise ScheduleError(f"weekday {self.weekday!r} is not 0-6 (Monday = 0)")
        elif self.weekday is not None:
            raise ScheduleError(f"weekday {self.weekday!r} only applies to a weekly schedule")
        if self.saved_at is not None and self.saved_at.tzinfo is None:
            raise ScheduleError("saved_at must carry a UTC offset")

    # -- the calendar, in account-local dates -------------------------------

    def day_in(self, year: int, month: int) -> int:
        """The monthly schedule's day in this month, clamped to its length (rule 2)."""
        import calendar  # monthly schedules only; the not-due cron path rarely needs it

        last = calendar.monthrange(year, month)[1]
        return last if self.day == "last" else min(int(self.day or 1), last)

    def _matches(self, d: date) -> bool:
        if self.mode == "daily":
            return True
        if self.mode == "weekly":
            return d.weekday() == self.weekday
        return d.day == self.day_in(d.year, d.month)

    def _dates_from(self, d: date) -> Iterator[date]:
        """Matching local dates >= d, ascending."""
        if self.mode == "daily":
            step = timedelta(days=1)
        elif self.mode == "weekly":
            d += timedelta(days=(int(self.weekday or 0) - d.weekday()) % 7)
            step = timedelta(days=7)
        else:
            year, month = d.year, d.month
            if d.day > self.day_in(year, month):
                year, month = (year + 1, 1) if month == 12 else (year, month + 1)
            while True:
                yield date(year, month, self.day_in(year, month))
                year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        while True:
            yield d
            d += step

    def _dates_before(self, d: date) -> Iterator[date]:
        """Matching local dates <= d, descending."""
        if self.mode == "daily":
            step = timedelta(days=1)
        elif self.mode == "weekly":
            d -= timedelta(days=(d.weekday() - int(self.weekday or 0)) % 7)
            step = timedelta(days=7)
        else:
            year, month = d.year, d.month
            if d.day < self.day_in(year, month):
                year, month = (year - 1, 12) if month == 1 else (year, month - 1)
            while True:
                yield date(year, month, self.day_in(year, month))
                year, month = (year - 1, 12) if month == 1 else (year, month - 1)
        while True:
            yield d
            d -= step

    # -- instants ---------------------------------------------------------------

    def resolve(self, d: date) -> datetime:
        """The UTC instant of ``hour``:00 on local date ``d`` (rules 3 and 4)."""
        return datetime.combine(d, time(self.hour), tzinfo=self.zone).astimezone(UTC)

    def _earliest(self) -> Optional[datetime]:
        """The earliest instant allowed by ``start`` and ``saved_at`` (rules 5, 6)."""
        bounds = []
        if self.saved_at is not None:
            bounds.append(self.saved_at.astimezone(UTC))
        if self.start is not None:
            bounds.append(datetime.combine(self.start, time(0), tzinfo=self.zone).astimezone(UTC))
        return max(bounds) if bounds else None

    def _allowed(self, d: date, instant: datetime, earliest: Optional[datetime]) -> bool:
        if self.start is not None and d < self.start:
            return False
        return earliest is None or instant >= earliest

    def occurrences(self, after: datetime, inclusive: bool = True) -> Iterator[datetime]:
        """Occurrences at or after ``after`` (strictly after when not inclusive), ascending."""
        after = after.astimezone(UTC)
        earliest = self._earliest()
        # Start a day early: a local date's instant can precede the local date of `after`.
        first = after.astimezone(self.zone).date() - timedelta(days=1)
        for d in self._dates_from(first):
            instant = self.resolve(d)
            if instant < after or (instant == after and not inclusive):
                continue
            if self._allowed(d, instant, earliest):
                yield instant

    def previous(self, at: datetime) -> Optional[datetime]:
        """The latest occurrence at or before ``at``, or None if none is allowed."""
        at = at.astimezone(UTC)
        earliest = self._earliest()
        for d in self._dates_before(at.astimezone(self.zone).date() + timedelta(days=1)):
            instant = self.resolve(d)
            if instant > at:
                continue
            if earliest is not None and instant < earliest:
                return None
            if self.start is not None and d < self.start:
                return None
            return instant
        return None  # pragma: no cover - the date iterators are infinite

    def next_after(self, at: datetime) -> datetime:
        """The first occurrence strictly after ``at``."""
        return next(self.occurrences(at, inclusive=False))

    # -- words ------------------------------------------------------------------

    def describe(self) -> str:
        """The schedule as a sentence, e.g. "Every Tuesday at 09:00 (America/New_York)"."""
        at = f"{self.hour:02d}:00 ({self.zone})"
        if self.mode == "daily":
            text = f"Every day at {at}"
        elif self.mode == "weekly":
            text = f"Every {WEEKDAY_NAMES[int(self.weekday or 0)]} at {at}"
        elif self.day == "last":
            text = f"On the last day of every month at {at}"
        else:
            text = f"On day {self.day} of every month at {at}"
            if int(self.day or 0) > 28:
                text += "; in shorter months, on the month's last day"
        if self.start is not None:
            text += f", starting {self.start.isoformat()}"
        return text


def clamp_note(schedule: Schedule) -> Optional[str]:
    """The notice printed when a monthly day does not exist in every month."""
    if schedule.mode == "monthly" and schedule.day != "last" and int(schedule.day or 0) > 28:
        return (
            f"Note: day {schedule.day} does not exist in every month; in shorter months the "
            "update runs on the month's last day (Feb 28/29, Apr 30, ...)."
        )
    return None
