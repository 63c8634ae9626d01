"""``psabill status``: schedule, next run, cron entry, last run."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Dict

import click

from psabill.cli import emit_json, get_ctx, json_option


@click.command()
@json_option
def status(as_json: bool) -> None:
    """Show the schedule, the next and last run, and the crontab entry.

    The JSON keys are stable (see the README): schedule, next_run, cron,
    last_run, missed, notify, config, state_dir.

    \b
    Example:
      psabill status --json | jq .next_run.utc
    """
    from psabill import clock, core

    ctx = get_ctx()
    now = clock.now()
    data = core.status(ctx, now, clock.host_zone())
    if as_json:
        emit_json(data)
        return
    _render(data, now)


def _when(iso: str) -> str:
    return datetime.fromisoformat(iso).strftime("%a %Y-%m-%d %H:%M:%S %z")


def _render(data: Dict[str, Any], now: datetime) -> None:
    from psabill.core import human_delta

    nxt = data["next_run"]
    last = data["last_run"]
    next_col = _when(nxt["account"]) if nxt else "n/a"
    left_col = human_delta(nxt["left_seconds"]) if nxt else "n/a"
    last_col = _when(last["started_at"]) if last else "n/a"
    passed_col = (
        human_delta((now - datetime.fromisoformat(last["started_at"])).total_seconds()) + " ago" if last else "n/a"
    )
    click.echo(f"{'NEXT':<30} {'LEFT':<10} {'LAST':<30} {'PASSED':<12} STATUS")
    click.echo(f"{next_col:<30} {left_col:<10} {last_col:<30} {passed_col:<12} {last['status'] if last else 'n/a'}")
    click.echo("")
    sched = data["schedule"]
    if sched is None:
        click.echo("Schedule:   none saved (psabill schedule set --help)")
    else:
        click.echo(f"Schedule:   {sched['description']}" + ("" if sched["enabled"] else " [disabled]"))
    click.echo(f"Zones:      account {data['account']['timezone'] or 'n/a'}, host {data['host_timezone']}")
    if nxt:
        click.echo(f"Next run:   {nxt['account']} (host {nxt['host']}, UTC {nxt['utc']})")
    cron = data["cron"]
    state = "installed" if cron["installed"] else "not installed"
    sync = "in sync" if cron["in_sync"] else "OUT OF SYNC: run 'psabill cron install'"
    click.echo(f"Cron:       {state}, {sync} ({cron['target']})")
    for line in cron["lines"]:
        click.echo(f"            {line}")
    if data["missed"]:
        click.echo(f"Missed:     {', '.join(data['missed'])}")
    click.echo(f"Report:     {data['notify']['report']}")
    click.echo(f"Config:     {data['config']}")
    click.echo(f"State dir:  {data['state_dir']}")
