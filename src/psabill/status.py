"""What ``psabill status`` reports: a typed :class:`Status` that renders itself as text and as JSON.

:func:`build` reads the settings, the crontab and the ledger once; "now" and
the host zone are arguments. The JSON keys are stable and versioned
(``schema``; docs/json.md lists them). ``ledger`` names the history (SQLite
file or PostgreSQL URL without its password) and the hosts that ran;
``warnings`` flags runs from several hosts on a ledger they cannot share.

What needs the admin comes first in the text: changes held for approval, a
report that was never delivered, an occurrence being retried (how many items,
and when the next attempt is), missed occurrences.
"""

from datetime import datetime, timedelta, timezone, tzinfo
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Dict, List, NamedTuple, Optional

from psabill import __version__, outcomes
from psabill.config import readiness
from psabill.config.paths import Paths
from psabill.config.settings import Settings
from psabill.ledger.history import open_store
from psabill.report import JSON_SCHEMA, Run
from psabill.schedule.rules import WEEKDAYS, Schedule
from psabill.schedule.cronplan import next_retry
from psabill.schedule.crontab import CronView, cron_view
from psabill.text import clean, times
from psabill.text.files import human_duration

UTC = timezone.utc
MISSED_HORIZON = timedelta(days=60)
UNDELIVERED = ("pending", "failed")  # a report whose delivery was never confirmed (psabill.notify)
Paint = Callable[[str], str]


def stamp(instant: datetime, zone: tzinfo, host: tzinfo) -> Dict[str, str]:
    """One instant in the account zone, the host zone and UTC."""
    return {"account": instant.astimezone(zone).isoformat(), "host": instant.astimezone(host).isoformat(),
            "utc": instant.astimezone(UTC).isoformat()}


def next_occurrences(schedule: Schedule, now: datetime, host: tzinfo, count: int) -> List[Dict[str, str]]:
    """The next ``count`` occurrences after ``now``, stamped."""
    return [stamp(i, schedule.zone, host) for i in islice(schedule.occurrences(now, inclusive=False), count)]


class Missed(NamedTuple):
    occurrence: datetime
    attempts: int
    reason: str


class Retrying(NamedTuple):
    occurrence: datetime
    attempts: int
    last_reason: str
    pending: int  # items the last attempt did not finish
    next_attempt: Optional[datetime]
    until: datetime


class LedgerInfo(NamedTuple):
    kind: str
    where: str
    shared: bool
    hosts: List[str]


