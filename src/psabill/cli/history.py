"""``psabill history``: past runs, newest first, and one run's items."""

from __future__ import annotations

from datetime import timedelta
from typing import List

import click

from psabill.cli.options import RUN_ID, App, change, complete_run_id, emit_json, json_option, pass_app, show_moment, show_occurrence, zones
from psabill.errors import UsageError
from psabill.report import ItemResult


@click.group(invoke_without_command=True)
@click.option("--days", default=60, show_default=True, type=click.IntRange(1, 100000), help="How far back.")
@json_option
@click.pass_context
def history(click_ctx: click.Context, days: int, as_json: bool) -> None:
    """List runs of the last DAYS days, newest first.

    \b
    Examples:
      psabill history --days 7
      psabill history show 12 --json
    """
    if click_ctx.invoked_subcommand is not None:
        return
    from psabill import clock

    app = click_ctx.find_object(App)
    assert app is not None
    rows = []
    history_db = app.history()
    if history_db.exists:
        with history_db:
            rows = history_db.runs(clock.now() - timedelta(days=days))
    if as_json:
        emit_json([row.to_json() for row in rows])
        return
    if not rows:
        click.echo("No runs recorded.")
        return
    zone, host = zones(app.settings(check_addresses=False))
    started = {row.id: show_moment(row.started_at, zone, host) for row in rows}
    width = max([len(text) for text in started.values()] + [len(f"STARTED ({zone})")])
    click.echo(f"{'ID':>5}  {f'STARTED ({zone})':<{width}} {'TRIGGER':<9} {'STATUS':<11} "
               f"{'UPD':>5} {'SAME':>5} {'FAIL':>5} {'UNMAP':>5}  {'EMAIL':<7} HOST")
    for row in rows:
        click.echo(
            f"{row.id:>5}  {started[row.id]:<{width}} {row.trigger:<9} {row.status:<11} {row.updated:>5} "
            f"{row.unchanged:>5} {row.failed:>5} {row.unmapped:>5}  {row.email_status or '-':<7} {row.host or '-'}"
        )


@history.command("show")
@click.argument("run_id", metavar="RUN", type=RUN_ID, shell_complete=complete_run_id)
@json_option
@click.option("--csv", "as_csv", is_flag=True, help="Print the items as CSV (safe to open in a spreadsheet).")
@pass_app
def show(app: App, run_id: int, as_json: bool, as_csv: bool) -> None:
    """Show one run with every item (customer, SKU, old -> new, outcome).

    \b
    Examples:
      psabill history show 12
      psabill history show 12 --csv > run-12.csv
    """
    row = None
    history_db = app.history()
    if history_db.exists:
        with history_db:
            row = history_db.run(run_id)
            items = history_db.items(run_id) if row is not None else []
    if row is None:
        raise UsageError(f"no run {run_id} in the history")
    if as_csv:
        _write_csv(items)
        return
    if as_json:
        emit_json({**row.to_json(), "items": [item.to_json() for item in items]})
        return
    zone, host = zones(app.settings(check_addresses=False))
    click.echo(f"Run {row.id}: {row.status} ({row.trigger}), started {show_moment(row.started_at, zone, host)}, "
               f"finished {show_moment(row.finished_at, zone, host)}")
    click.echo(f"Host: {row.host or '-'}")
    if row.occurrence:
        click.echo(f"Occurrence: {show_occurrence(row.occurrence, zone, host)}"
                   + (f" (ran {row.late_seconds}s late)" if row.late_seconds else ""))
    if row.message:
        click.echo(f"Message: {row.message}")
    click.echo(f"Counts: updated {row.updated}, unchanged {row.unchanged}, failed {row.failed}, unmapped {row.unmapped}; {row.api_requests} API requests"
               + (f" ({row.request_rate}/s)" if row.request_rate else ""))
    click.echo(f"Email: {row.email_status or 'not sent'}" + (f" ({row.email_message})" if row.email_message else ""))
    for item in items:
        delta = change(item.old, item.new) if item.old is not None or item.new is not None else ""
        extra = f" {item.message}" if item.message else ""
        click.echo(f"  {item.outcome:<9} {item.customer} / {item.sku} {delta}{extra}".rstrip())


CSV_COLUMNS = ("customer", "sku", "psa_company", "agreement", "line", "old", "new", "delta", "outcome", "message")


def _write_csv(items: List[ItemResult]) -> None:
    import csv
    import sys

    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for item in items:
        row = item.to_json()
        writer.writerow([_inert(row[column]) for column in CSV_COLUMNS])


def _inert(value: object) -> object:
    """Keep a spreadsheet from running a cell as a formula (CSV injection)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value
