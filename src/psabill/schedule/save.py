"""The ``[schedule]`` codec and the config + crontab transaction.

* :func:`schedule_of` decodes the typed ``[schedule]`` settings into the pure
  :class:`~psabill.schedule.rules.Schedule`; :func:`plan_save` encodes a request the
  other way, into the settings that would be saved (nothing is written).
* :func:`apply` saves new settings and puts the crontab in step with them:
  the crontab goes first, so if it cannot be written nothing changed; if the
  config then cannot be written, the crontab is put back in step with the old
  settings. The two never disagree.
"""


import os
import sys
from datetime import date, datetime, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, NamedTuple, Optional

from psabill.config import settings as settings_mod
from psabill.clock import load_account_zone, load_zone
from psabill.errors import ConfigError, UsageError
from psabill.config.paths import Paths
from psabill.schedule.rules import WEEKDAYS, Schedule, ScheduleError, parse_weekday
from psabill.config.settings import Settings

if TYPE_CHECKING:  # reports load only where a run or a resend needs them
    from psabill.report import RunReport


def schedule_of(settings: Settings) -> Optional[Schedule]:
    """The configured schedule, or None when none is saved."""
    section = settings.schedule
    if not section.mode:
        return None
    if not settings.account.timezone:
        raise ConfigError(f"{settings.path}: [schedule] is set but [account] timezone is missing")
    zone = load_zone(settings.account.timezone)
    try:
        return Schedule(
            mode=section.mode,
            hour=section.hour,
            zone=zone,
            day=section.day if section.mode == "monthly" else None,
            weekday=parse_weekday(section.weekday) if section.mode == "weekly" and section.weekday else None,
            start=section.start,
            saved_at=_floor(section.saved_at, section.enabled_at),
        )
    except ScheduleError as exc:
        raise ConfigError(f"{settings.path}: [schedule] {exc}") from None


def _floor(saved_at: Optional[datetime], enabled_at: Optional[datetime]) -> Optional[datetime]:
    """No occurrence before the schedule was saved, nor before it was last enabled, ever runs."""
    moments = [m for m in (saved_at, enabled_at) if m is not None]
    return max(moments) if moments else None


def describe_run(settings: Settings, report: "RunReport", now: datetime) -> "RunReport":
    """Fill what a report shows about the account and schedule, where still unset.

    A report rebuilt from the history (for ``email resend``/``preview``) gets
    the *current* schedule and next run.
    """
    report.account_name = report.account_name or settings.account.name
    report.account_zone = settings.account.timezone or report.account_zone
    try:
        schedule = schedule_of(settings)
    except ConfigError:
        schedule = None  # a broken [schedule] must not hold back a run's report
    if schedule is not None:
        report.schedule_text = report.schedule_text or schedule.describe()
        if report.next_run is None and settings.schedule.enabled:
            report.next_run = schedule.next_after(now)
    return report


class ScheduleRequest(NamedTuple):
    """What ``schedule set`` was asked for, already parsed."""

    mode: str
    hour: int
    day: Optional[Any] = None
    weekday: Optional[int] = None
    timezone: Optional[str] = None
    start: Optional[date] = None
    emails: Optional[List[str]] = None
    account_name: Optional[str] = None
    catch_up: Optional[str] = None


class PlannedSave(NamedTuple):
    """The settings a ``schedule set`` would save, and how the zone was chosen."""

    schedule: Schedule
    zone_from_host: bool
    settings: Settings