class Status(NamedTuple):
    """Everything ``status`` shows, typed."""

    config: Path
    config_exists: bool
    state_dir: Path
    account_name: str
    zone: Optional[tzinfo]
    host: tzinfo
    now: datetime
    settings: Settings
    cron: CronView
    ledger: LedgerInfo
    next_run: Optional[datetime] = None
    last_run: Optional[Run] = None
    missed: List[Missed] = []
    retrying: Optional[Retrying] = None
    held: List[Run] = []
    undelivered: Optional[Run] = None
    not_ready: List[str] = []
    warnings: List[str] = []

    @property
    def schedule(self) -> Optional[Schedule]:
        return self.settings.when

    def to_json(self) -> Dict[str, Any]:
        """The stable JSON document of ``status --json`` (docs/json.md)."""
        sched = self.schedule
        section = self.settings.schedule
        zone = self.zone or self.host
        return {
            "schema": JSON_SCHEMA,
            "version": __version__,
            "config": str(self.config),
            "config_exists": self.config_exists,
            "state_dir": str(self.state_dir),
            "account": {"name": self.account_name or None, "timezone": self.settings.account.timezone},
            "host_timezone": str(self.host),
            "now": self.now.astimezone(UTC).isoformat(),
            "schedule": None if sched is None else {
                "enabled": section.enabled, "description": sched.describe(), "mode": sched.mode, "day": sched.day,
                "weekday": WEEKDAYS[sched.weekday] if sched.weekday is not None else None, "hour": sched.hour,
                "timezone": str(sched.zone), "start": sched.start.isoformat() if sched.start else None,
                "saved_at": section.saved_at.isoformat() if section.saved_at else None,
                "enabled_at": section.enabled_at.isoformat() if section.enabled_at else None,
                "catch_up": duration_text(section.catch_up),
            },
            "next_run": None if self.next_run is None else {
                **stamp(self.next_run, zone, self.host), "left_seconds": int((self.next_run - self.now).total_seconds())},
            "cron": {"target": self.cron.where, "installed": bool(self.cron.installed), "lines": self.cron.installed,
                     "expected": self.cron.expected, "in_sync": self.cron.in_sync},
            "last_run": self.last_run.to_json(items=False) if self.last_run is not None else None,
            "held": [{"run": run.id, "items": run.count(outcomes.HELD), "started_at": run.started_at.isoformat()}
                     for run in self.held],
            "undelivered": None if self.undelivered is None else {
                "run": self.undelivered.id, "email": self.undelivered.email.status,
                "message": self.undelivered.email.message, "message_id": self.undelivered.email.message_id,
                "resent_by_next_firing": self.resent_by_next_firing},
            "missed": [m.occurrence.isoformat() for m in self.missed],
            "missed_details": [{"occurrence": m.occurrence.isoformat(), "attempts": m.attempts, "reason": m.reason}
                               for m in self.missed],
            "retrying": None if self.retrying is None else {
                "occurrence": self.retrying.occurrence.isoformat(), "attempts": self.retrying.attempts,
                "last_reason": self.retrying.last_reason, "items": self.retrying.pending,
                "next_attempt": stamp(self.retrying.next_attempt, zone, self.host)
                if self.retrying.next_attempt else None,
                "until": stamp(self.retrying.until, zone, self.host)},
            "notify": {"emails": list(self.settings.notify.emails), "report": self.report_text()},
            "not_ready": self.not_ready,
            "ledger": self.ledger._asdict(),
            "warnings": self.warnings,
        }

    @property
    def resent_by_next_firing(self) -> bool:
        """Whether the undelivered report is a scheduled one within catch-up, which the next firing re-sends."""
        run = self.undelivered
        section = self.settings.schedule
        return (run is not None and run.trigger == "scheduled" and run.occurrence is not None
                and self.schedule is not None and section.enabled and self.now - run.occurrence <= section.catch_up)

    def report_text(self) -> str:
        emails = self.settings.notify.emails
        if self.undelivered is not None:
            run = self.undelivered
            then = ("the next firing within catch-up sends it again, or " if self.resent_by_next_firing
                    else "send it with ")
            return (f"NOT delivered for run {run.id} ({run.email.status}: {clean.message(run.email.message)}); "
                    f"{then}'psabill email resend {run.id}'")
        if not emails:
            return "no report is sent (no addresses configured)"
        return f"emailed to {len(emails)} address(es) after each scheduled run"

    def text(self, paint: Paint = lambda s: s) -> str:
        """The text view; ``paint`` colours state words (the CLI passes click.style on a terminal)."""
        zone = self.zone or self.host
        host = self.host
        last = self.last_run
        out: List[str] = []
        next_col = times.short(self.next_run, zone)
        left_col = human_duration((self.next_run - self.now).total_seconds()) if self.next_run else "n/a"
        last_col = times.short(last.started_at, zone) if last else "n/a"
        passed_col = human_duration((self.now - last.started_at).total_seconds()) + " ago" if last else "n/a"
        out.append(f"{'NEXT':<30} {'LEFT':<10} {'LAST':<30} {'PASSED':<12} STATUS")
        out.append(f"{next_col:<30} {left_col:<10} {last_col:<30} {passed_col:<12} "
                   + paint(last.status if last else "n/a"))
        out.append("")
        for run in self.held:
            out.append(f"Held:       {paint('held for approval')}: run {run.id} ({run.count(outcomes.HELD)} change(s)); "
                       f"psabill history show {run.id}, then psabill approve {run.id} or psabill reject {run.id}")
        sched = self.schedule
        if sched is None:
            out.append("Schedule:   none saved (psabill schedule set --help)")
        else:
            out.append(f"Schedule:   {sched.describe()}" + ("" if self.settings.schedule.enabled else " [disabled]"))
        out.append(f"Zones:      account {self.settings.account.timezone or 'n/a'}, host {host}")
        if self.next_run:
            out.append(f"Next run:   {times.occurrence(self.next_run, zone, host)}")
        if last:
            out.append(f"Last run:   {last.status} ({last.trigger}) at {times.moment(last.started_at, zone, host)} "
                       f"on host {last.host or '-'}")
        cron = self.cron
        state = "installed" if cron.installed else "not installed"
        sync = paint("in sync" if cron.in_sync else "OUT OF SYNC: run 'psabill cron install'")
        out.append(f"Cron:       {state}, {sync} ({cron.where})")
        for line in cron.installed:
            out.append(f"            {line}")
        retrying = self.retrying
        if retrying:
            nxt = (f"next attempt at {times.occurrence(retrying.next_attempt, zone, host)}" if retrying.next_attempt
                   else "no attempt left before catch-up ends")
            out.append(f"Retrying:   {paint('retrying')}: {retrying.pending} item(s), {nxt}; occurrence "
                       f"{times.occurrence(retrying.occurrence, zone, host)}, {retrying.attempts} attempt(s), last: "
                       f"{clean.message(retrying.last_reason)}")
        for missed in self.missed:
            out.append(f"Missed:     {times.occurrence(missed.occurrence, zone, host)} ({clean.message(missed.reason)})")
        report = self.report_text()
        out.append(f"Report:     {paint(report) if self.undelivered is not None else report}")
        for gap in self.not_ready:
            out.append(f"Not ready:  {gap} (add it to the config; see 'psabill check')")
        for warning in self.warnings:
            out.append(f"Warning:    {warning}")
        ledger = self.ledger
        out.append(f"Ledger:     {ledger.kind} {ledger.where}" + (" (shared)" if ledger.shared else ""))
        out.append(f"Config:     {self.config}")
        out.append(f"State dir:  {self.state_dir}")
        return "\n".join(out)


