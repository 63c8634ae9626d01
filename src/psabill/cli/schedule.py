"""``psabill schedule``: set, show, next, enable, disable."""

from __future__ import annotations

import difflib
import re
from datetime import date
from pathlib import Path
from typing import Any, Optional, Tuple

import click

from psabill import clock
from psabill import status as status_mod
from psabill.cli.options import App, complete_weekday, complete_zone, echo, json_option, pass_app
from psabill.cli.render import emit_json
from psabill.config import readiness
from psabill.config.addresses import parse_list
from psabill.config.keys import check_date
from psabill.errors import ConfigError, UsageError
from psabill.ledger.lock import config_lock
from psabill.schedule import export, save
from psabill.schedule.crontab import command_prefix
from psabill.schedule.rules import (
    WEEKDAY_NAMES,
    WEEKDAYS,
    ScheduleError,
    clamp_note,
    parse_day,
    parse_hour,
    parse_weekday,
)
from psabill.status import next_occurrences
from psabill.text import files as fsutil
from psabill.text import times


def warn_not_ready(settings: Any) -> None:
    """Say what is still missing and which secrets cron will lack (stderr)."""
    for gap in readiness.missing(settings):
        echo(f"Not ready: {gap}: scheduled runs will fail until it is added to {settings.path}", err=True)
    for warning in readiness.cron_env_warnings(settings):
        echo(f"Warning: {warning}", err=True)


@click.group()
def schedule() -> None:
    """Save, inspect and switch the recurring billing update.

    \b
    Example:
      psabill schedule set --monthly last --hour 23 --timezone Europe/London
      psabill schedule next --count 5
    """


def _day(value: Optional[str]) -> Any:
    if value is None:
        return None
    try:
        return parse_day(value)
    except ScheduleError as exc:
        raise UsageError(f"--monthly: {exc}") from None


def _hour(text: str) -> Tuple[int, Optional[str]]:
    """``9`` -> 9; ``9am`` / ``9pm`` / ``12am`` -> 9 / 21 / 0, with a note saying how it was read."""
    match = re.fullmatch(r"\s*(\d{1,2})\s*([ap])\.?m\.?\s*", text, re.IGNORECASE)
    if match and 1 <= int(match.group(1)) <= 12:
        value = int(match.group(1)) % 12 + (12 if match.group(2).lower() == "p" else 0)
        return value, f"Read --hour {text.strip()} as {value} (hours are 0-23)."
    return parse_hour(text), None


def _weekday_hint(exc: Exception, value: Optional[str]) -> str:
    """`` (did you mean tue?)`` for a near miss such as ``tues``."""
    if value is None or "weekday" not in str(exc):
        return ""
    names = {**{d: d for d in WEEKDAYS}, **{n.lower(): d for n, d in zip(WEEKDAY_NAMES, WEEKDAYS)}}
    key = value.strip().lower()
    guess = next((d for d in WEEKDAYS if key.startswith(d)), None)
    if guess is None:
        close = difflib.get_close_matches(key, list(names), n=1, cutoff=0.6)
        guess = names[close[0]] if close else None
    return f" (did you mean {guess}?)" if guess else ""


@schedule.command("set")
@click.option("--monthly", "monthly", metavar="DAY", multiple=True,
              help="Run monthly on DAY (1-31 or 'last'; days past a month's end run on its last day).")
@click.option("--weekly", "weekly", metavar="WEEKDAY", multiple=True, shell_complete=complete_weekday,
              help="Run weekly on WEEKDAY (mon..sun or a full name).")
@click.option("--daily", is_flag=True, help="Run every day.")
@click.option("--hour", metavar="H", multiple=True, help="Full hour 0-23 in the account time zone (9am / 9pm also read).")
@click.option("--timezone", "tz_name", metavar="ZONE", shell_complete=complete_zone,
              help="Account time zone (IANA name). Default: the saved one, else the host's.")
