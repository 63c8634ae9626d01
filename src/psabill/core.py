"""Application services behind the CLI: schedule <-> config, cron sync, status.

Each function takes the :class:`~psabill.context.Context`, "now" and the host
zone as arguments and returns plain data; ``cli.py`` renders it.
"""

from __future__ import annotations

import copy
import os
import sys
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone, tzinfo
from itertools import islice
from pathlib import Path
from typing import Any, Dict, List, Optional

from psabill import config as config_mod
from psabill.clock import load_zone
from psabill.config import Config
from psabill.context import Context
from psabill.errors import ConfigError, UsageError
from psabill.report import RunReport
from psabill.schedule import WEEKDAYS, Schedule, ScheduleError, parse_weekday

UTC = timezone.utc


# -- schedule <-> config ------------------------------------------------------


def account_zone(cfg: Config) -> Optional[tzinfo]:
    name = cfg.get("account.timezone")
    return load_zone(name) if name else None


def schedule_from(cfg: Config) -> Optional[Schedule]:
    """The configured schedule, or None when none is saved."""
    section = cfg.section("schedule")
    if not section.get("mode"):
        return None
    zone = account_zone(cfg)
    if zone is None:
        raise ConfigError(f"{cfg.path}: [schedule] is set but [account] timezone is missing")
    mode = section["mode"]
    try:
        return Schedule(
            mode=mode,
            hour=section.get("hour", 0),
            zone=zone,
            day=section.get("day") if mode == "monthly" else None,
            weekday=parse_weekday(section["weekday"]) if mode == "weekly" and "weekday" in section else None,
            start=section.get("start"),
            saved_at=section.get("saved_at"),
        )
    except ScheduleError as exc:
        raise ConfigError(f"{cfg.path}: [schedule] {exc}") from None


def schedule_enabled(cfg: Config) -> bool:
    return bool(cfg.get("schedule.enabled", True))


def describe_run(cfg: Config, report: RunReport, now: datetime) -> RunReport:
    """Fill what a report shows about the account and schedule, where still unset.

    A report rebuilt from the history (for ``email resend``/``preview``) gets
    the *current* schedule and next run.
    """
    report.account_name = report.account_name or cfg.get("account.name", "") or ""
    report.account_zone = cfg.get("account.timezone") or report.account_zone
    try:
        schedule = schedule_from(cfg)
    except ConfigError:
        schedule = None  # a broken [schedule] must not hold back a run's report
    if schedule is not None:
        report.schedule_text = report.schedule_text or schedule.describe()
        if report.next_run is None and schedule_enabled(cfg):
            report.next_run = schedule.next_after(now)
    return report


@dataclass
class ScheduleRequest:
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


@dataclass
class SavedSchedule:
    schedule: Schedule
    zone_from_host: bool
    data: Dict[str, Any]


def build_schedule(cfg: Config, request: ScheduleRequest, now: datetime, host: tzinfo) -> SavedSchedule:
    """The new config document for ``request``; nothing is written here."""
    data = copy.deepcopy(cfg.data)
    account = data.setdefault("account", {})
    zone_from_host = False
    if request.timezone:
        load_zone(request.timezone)
        account["timezone"] = request.timezone
    elif not account.get("timezone"):
        account["timezone"] = str(host)
        zone_from_host = True
    if request.account_name is not None:
        account["name"] = request.account_name
    saved_at = config_mod.utc_now_seconds(now)
    section: Dict[str, Any] = {
        "enabled": True,
        "mode": request.mode,
        "hour": request.hour,
        "saved_at": saved_at,
        "catch_up": request.catch_up or data.get("schedule", {}).get("catch_up", config_mod.DEFAULT_CATCH_UP),
    }
    if request.mode == "monthly":
        section["day"] = request.day
    if request.mode == "weekly":
        section["weekday"] = WEEKDAYS[int(request.weekday or 0)]
    if request.start is not None:
        section["start"] = request.start
    if request.catch_up is not None:
        problem = config_mod.check_catch_up(request.catch_up)
        if problem:
            raise UsageError(f"--catch-up {request.catch_up!r}: {problem}")
    data["schedule"] = section
    if request.emails is not None:
        data.setdefault("notify", {})["emails"] = request.emails
    config_mod.validate(data, cfg.path)
    schedule = schedule_from(Config(cfg.path, data))
    assert schedule is not None
    return SavedSchedule(schedule, zone_from_host, data)


def set_enabled(cfg: Config, enabled: bool) -> Dict[str, Any]:
    if schedule_from(cfg) is None:
        raise ConfigError(f"no schedule saved in {cfg.path}: run 'psabill schedule set' first")
    data = copy.deepcopy(cfg.data)
    data["schedule"]["enabled"] = enabled
    return data


# -- the cron command ---------------------------------------------------------


def executable() -> List[str]:
    """Absolute argv prefix that starts this psabill under cron's minimal PATH."""
    script = Path(sys.executable).parent / "psabill"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [os.path.abspath(sys.executable), "-m", "psabill"]


def cron_argv(ctx: Context) -> List[str]:
    from psabill.state import default_dir

    argv = executable() + ["--config", str(ctx.config_path)]
    if ctx.state_dir != default_dir():
        argv += ["--state-dir", str(ctx.state_dir)]
    return argv + ["run", "--scheduled"]