def duration_text(value: timedelta) -> str:
    """``24h``, ``90m``, ``2d``: a duration as the config writes it."""
    seconds = int(value.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def missed_occurrences(schedule: Schedule, catch_up: timedelta, done: List[str], now: datetime) -> List[datetime]:
    """Occurrences in the last 60 days that never ran and are past catch-up."""
    cutoff = now - catch_up
    ran = set(done)
    missed = []
    for occurrence in schedule.occurrences(now - MISSED_HORIZON):
        if occurrence > cutoff:
            break
        if occurrence.isoformat() not in ran:
            missed.append(occurrence)
    return missed


def build(paths: Paths, settings: Settings, now: datetime, host: tzinfo) -> Status:
    """Read the crontab and the ledger and assemble the status."""
    schedule = settings.when
    enabled = schedule is not None and settings.schedule.enabled
    cron = cron_view(paths, settings, now, host)
    last: Optional[Run] = None
    done: List[str] = []
    attempts: Dict[str, Any] = {}
    hosts: List[str] = []
    held: List[Run] = []
    undelivered: Optional[Run] = None
    store = open_store(paths, settings.state_url, settings.account_id)
    if store.ledger.exists:
        with store.ledger as ledger:
            last = ledger.last_run(real=True)
            done = ledger.done_occurrences(now - MISSED_HORIZON - timedelta(days=1))
            attempts = ledger.attempts(now - MISSED_HORIZON - timedelta(days=1))
            hosts = ledger.hosts()
            held = ledger.held()
            if last is not None and last.email.status in UNDELIVERED:
                undelivered = last
            elif schedule is not None:  # a scheduled report the next firing re-sends, behind a later run
                undelivered = next(iter(ledger.undelivered(now - settings.schedule.catch_up, UNDELIVERED)), None)
    warnings = readiness.cron_env_warnings(settings)
    if len(hosts) > 1 and not store.shared:
        warnings.append(f"the history has runs from {len(hosts)} hosts ({', '.join(hosts)}) but no shared ledger: "
                        "run one scheduler per config, or set [state] url so the hosts share one")
    status = Status(
        config=paths.config, config_exists=settings.exists, state_dir=paths.state_dir,
        account_name=settings.account.name, zone=settings.zone, host=host, now=now, settings=settings, cron=cron,
        ledger=LedgerInfo(store.ledger.dialect.kind, store.ledger.where, store.shared, hosts),
        last_run=last, held=held, undelivered=undelivered,
        not_ready=readiness.missing(settings) if settings.exists else [], warnings=warnings,
    )
    if schedule is None:
        return status
    missed = [Missed(occurrence, attempts[occurrence.isoformat()].tries if occurrence.isoformat() in attempts else 0,
                     attempts[occurrence.isoformat()].reason if occurrence.isoformat() in attempts
                     else "no run was recorded (the host or cron was down)")
              for occurrence in missed_occurrences(schedule, settings.schedule.catch_up, done, now)]
    retrying = None
    due = schedule.previous(now) if enabled else None
    tried = attempts.get(due.isoformat()) if due is not None else None
    if due is not None and tried is not None and now - due <= settings.schedule.catch_up:
        retrying = Retrying(due, tried.tries, tried.reason, tried.pending,
                            next_retry(schedule, settings.schedule.catch_up, due, now, host),
                            due + settings.schedule.catch_up)
    return status._replace(missed=missed, retrying=retrying,
                           next_run=schedule.next_after(now) if enabled else None)
