"""What every command shares: the app object, the output options and the renderers.

Commands import from here, never from each other and never from the root
group, so the command modules form no cycle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import click

from psabill.paths import Paths

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class App:
    """The root group's parsed options, handed to every command."""

    paths: Paths
    verbose: bool = False

    def settings(self, *, check_addresses: bool = True, must_exist: bool = False) -> Any:
        """Load and validate the config once."""
        from psabill.settings import load

        return load(self.paths.config, check_addresses=check_addresses, must_exist=must_exist)

    def store(self) -> Any:
        """The history and run lock: ``[state] url`` / PSABILL_STATE_URL, else SQLite in the state dir."""
        from psabill.history import open_store, state_url

        return open_store(self.paths, state_url(self.settings(check_addresses=False).state_url))

    def history(self) -> Any:
        """The History of :meth:`store` (not yet opened); use it as a context manager."""
        return self.store().history


pass_app = click.make_pass_decorator(App)


class Fail(click.ClickException):
    """A domain error on its way out: ``Error: <one line>`` and its exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def json_option(func: F) -> F:
    """``--json``: print JSON instead of text."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")(func)


def emit_json(data: Any) -> None:
    """Print ``data`` as indented JSON."""
    import json  # not at module level: the cron path never prints JSON

    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def render_report(report: Any) -> None:
    """A run's outcome and its changes and failures, as text."""
    verb = "Planned" if report.trigger == "dry-run" else "Run"
    click.echo(f"{verb} {report.run_id}: {report.status}" + (f" ({report.message})" if report.message else ""))
    counts = report.counts
    click.echo("  " + ", ".join(f"{k} {v}" for k, v in counts.items()) + f"; {report.api_requests} API requests")
    for item in report.items:
        if item.outcome in ("updated", "planned"):
            click.echo(f"  {item.customer} / {item.sku}: {item.old} -> {item.new}")
        elif item.outcome in ("failed", "unmapped"):
            hint = f" Fix: {item.hint}" if item.hint else ""
            click.echo(f"  {item.outcome.upper()} {item.customer} / {item.sku}: {item.message}.{hint}")
    if report.run_id is not None:
        click.echo(f"Details: psabill history show {report.run_id}")


def render_status(data: Any, now: Any) -> None:
    """The ``status`` text view of a Status JSON document."""
    from datetime import datetime

    from psabill.fsutil import human_duration

    def when(iso: str) -> str:
        return datetime.fromisoformat(iso).strftime("%a %Y-%m-%d %H:%M:%S %z")

    nxt = data["next_run"]
    last = data["last_run"]
    next_col = when(nxt["account"]) if nxt else "n/a"
    left_col = human_duration(nxt["left_seconds"]) if nxt else "n/a"
    last_col = when(last["started_at"]) if last else "n/a"
    passed_col = (
        human_duration((now - datetime.fromisoformat(last["started_at"])).total_seconds()) + " ago"
        if last else "n/a"
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
    if last:
        click.echo(f"Last run:   {last['status']} ({last['trigger']}) on host {last.get('host') or '-'}")
    cron = data["cron"]
    state = "installed" if cron["installed"] else "not installed"
    sync = "in sync" if cron["in_sync"] else "OUT OF SYNC: run 'psabill cron install'"
    click.echo(f"Cron:       {state}, {sync} ({cron['target']})")
    for line in cron["lines"]:
        click.echo(f"            {line}")
    if data["missed"]:
        click.echo(f"Missed:     {', '.join(data['missed'])}")
    click.echo(f"Report:     {data['notify']['report']}")
    ledger = data["ledger"]
    click.echo(f"Ledger:     {ledger['kind']} {ledger['where']}" + (" (shared)" if ledger["shared"] else ""))
    click.echo(f"Config:     {data['config']}")
    click.echo(f"State dir:  {data['state_dir']}")
    for warning in data["warnings"]:
        click.echo(f"Warning:    {warning}")