def plan_save(current: Settings, request: ScheduleRequest, now: datetime, host: tzinfo) -> PlannedSave:
    """The new settings for ``request``; nothing is written here."""
    account = settings_mod.section_of(current, "account")
    zone_from_host = False
    if request.timezone:
        load_account_zone(request.timezone, "time zone")
        account["timezone"] = request.timezone
    elif not account.get("timezone"):
        account["timezone"] = str(host)
        zone_from_host = True
    if request.account_name is not None:
        account["name"] = request.account_name
    if request.catch_up is not None:
        problem = settings_mod.check_catch_up(request.catch_up)
        if problem:
            raise UsageError(f"--catch-up {request.catch_up!r}: {problem}")
    section: Dict[str, Any] = {
        "enabled": True,
        "mode": request.mode,
        "hour": request.hour,
        "saved_at": settings_mod.utc_now_seconds(now),
        "catch_up": request.catch_up or current.schedule.catch_up_text,
    }
    if request.mode == "monthly":
        section["day"] = request.day
    if request.mode == "weekly":
        section["weekday"] = WEEKDAYS[int(request.weekday or 0)]
    if request.start is not None:
        section["start"] = request.start
    old = current.schedule
    if old.mode and old.enabled and old.saved_at is not None and _same_occurrences(current, section, account):
        # Only --notify, --catch-up or the name changed: keep the saved moment (and the latest
        # enable), so an occurrence that is pending right now still runs.
        section["saved_at"] = old.saved_at
        if old.enabled_at is not None:
            section["enabled_at"] = old.enabled_at
    changes: Dict[str, Any] = {"account": account, "schedule": section}
    if request.emails is not None:
        notify = settings_mod.section_of(current, "notify")
        notify["emails"] = request.emails
        changes["notify"] = notify
    new = settings_mod.prospective(current, changes)
    schedule = schedule_of(new)
    assert schedule is not None
    return PlannedSave(schedule, zone_from_host, new)


def _same_occurrences(current: Settings, section: Dict[str, Any], account: Dict[str, Any]) -> bool:
    """Whether the new ``[schedule]`` section fires at exactly the saved schedule's occurrences."""
    old = settings_mod.section_of(current, "schedule")
    keys = ("mode", "hour", "day", "weekday", "start")
    return (all(old.get(k) == section.get(k) for k in keys)
            and current.account.timezone == account.get("timezone"))


def with_enabled(current: Settings, enabled: bool, now: datetime) -> Settings:
    """The settings with the schedule switched on or off; nothing is written.

    Enabling a disabled schedule records ``enabled_at``: an occurrence that fell
    due while it was off never runs late.
    """
    if schedule_of(current) is None:
        raise ConfigError(f"no schedule saved in {current.path}: run 'psabill schedule set' first")
    section = settings_mod.section_of(current, "schedule")
    if enabled and not current.schedule.enabled:
        section["enabled_at"] = settings_mod.utc_now_seconds(now)
    section["enabled"] = enabled
    return settings_mod.prospective(current, {"schedule": section})


# -- the cron command ---------------------------------------------------------


def executable() -> List[str]:
    """Absolute argv prefix that starts this psabill under cron's minimal PATH."""
    script = Path(sys.executable).parent / "psabill"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [os.path.abspath(sys.executable), "-m", "psabill"]


def command_prefix(paths: Paths) -> List[str]:
    """psabill with absolute ``--config`` and ``--state-dir``, for any scheduler to run.

    Cron and systemd set no ``XDG_*`` variables, so a default resolved in the
    admin's shell could differ from theirs; spelling both out makes every
    scheduler and the admin read the same state.
    """
    return executable() + ["--config", str(paths.config), "--state-dir", str(paths.state_dir)]


def cron_argv(paths: Paths) -> List[str]:
    """The command cron runs."""
    return command_prefix(paths) + ["run", "--scheduled"]


def desired_lines(paths: Paths, settings: Settings, now: datetime, host: tzinfo, *,
                  validate: bool = True) -> List[str]:
    """What the crontab should hold now for this config ([] when disabled).

    ``validate=False`` is for read-only views: it skips python-crontab's check.
    """
    from psabill.schedule import cronplan
    from psabill.schedule import crontab

    schedule = schedule_of(settings)
    if schedule is None or not settings.schedule.enabled:
        return []
    planned = cronplan.plan(schedule, host, now)
    return crontab.desired_lines(planned.expression, cron_argv(paths), paths.config,
                                 retry=planned.retry_expression, validate=validate)


def sync_cron(paths: Paths, settings: Settings, now: datetime, host: tzinfo) -> List[str]:
    """Write this config's crontab lines; return them."""
    from psabill.schedule import crontab

    lines = desired_lines(paths, settings, now, host)
    crontab.Crontab(paths.crontab_file, paths.config).replace(lines)
    return lines


def apply(paths: Paths, old: Settings, new: Settings, now: datetime, host: tzinfo, *,
          install_cron: bool = True) -> List[str]:
    """Save ``new`` as the config and put the crontab in step with it (see the module docstring)."""
    lines = sync_cron(paths, new, now, host) if install_cron else desired_lines(paths, new, now, host)
    try:
        settings_mod.write(new)
    except Exception:
        if install_cron:
            sync_cron(paths, old, now, host)
        raise
    return lines
