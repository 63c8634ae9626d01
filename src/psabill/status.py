"""What ``psabill status`` reports: a :class:`Status` view object that knows its JSON.

:func:`build` reads the settings, the crontab and the history once; "now" and
the host zone are arguments. The JSON keys are stable (the README lists them).
``ledger`` names the history (SQLite file or PostgreSQL URL without its
password) and the hosts that ran; ``warnings`` flags runs from several hosts on
a ledger they cannot share.

``missed`` stays a list of ISO strings; ``missed_details`` has one object per
missed occurrence with the last attempt's reason. ``retrying`` is set while the
due occurrence has aborted (or interrupted) attempts and a later firing within
catch-up will try it again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone, tzinfo
from itertools import islice
from typing import Any, Dict, List, Optional

from psabill.ledger.history import open_store, state_url
from psabill.config.paths import Paths
from psabill.schedule.rules import WEEKDAYS, Schedule
from psabill.config.settings import Settings

UTC = timezone.utc
MISSED_HORIZON = timedelta(days=60)


def stamp(instant: datetime, zone: tzinfo, host: tzinfo) -> Dict[str, str]:
    """One instant in the account zone, the host zone and UTC."""
    return {
        "account": instant.astimezone(zone).isoformat(),
        "host": instant.astimezone(host).isoformat(),
        "utc": instant.astimezone(UTC).isoformat(),
    }


def next_occurrences(schedule: Schedule, now: datetime, host: tzinfo, count: int) -> List[Dict[str, str]]:
    """The next ``count`` occurrences after ``now``, stamped."""
    return [stamp(i, schedule.zone, host) for i in islice(schedule.occurrences(now, inclusive=False), count)]


def next_attempt(minutes: Any, after: datetime, host: tzinfo) -> datetime:
    """The first cron firing after ``after`` at one of the host-wall ``minutes`` (hourly retry line)."""
    t = after.astimezone(UTC).replace(second=0, microsecond=0)
    for _ in range(24 * 60):
        t += timedelta(minutes=1)
        if t.astimezone(host).minute in minutes:
            return t
    return t  # unreachable: every hour has each minute


def missed_details(missed: List[str], attempts: Dict[str, Any]) -> List[Dict[str, Any]]:
    """One object per missed occurrence: how often it was tried and why the last try stopped."""
    rows = []
    for occurrence in missed:
        tried = attempts.get(occurrence)
        rows.append({"occurrence": occurrence, "attempts": tried.tries if tried else 0,
                     "reason": tried.reason if tried else "no run was recorded (the host or cron was down)"})
    return rows


def missed_occurrences(schedule: Schedule, catch_up: timedelta, done: List[str], now: datetime) -> List[str]:
    """Occurrences in the last 60 days that never ran and are past catch-up."""
    cutoff = now - catch_up
    ran = set(done)
    missed = []
    for occurrence in schedule.occurrences(now - MISSED_HORIZON):
        if occurrence > cutoff:
            break
        if occurrence.isoformat() not in ran:
            missed.append(occurrence.isoformat())
    return missed


@dataclass
class Status:
    """Everything ``status`` shows."""

    config: str
    config_exists: bool
    state_dir: str
    account: Dict[str, Optional[str]]
    host_timezone: str
    now: str
    cron: Dict[str, Any]
    notify: Dict[str, Any]
    schedule: Optional[Dict[str, Any]] = None
    next_run: Optional[Dict[str, Any]] = None
    last_run: Optional[Dict[str, Any]] = None
    missed: List[str] = field(default_factory=list)
    missed_details: List[Dict[str, Any]] = field(default_factory=list)
    retrying: Optional[Dict[str, Any]] = None
    not_ready: List[str] = field(default_factory=list)
    ledger: Dict[str, Any] = field(default_factory=dict)
    warnings: List[str] = field(default_factory=list)

    def to_json(self) -> Dict[str, Any]:
        """The stable JSON document of ``status --json``."""
        return {
            "config": self.config,
            "config_exists": self.config_exists,
            "state_dir": self.state_dir,
            "account": self.account,
            "host_timezone": self.host_timezone,
            "now": self.now,
            "schedule": self.schedule,
            "next_run": self.next_run,
            "cron": self.cron,
            "last_run": self.last_run,
            "missed": self.missed,
            "missed_details": self.missed_details,
            "retrying": self.retrying,
            "notify": self.notify,
            "not_ready": self.not_ready,
            "ledger": self.ledger,
            "warnings": self.warnings,
        }


def build(paths: Paths, settings: Settings, now: datetime, host: tzinfo) -> Status:
    """Read the crontab and the history and assemble the status."""
    from psabill.schedule import crontab
    from psabill.config import readiness
    from psabill.schedule import save as scheduling

    schedule = scheduling.schedule_of(settings)
    enabled = schedule is not None and settings.schedule.enabled
    tab = crontab.Crontab(paths.crontab_file, paths.config)
    installed = tab.lines()
    expected = scheduling.desired_lines(paths, settings, now, host, validate=False)
    last = None
    done: List[str] = []
    attempts: Dict[str, Any] = {}
    hosts: List[str] = []
    store = open_store(paths, state_url(settings.state_url))
    if store.history.exists:
        with store.history as history:
            row = history.last_run(real=True)
            last = row.to_json() if row else None
            done = history.done_occurrences(now - MISSED_HORIZON - timedelta(days=1))
            attempts = history.attempts(now - MISSED_HORIZON - timedelta(days=1))
            hosts = history.hosts()
    warnings = []
    if len(hosts) > 1 and not store.shared:
        warnings.append(f"the history has runs from {len(hosts)} hosts ({', '.join(hosts)}) but no shared ledger: "
                        "run one scheduler per config, or set [state] url so the hosts share one")
    emails = list(settings.notify.emails)
    status = Status(
        config=str(paths.config),
        config_exists=settings.exists,
        state_dir=str(paths.state_dir),
        account={"name": settings.account.name or None, "timezone": settings.account.timezone},
        host_timezone=str(host),
        now=now.astimezone(UTC).isoformat(),
        cron={"target": tab.where, "installed": bool(installed), "lines": installed, "expected": expected,
              "in_sync": installed == expected},
        notify={"emails": emails,
                "report": f"emailed to {len(emails)} address(es) after each scheduled run" if emails
                else "no report is sent (no addresses configured)"},
        last_run=last,
        not_ready=readiness.missing(settings) if settings.exists else [],
        ledger={"kind": store.history.dialect.kind, "where": store.history.where, "shared": store.shared,
                "hosts": hosts},
        warnings=readiness.cron_env_warnings(settings) + warnings,
    )
    if schedule is not None:
        status.schedule = {
            "enabled": enabled,
            "description": schedule.describe(),
            "mode": schedule.mode,
            "day": schedule.day,
            "weekday": WEEKDAYS[schedule.weekday] if schedule.weekday is not None else None,
            "hour": schedule.hour,
            "timezone": str(schedule.zone),
            "start": schedule.start.isoformat() if schedule.start else None,
            "saved_at": settings.schedule.saved_at.isoformat() if settings.schedule.saved_at else None,
            "enabled_at": settings.schedule.enabled_at.isoformat() if settings.schedule.enabled_at else None,
            "catch_up": settings.schedule.catch_up_text,
        }
        status.missed = missed_occurrences(schedule, settings.schedule.catch_up, done, now)
        status.missed_details = missed_details(status.missed, attempts)
        due = schedule.previous(now) if enabled else None
        tried = attempts.get(due.isoformat()) if due is not None else None
        if due is not None and tried is not None and now - due <= settings.schedule.catch_up:
            from psabill.schedule import cronplan

            attempt = next_attempt(cronplan.plan(schedule, host, now).minutes, now, host)
            last_chance = due + settings.schedule.catch_up
            status.retrying = {
                "occurrence": due.isoformat(), "attempts": tried.tries, "last_reason": tried.reason,
                "next_attempt": stamp(attempt, schedule.zone, host) if attempt <= last_chance else None,
                "until": stamp(last_chance, schedule.zone, host),
            }
        if enabled:
            upcoming = schedule.next_after(now)
            status.next_run = {**stamp(upcoming, schedule.zone, host),
                               "left_seconds": int((upcoming - now).total_seconds())}
    return status