@click.option("--notify", metavar="ADDRESSES", help="Comma-separated addresses that get the results email.")
@click.option("--start", metavar="YYYY-MM-DD", help="No run before this date (account zone).")
@click.option("--account-name", metavar="NAME", help="Account name used in the report.")
@click.option("--catch-up", metavar="DURATION", help="How late a missed occurrence may still run (default 24h, minimum 3h).")
@click.option("--no-cron", is_flag=True, help="Save the config but leave the crontab alone.")
@json_option
@pass_app
def set_(app: App, monthly: Tuple[str, ...], weekly: Tuple[str, ...], daily: bool, hour: Tuple[str, ...],
         tz_name: Optional[str],
         notify: Optional[str], start: Optional[str], account_name: Optional[str], catch_up: Optional[str],
         no_cron: bool, as_json: bool) -> None:
    """Save the schedule and install its crontab entry.

    \b
    Examples:
      psabill schedule set --weekly tue --hour 9 --timezone America/New_York \\
          --notify "billing@msp.example, ops@msp.example"
      psabill schedule set --monthly 1 --hour 0
      psabill schedule set --monthly last --hour 23
      psabill schedule set --daily --hour 6
    """
    for name, values in (("--monthly", monthly), ("--weekly", weekly), ("--hour", hour)):
        if len(values) > 1:  # Click would silently keep the last one
            raise UsageError(f"{name} given {len(values)} times ({', '.join(values)}): give it once")
    monthly_value = monthly[0] if monthly else None
    weekly_value = weekly[0] if weekly else None
    chosen = [name for name, given in (("--monthly", bool(monthly)), ("--weekly", bool(weekly)), ("--daily", daily)) if given]
    if len(chosen) != 1:
        raise UsageError(
            "give exactly one of --monthly DAY, --weekly WEEKDAY or --daily"
            + (f" (got {' and '.join(chosen)})" if chosen else " (the mode is missing)")
        )
    if not hour:
        raise UsageError("--hour is missing: give the full hour 0-23 in the account time zone, e.g. --hour 9")
    notes = []
    try:
        hour_value, hour_note = _hour(hour[0])
        if hour_note:
            notes.append(hour_note)
        weekday = parse_weekday(weekly_value) if weekly_value is not None else None
    except ScheduleError as exc:
        raise UsageError(str(exc) + _weekday_hint(exc, weekly_value)) from None
    start_date = None
    if start is not None:
        try:
            start_date = date.fromisoformat(start)
        except ValueError:
            raise UsageError(f"--start {start!r} is not a date (YYYY-MM-DD)") from None

        problem = check_date(start_date)
        if problem:
            raise UsageError(f"--start {start}: {problem}")
    if tz_name is not None:
        # Australia/sydney: the one zone it can mean. A name that means none keeps its spelling, and
        # load_account_zone refuses it with a suggestion.
        tz_name = clock.resolve_zone_name(tz_name)[0]
        clock.load_account_zone(tz_name, "time zone")
    emails = parse_list(notify) if notify is not None else None
    mode = "monthly" if monthly else "weekly" if weekly else "daily"
    request = save.ScheduleRequest(
        mode=mode, hour=hour_value, day=_day(monthly_value), weekday=weekday, timezone=tz_name,
        start=start_date, emails=emails, account_name=account_name, catch_up=catch_up,
    )
    host = clock.host_zone()
    with config_lock(app.paths.config):  # load, plan, crontab and config: one at a time
        now = clock.now()
        current = app.settings()
        saved = save.plan_save(current, request, now, host)
        lines = save.apply(app.paths, current, saved.settings, now, host, install_cron=not no_cron)
    upcoming = next_occurrences(saved.schedule, now, host, 1)
    warn_not_ready(saved.settings)
    if as_json:
        emit_json({
            "schema": 1,
            "schedule": saved.schedule.describe(),
            "notes": notes + [n for n in [clamp_note(saved.schedule)] if n],
            "timezone": str(saved.schedule.zone),
            "timezone_from_host": saved.zone_from_host,
            "config": str(app.paths.config),
            "cron": {"installed": not no_cron, "lines": lines},
            "next_run": upcoming[0] if upcoming else None,
        })
        return
    for note in notes:
        echo(note)
    echo(f"Saved: {saved.schedule.describe()}.")  # a day past 28 says what shorter months do, once
    if saved.zone_from_host:
        echo(f"No --timezone given: using the host's zone, {saved.schedule.zone}.")
    shell_tz = clock.shell_tz_differs(host)
    if shell_tz:
        echo(f"Cron fires in the system zone {host}, not in your shell's TZ={shell_tz}: "
                   f"the crontab entry was planned for {host}.")
    if upcoming:
        echo(f"Next run: {times.occurrence(upcoming[0]['account'], saved.schedule.zone, host)}.")
    if no_cron:
        echo("Crontab left unchanged (--no-cron); run 'psabill cron install' to install it.")
    else:
        echo("Crontab entry installed:")
        for line in lines:
            echo(f"  {line}")
    echo(f"Config: {app.paths.config}")


@schedule.command()
@json_option
@pass_app
def show(app: App, as_json: bool) -> None:
    """Show the saved schedule.

    \b
    Example:
      psabill schedule show --json
    """
    s = status_mod.build(app.paths, app.settings(), clock.now(), clock.host_zone()).to_json()["schedule"]
    if as_json:
        emit_json({"schema": 1, **s} if s is not None else s)  # every --json object carries "schema"
        return
    if s is None:
        click.echo(f"No schedule saved in {app.paths.config}.")
        return
    click.echo(s["description"] + ("" if s["enabled"] else " (disabled)"))
    for key in ("mode", "day", "weekday", "hour", "timezone", "start", "saved_at", "catch_up"):
        if s[key] is not None:
            click.echo(f"  {key}: {s[key]}")


