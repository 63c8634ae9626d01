"""Saving a schedule: the settings ``schedule set`` would save, and the config + crontab transaction.

* :func:`plan_save` encodes a request into the settings that would be saved
  (nothing is written); the schedule itself is decoded once, in the settings.
* :func:`apply` saves new settings and puts the crontab in step with them:
  the crontab goes first, so if it cannot be written nothing changed; if the
  config then cannot be written, the crontab is put back in step with the old
  settings. The two never disagree.
"""


from datetime import date, datetime, tzinfo
from typing import Any, Dict, List, NamedTuple, Optional

from psabill.clock import load_account_zone
from psabill.config import edit
from psabill.config.paths import Paths
from psabill.config.schema import SCHEMA
from psabill.config.settings import Settings, utc_seconds
from psabill.errors import ConfigError, UsageError
from psabill.schedule.crontab import desired_lines, sync_cron
from psabill.schedule.rules import WEEKDAYS, Schedule


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
    account = edit.section_of(current, "account")
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
        problem = SCHEMA.schedule.KEYS["catch_up"].check(request.catch_up)
        if problem:
            raise UsageError(f"--catch-up {request.catch_up!r}: {problem}")
    section: Dict[str, Any] = {
        "enabled": True,
        "mode": request.mode,
        "hour": request.hour,
        "saved_at": utc_seconds(now),
        "catch_up": request.catch_up or edit.section_of(current, "schedule").get("catch_up", "24h"),
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
        notify = edit.section_of(current, "notify")
        notify["emails"] = request.emails
        changes["notify"] = notify
    new = edit.prospective(current, changes)
    assert new.when is not None
    return PlannedSave(new.when, zone_from_host, new)


def _same_occurrences(current: Settings, section: Dict[str, Any], account: Dict[str, Any]) -> bool:
    """Whether the new ``[schedule]`` section fires at exactly the saved schedule's occurrences."""
    old = edit.section_of(current, "schedule")
    keys = ("mode", "hour", "day", "weekday", "start")
    return (all(old.get(k) == section.get(k) for k in keys)
            and current.account.timezone == account.get("timezone"))


def with_enabled(current: Settings, enabled: bool, now: datetime) -> Settings:
    """The settings with the schedule switched on or off; nothing is written.

    Enabling a disabled schedule records ``enabled_at``: an occurrence that fell
    due while it was off never runs late.
    """
    if current.when is None:
        raise ConfigError(f"no schedule saved in {current.path}: run 'psabill schedule set' first")
    section = edit.section_of(current, "schedule")
    if enabled and not current.schedule.enabled:
        section["enabled_at"] = utc_seconds(now)
    section["enabled"] = enabled
    return edit.prospective(current, {"schedule": section})


def apply(paths: Paths, old: Settings, new: Settings, now: datetime, host: tzinfo, *,
          install_cron: bool = True) -> List[str]:
    """Save ``new`` as the config and put the crontab in step with it (see the module docstring)."""
    lines = sync_cron(paths, new, now, host) if install_cron else desired_lines(paths, new, now, host)
    try:
        edit.write(new)
    except Exception:
        if install_cron:
            sync_cron(paths, old, now, host)
        raise
    return lines