def desired_cron_lines(ctx: Context, cfg: Config, now: datetime, host: tzinfo) -> List[str]:
    """What the crontab should hold now for this config ([] when disabled)."""
    from psabill import cron, cronexpr

    schedule = schedule_from(cfg)
    if schedule is None or not schedule_enabled(cfg):
        return []
    expression = cronexpr.plan(schedule, host, now).expression
    return cron.desired_lines(expression, cron_argv(ctx))


def sync_cron(ctx: Context, cfg: Config, now: datetime, host: tzinfo) -> List[str]:
    from psabill import cron

    lines = desired_cron_lines(ctx, cfg, now, host)
    cron.Crontab(ctx.crontab_file).replace(lines)
    return lines


def apply(ctx: Context, old: Config, data: Dict[str, Any], now: datetime, host: tzinfo, *,
          install_cron: bool = True) -> List[str]:
    """Save ``data`` as the config and put the crontab in step with it.

    The crontab goes first: if it cannot be written, nothing changed. If the
    config then cannot be written, the crontab is put back in step with the
    old config, so the two never disagree.
    """
    new = Config(old.path, data)
    lines = sync_cron(ctx, new, now, host) if install_cron else desired_cron_lines(ctx, new, now, host)
    try:
        config_mod.save(old.path, data)
    except Exception:
        if install_cron:
            sync_cron(ctx, old, now, host)
        raise
    return lines


# -- next occurrences and status ---------------------------------------------


def stamp(instant: datetime, zone: tzinfo, host: tzinfo) -> Dict[str, str]:
    return {
        "account": instant.astimezone(zone).isoformat(),
        "host": instant.astimezone(host).isoformat(),
        "utc": instant.astimezone(UTC).isoformat(),
    }


def next_occurrences(schedule: Schedule, now: datetime, host: tzinfo, count: int) -> List[Dict[str, str]]:
    return [stamp(i, schedule.zone, host) for i in islice(schedule.occurrences(now, inclusive=False), count)]


def missed_occurrences(cfg: Config, schedule: Schedule, done: List[str], now: datetime) -> List[str]:
    """Occurrences in the last 60 days that never ran and are past catch-up."""
    horizon = now - timedelta(days=60)
    cutoff = now - cfg.catch_up
    ran = set(done)
    missed = []
    for occurrence in schedule.occurrences(horizon):
        if occurrence > cutoff:
            break
        if occurrence.isoformat() not in ran:
            missed.append(occurrence.isoformat())
    return missed


def human_delta(seconds: float) -> str:
    seconds = int(abs(seconds))
    days, rem = divmod(seconds, 86400)
    hours, rem = divmod(rem, 3600)
    minutes = rem // 60
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}min"
    return f"{minutes}min"


def status(ctx: Context, now: datetime, host: tzinfo) -> Dict[str, Any]:
    from psabill import cron

    cfg = ctx.load_config()
    schedule = schedule_from(cfg)
    enabled = schedule is not None and schedule_enabled(cfg)
    tab = cron.Crontab(ctx.crontab_file)
    installed = tab.lines()
    expected = desired_cron_lines(ctx, cfg, now, host)
    state = ctx.state()
    last = None
    done: List[str] = []
    if state.db_path.exists():
        row = state.last_run()
        last = row.to_json() if row else None
        done = state.done_occurrences(now - timedelta(days=61))
    result: Dict[str, Any] = {
        "config": str(ctx.config_path),
        "config_exists": cfg.exists,
        "state_dir": str(ctx.state_dir),
        "account": {"name": cfg.get("account.name"), "timezone": cfg.get("account.timezone")},
        "host_timezone": str(host),
        "now": now.astimezone(UTC).isoformat(),
        "schedule": None,
        "next_run": None,
        "cron": {
            "target": tab.where,
            "installed": bool(installed),
            "lines": installed,
            "expected": expected,
            "in_sync": installed == expected,
        },
        "last_run": last,
        "missed": [],
        "notify": {
            "emails": cfg.emails,
            "report": f"emailed to {len(cfg.emails)} address(es) after each scheduled run" if cfg.emails else "no report is sent (no addresses configured)",
        },
    }
    if schedule is not None:
        result["schedule"] = {
            "enabled": enabled,
            "description": schedule.describe(),
            "mode": schedule.mode,
            "day": schedule.day,
            "weekday": WEEKDAYS[schedule.weekday] if schedule.weekday is not None else None,
            "hour": schedule.hour,
            "timezone": str(schedule.zone),
            "start": schedule.start.isoformat() if schedule.start else None,
            "saved_at": schedule.saved_at.isoformat() if schedule.saved_at else None,
            "catch_up": cfg.get("schedule.catch_up", config_mod.DEFAULT_CATCH_UP),
        }
        result["missed"] = missed_occurrences(cfg, schedule, done, now)
        if enabled:
            upcoming = schedule.next_after(now)
            result["next_run"] = {
                **stamp(upcoming, schedule.zone, host),
                "left_seconds": int((upcoming - now).total_seconds()),
            }
    return result