@schedule.command("next")
@click.option("--count", default=5, show_default=True, type=click.IntRange(1, 10000), help="How many occurrences.")
@json_option
@pass_app
def next_(app: App, count: int, as_json: bool) -> None:
    """List the next occurrences (account, host and UTC times).

    \b
    Example:
      psabill schedule next --count 3 --json
    """
    sched = app.settings().when
    if sched is None:
        raise ConfigError(f"no schedule saved in {app.paths.config}: run 'psabill schedule set' first")
    host = clock.host_zone()
    rows = next_occurrences(sched, clock.now(), host, count)
    if as_json:
        emit_json(rows)
        return
    click.echo(f"Next runs ({sched.zone}" + ("" if str(sched.zone) == str(host) else f"; host {host}") + "):")
    for row in rows:
        click.echo(f"  {times.occurrence(row['account'], sched.zone, host)}")


def _toggle(app: App, enabled: bool, as_json: bool, message: str) -> None:


    app.settings(must_exist=True)  # a mistyped --config creates nothing, not even the lock
    with config_lock(app.paths.config):
        current = app.settings(must_exist=True)
        now = clock.now()
        lines = save.apply(app.paths, current, save.with_enabled(current, enabled, now), now,
                                 clock.host_zone())
    if as_json:
        emit_json({"schema": 1, "enabled": enabled, "config": str(app.paths.config), "cron": {"lines": lines}})
        return
    echo(message)


@schedule.command()
@json_option
@pass_app
def enable(app: App, as_json: bool) -> None:
    """Turn the schedule back on and reinstall its crontab entry.

    \b
    Example:
      psabill schedule enable
    """
    _toggle(app, True, as_json, "Schedule enabled; crontab entry installed.")


@schedule.command()
@json_option
@pass_app
def disable(app: App, as_json: bool) -> None:
    """Turn the schedule off: remove the crontab entry, keep the settings.

    \b
    Example:
      psabill schedule disable --json
    """
    _toggle(app, False, as_json, "Schedule disabled; crontab entry removed (settings kept).")


@schedule.command("export")
@click.option("--format", "fmt", type=click.Choice(["systemd", "kubernetes"]), required=True,
              help="systemd: psabill.service and psabill.timer; kubernetes: a batch/v1 CronJob manifest.")
@click.option("--output", metavar="PATH", help="systemd: a directory for both units; kubernetes: a file (JSON, which "
                                               "kubectl reads as YAML). Default: print.")
@click.option("--image", metavar="IMAGE", help="Container image running psabill (required with --format kubernetes).")
@click.option("--no-state-volume", is_flag=True,
              help="kubernetes: no PersistentVolumeClaim; the ledger is in PostgreSQL, its URL the Secret's "
                   "PSABILL_STATE_URL key.")
@pass_app
def export_(app: App, fmt: str, output: Optional[str], image: Optional[str], no_state_volume: bool) -> None:
    """Export the saved schedule to systemd timer units or a Kubernetes CronJob.

    Both fire in the account zone at every occurrence (and sometimes more);
    `psabill run --scheduled` still decides what is due, so nothing runs twice.

    \b
    Examples:
      psabill schedule export --format systemd --output ~/.config/systemd/user
      psabill schedule export --format kubernetes --image registry.example/psabill:1 --output cronjob.json
    """
    settings = app.settings()
    sched = settings.when
    if sched is None:
        raise ConfigError(f"no schedule saved in {app.paths.config}: run 'psabill schedule set' first")
    catch_up = int(settings.schedule.catch_up.total_seconds())
    if fmt == "kubernetes":
        if not image:
            raise UsageError("--format kubernetes needs --image (the container image that runs psabill)")
        text = export.render_manifest(export.kubernetes_cronjob(
            sched, image=image, catch_up_seconds=catch_up, state_claim=None if no_state_volume else "psabill-state"))
        if output is None:
            click.echo(text, nl=False)
            return
        target = Path(output).expanduser().resolve()
        fsutil.atomic_write(target, text.encode("utf-8"), error=UsageError, what="manifest")
        click.echo(f"Wrote {target}")
        return
    writable = [str(p) for p in (settings.notify.file.dir, settings.history.site_dir) if p is not None]
    units = export.systemd_units(sched, argv=command_prefix(app.paths), state_dir=str(app.paths.state_dir),
                                 catch_up_seconds=catch_up, transport=settings.notify.transport or "sendmail",
                                 writable=writable)
    if output is None:
        for name, text in units.items():
            click.echo(f"# {name}")
            click.echo(text)
        return
    directory = Path(output).expanduser().resolve()
    # The service may write only its state dir, so it must exist when the unit starts.
    fsutil.make_private_dir(app.paths.state_dir, UsageError, "state dir")
    for name, text in units.items():
        fsutil.atomic_write(directory / name, text.encode("utf-8"), error=UsageError, what="unit file")
        click.echo(f"Wrote {directory / name}")
