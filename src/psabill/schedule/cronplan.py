"""The host-time cron expression that fires at every occurrence: pure.

Cron fires in the host's zone, which can differ from the account's. We take
every occurrence over the horizon (four years and a day, so a Feb 29 is always
inside), convert each to host wall time, and install the smallest expression
-- the product of the minutes, hours and days seen -- that contains all of
them. Extra firings are harmless: the guard in ``run --scheduled`` only runs
an occurrence that is due and has not run.

Debian's cron (what most hosts run) treats fixed-time jobs specially around
the host's own DST changes, and so must we:

* a fixed time skipped by a spring-forward runs right after the change. That
  only ever adds firings, because a real occurrence never has a skipped host
  wall time;
* a fixed time inside a repeated hour runs only on the *first* pass. An
  occurrence whose host wall time falls on the *second* pass cannot fire at its
  minute. For each such occurrence we add the host wall time one hour later
  (more, if that is still a second pass), so it runs at that firing, at most
  three hours late. These are the only late occurrences; :class:`CronPlan`
  lists them.

Day-of-month and day-of-week are never both restricted: cron ORs them.

A run aborted before any write (PSA unreachable, credentials refused, source
unreadable) does not consume its occurrence; :attr:`CronPlan.retry_expression`
fires hourly at the same minutes so a later firing retries it within catch-up.
"""

from datetime import datetime, timedelta, timezone, tzinfo
from typing import FrozenSet, NamedTuple, Optional, Tuple

from psabill.schedule.rules import Schedule

UTC = timezone.utc
HORIZON = timedelta(days=4 * 365 + 2)
MAX_LATENESS = timedelta(hours=3)


def is_second_pass(instant: datetime, zone: tzinfo) -> bool:
    """True when the instant's wall time in ``zone`` is the second of two."""
    local = instant.astimezone(zone)
    if not local.fold:
        return False
    first = local.replace(fold=0)
    return first.utcoffset() != local.utcoffset()


class LateOccurrence(NamedTuple):
    occurrence: datetime  # UTC
    fires_at: datetime  # UTC, the firing that runs it


class CronPlan(NamedTuple):
    minutes: FrozenSet[int]
    hours: FrozenSet[int]
    days: Optional[FrozenSet[int]]  # day-of-month, None = '*'
    weekdays: Optional[FrozenSet[int]]  # cron numbering, 0 = Sunday; None = '*'
    late: Tuple[LateOccurrence, ...]

    @property
    def expression(self) -> str:
        return " ".join(
            (
                _field(self.minutes),
                _field(self.hours),
                _field(self.days),
                "*",
                _field(self.weekdays),
            )
        )

    @property
    def retry_expression(self) -> str:
        """Hourly at the occurrences' minutes: the firings that retry an aborted run."""
        return f"{_field(self.minutes)} * * * *"

    def matches(self, wall: datetime) -> bool:
        """Whether the expression matches a host wall time (ignoring DST quirks)."""
        return (
            wall.minute in self.minutes
            and wall.hour in self.hours
            and (self.days is None or wall.day in self.days)
            and (self.weekdays is None or (wall.weekday() + 1) % 7 in self.weekdays)
        )


def _field(values: Optional[FrozenSet[int]]) -> str:
    if values is None:
        return "*"
    return ",".join(str(v) for v in sorted(values))


def plan(schedule: Schedule, host: tzinfo, now: datetime) -> CronPlan:
    """The expression for ``schedule`` on a host in zone ``host``, valid from ``now``."""
    # Ignore saved_at/start: the expression must also cover the schedule's later life.
    base = Schedule(
        mode=schedule.mode,
        hour=schedule.hour,
        zone=schedule.zone,
        day=schedule.day,
        weekday=schedule.weekday,
    )
    end = now + HORIZON
    needed = []  # host wall times that must match
    second_pass = []
    for occurrence in base.occurrences(now):
        if occurrence > end:
            break
        if is_second_pass(occurrence, host):
            second_pass.append(occurrence)
            needed.append(_late_target(occurrence, host).astimezone(host))
        else:
            needed.append(occurrence.astimezone(host))

    minutes = frozenset(w.minute for w in needed)
    hours = frozenset(w.hour for w in needed)
    days: Optional[FrozenSet[int]] = None
    weekdays: Optional[FrozenSet[int]] = None
    if schedule.mode == "monthly":
        days = frozenset(w.day for w in needed)
    elif schedule.mode == "weekly":
        weekdays = frozenset((w.weekday() + 1) % 7 for w in needed)
    candidate = CronPlan(minutes, hours, days, weekdays, ())
    late = tuple(
        LateOccurrence(occurrence, _first_firing(candidate, occurrence, host))
        for occurrence in second_pass
    )
    return CronPlan(minutes, hours, days, weekdays, late)


def _late_target(occurrence: datetime, host: tzinfo) -> datetime:
    """The first whole hour after ``occurrence`` that cron can fire at."""
    for hours in range(1, 4):
        target = occurrence + timedelta(hours=hours)
        if not is_second_pass(target, host):
            return target
    raise ValueError(f"host zone {host} repeats more than three hours at {occurrence.isoformat()}")


def _first_firing(plan_: CronPlan, after: datetime, host: tzinfo) -> datetime:
    """The first minute at or after ``after`` at which Debian cron runs the plan."""
    t = after.replace(second=0, microsecond=0)
    for _ in range(int(MAX_LATENESS.total_seconds() // 60) + 1):
        if not is_second_pass(t, host) and plan_.matches(t.astimezone(host)):
            return t
        t += timedelta(minutes=1)
    raise ValueError(f"no firing within three hours of {after.isoformat()}")


def expression(schedule: Schedule, host: tzinfo, now: datetime) -> str:
    """Shorthand for ``plan(...).expression``."""
    return plan(schedule, host, now).expression



def next_retry(schedule: Schedule, catch_up: timedelta, occurrence: datetime, now: datetime, host: tzinfo
               ) -> Optional[datetime]:
    """The first hourly retry firing after ``now`` still within the occurrence's catch-up, or None.

    ``status``, the email and the guard all name this one firing.
    """
    minutes = plan(schedule, host, now).minutes
    last_chance = occurrence + catch_up
    t = now.astimezone(UTC).replace(second=0, microsecond=0)
    for _ in range(24 * 60):
        t += timedelta(minutes=1)
        if t > last_chance:
            return None
        if t.astimezone(host).minute in minutes:
            return t
    return None
