"""``psabill schedule``: set, show, next, enable, disable."""

from __future__ import annotations

from datetime import date
from typing import Any, Optional

import click

from psabill.cli.options import App, emit_json, json_option, pass_app, warn_not_ready
from psabill.errors import UsageError


@click.group()
def schedule() -> None:
    """Save, inspect and switch the recurring billing update.

    \b
    Example:
      psabill schedule set --monthly last --hour 23 --timezone Europe/London
      psabill schedule next --count 5
    """


def _day(value: Optional[str]) -> Any:
    from psabill.schedule import ScheduleError, parse_day

    if value is None:
        return None
    try:
        return parse_day(value)
    except ScheduleError as exc:
        raise UsageError(f"--monthly: {exc}") from None


@schedule.command("set")
@click.option("--monthly", "monthly", metavar="DAY", help="Run monthly on DAY (1-31 or 'last'; days past a month's end run on its last day).")
@click.option("--weekly", "weekly", metavar="WEEKDAY", help="Run weekly on WEEKDAY (mon..sun or a full name).")
@click.option("--daily", is_flag=True, help="Run every day.")
@click.option("--hour", required=True, metavar="H", help="Full hour 0-23 in the account time zone.")
@click.option("--timezone", "tz_name", metavar="ZONE", help="Account time zone (IANA name). Default: the saved one, else the host's.")
@click.option("--notify", metavar="ADDRESSES", help="Comma-separated addresses that get the results email.")
@click.option("--start", metavar="YYYY-MM-DD", help="No run before this date (account zone).")
@click.option("--account-name", metavar="NAME", help="Account name used in the report.")
@click.option("--catch-up", metavar="DURATION", help="How late a missed occurrence may still run (default 24h, minimum 3h).")
@click.option("--no-cron", is_flag=True, help="Save the config but leave the crontab alone.")
@json_option
@pass_app
def set_(app: App, monthly: Optional[str], weekly: Optional[str], daily: bool, hour: str, tz_name: Optional[str],
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
    from psabill import clock, scheduling
    from psabill.addresses import parse_list
    from psabill.status import next_occurrences
    from psabill.schedule import ScheduleError, clamp_note, parse_hour, parse_weekday

    chosen = [name for name, given in (("--monthly", monthly is not None), ("--weekly", weekly is not None), ("--daily", daily)) if given]
    if len(chosen) != 1:
        raise UsageError(
            "give exactly one of --monthly DAY, --weekly WEEKDAY or --daily"
            + (f" (got {' and '.join(chosen)})" if chosen else "")
        )
    try:
        hour_value = parse_hour(hour)
        weekday = parse_weekday(weekly) if weekly is not None else None
    except ScheduleError as exc:
        raise UsageError(str(exc)) from None
    start_date = None
    if start is not None:
        try:
            start_date = date.fromisoformat(start)
        except ValueError:
            raise UsageError(f"--start {start!r} is not a date (YYYY-MM-DD)") from None
    if tz_name is not None:
        clock.load_account_zone(tz_name, "time zone")
    emails = parse_list(notify) if notify is not None else None
    mode = "monthly" if monthly is not None else "weekly" if weekly is not None else "daily"
    request = scheduling.ScheduleRequest(
        mode=mode, hour=hour_value, day=_day(monthly), weekday=weekday, timezone=tz_name,
        start=start_date, emails=emails, account_name=account_name, catch_up=catch_up,
    )
    now = clock.now()
    host = clock.host_zone()
    current = app.settings()
    saved = scheduling.plan_save(current, request, now, host)
    lines = scheduling.apply(app.paths, current, saved.settings, now, host, install_cron=not no_cron)
    upcoming = next_occurrences(saved.schedule, now, host, 1)
    warn_not_ready(saved.settings)
    if as_json:
        emit_json({
            "schedule": saved.schedule.describe(),
            "timezone": str(saved.schedule.zone),
            "timezone_from_host": saved.zone_from_host,
            "config": str(app.paths.config),
            "cron": {"installed": not no_cron, "lines": lines},
            "next_run": upcoming[0] if upcoming else None,
        })
        return
    click.echo(f"Saved: {saved.schedule.describe()}.")
    note = clamp_note(saved.schedule)
    if note:
        click.echo(note)
    if saved.zone_from_host:
        click.echo(f"No --timezone given: using the host's zone, {saved.schedule.zone}.")
    shell_tz = clock.shell_tz_differs(host)
    if shell_tz:
        click.echo(f"Cron fires in the system zone {host}, not in your shell's TZ={shell_tz}: "
                   f"the crontab entry was planned for {host}.")
    if upcoming:
        click.echo(f"Next run: {upcoming[0]['account']} (host {upcoming[0]['host']}).")
    if no_cron:
        click.echo("Crontab left unchanged (--no-cron); run 'psabill cron install' to install it.")
    else:
        click.echo("Crontab entry installed:")
        for line in lines:
            click.echo(f"  {line}")
    click.echo(f"Config: {app.paths.config}")


@schedule.command()
@json_option
@pass_app
def show(app: App, as_json: bool) -> None:
    """Show the saved schedule.

    \b
    Example:
      psabill schedule show --json
    """
    from psabill import clock
    from psabill import status as status_mod

    s = status_mod.build(app.paths, app.settings(), clock.now(), clock.host_zone()).schedule
    if as_json:
        emit_json(s)
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
    from psabill import clock, scheduling
    from psabill.errors import ConfigError
    from psabill.status import next_occurrences

    sched = scheduling.schedule_of(app.settings())
    if sched is None:
        raise ConfigError(f"no schedule saved in {app.paths.config}: run 'psabill schedule set' first")
    rows = next_occurrences(sched, clock.now(), clock.host_zone(), count)
    if as_json:
        emit_json(rows)
        return
    click.echo(f"{'ACCOUNT':<28} {'HOST':<28} UTC")
    for row in rows:
        click.echo(f"{row['account']:<28} {row['host']:<28} {row['utc']}")


def _toggle(app: App, enabled: bool) -> None:
    from psabill import clock, scheduling

    current = app.settings(must_exist=True)
    now = clock.now()
    scheduling.apply(app.paths, current, scheduling.with_enabled(current, enabled, now), now, clock.host_zone())


@schedule.command()
@pass_app
def enable(app: App) -> None:
    """Turn the schedule back on and reinstall its crontab entry.

    \b
    Example:
      psabill schedule enable
    """
    _toggle(app, True)
    click.echo("Schedule enabled; crontab entry installed.")


@schedule.command()
@pass_app
def disable(app: App) -> None:
    """Turn the schedule off: remove the crontab entry, keep the settings.

    \b
    Example:
      psabill schedule disable
    """
    _toggle(app, False)
    click.echo("Schedule disabled; crontab entry removed (settings kept).")
