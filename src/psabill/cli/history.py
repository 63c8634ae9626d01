"""``psabill history``: past runs, one run's items, and the static history site."""

import csv
import sys
from datetime import timedelta
from pathlib import Path
from typing import Optional, Tuple

import click

from psabill import clock, outcomes
from psabill.cli.options import RUN_ID, App, complete_run_id, echo, json_option, pass_app
from psabill.cli.render import change, emit_json
from psabill.errors import UsageError
from psabill.notify.attachment import COLUMNS
from psabill.notify.site import rebuild, site_dir
from psabill.report import Run
from psabill.text import clean, times
from psabill.text.clean import cell


@click.group(invoke_without_command=True)
@click.option("--days", default=60, show_default=True, type=click.IntRange(1, 100000), help="How far back.")
@json_option
@click.pass_context
def history(click_ctx: click.Context, days: int, as_json: bool) -> None:
    """List runs of the last DAYS days, newest first.

    \b
    Examples:
      psabill history --days 7
      psabill history show --outcome failed
      psabill history site
    """
    if click_ctx.invoked_subcommand is not None:
        return
    app = click_ctx.find_object(App)
    assert app is not None
    store = app.store()
    runs = []
    if store.ledger.exists:
        with store.ledger as ledger:
            runs = ledger.runs(clock.now() - timedelta(days=days))
    if as_json:
        emit_json([run.to_json(items=False) for run in runs])  # an array of runs, as scripts pipe it
        return
    if not runs:
        click.echo("No runs recorded.")
        return
    settings = app.settings(check_addresses=False)
    zone, host = settings.zone or clock.host_zone(), clock.host_zone()
    started = {run.id: times.moment(run.started_at, zone, host) for run in runs}
    width = max([len(text) for text in started.values()] + [len(f"STARTED ({zone})")])
    click.echo(f"{'ID':>5}  {f'STARTED ({zone})':<{width}} {'TRIGGER':<9} {'STATUS':<11} "
               f"{'HELD':>5} {'UPD':>5} {'SAME':>5} {'FAIL':>5} {'UNMAP':>5}  {'EMAIL':<7} HOST")
    for run in runs:
        counts = run.counts
        failed = counts.get(outcomes.FAILED, 0) + counts.get(outcomes.UNKNOWN, 0)
        click.echo(
            f"{run.id:>5}  {started[run.id]:<{width}} {run.trigger:<9} {run.status:<11} "
            f"{counts.get(outcomes.HELD, 0):>5} {counts.get(outcomes.UPDATED, 0) + counts.get(outcomes.PLANNED, 0):>5} "
            f"{counts.get(outcomes.UNCHANGED, 0):>5} {failed:>5} {counts.get(outcomes.UNMAPPED, 0):>5}  "
            f"{run.email.status or '-':<7} {run.host or '-'}")


@history.command("show")
@click.argument("run_id", metavar="[RUN]", type=RUN_ID, required=False, shell_complete=complete_run_id)
@click.option("--outcome", "wanted", multiple=True, type=click.Choice(outcomes.ITEM_ORDER),
              help="Only items with this outcome (repeatable).")
@json_option
@click.option("--csv", "as_csv", is_flag=True, help="Print the items as CSV (safe to open in a spreadsheet).")
@pass_app
def show(app: App, run_id: Optional[int], wanted: Tuple[str, ...], as_json: bool, as_csv: bool) -> None:
    """Show one run (default: the latest) with every item, what needs action first.

    \b
    Examples:
      psabill history show
      psabill history show 12 --outcome failed --outcome held
      psabill history show 12 --csv > run-12.csv
    """
    store = app.store()
    run = None
    if store.ledger.exists:
        with store.ledger as ledger:
            if run_id is None:
                latest = ledger.last_run()
                run_id = latest.id if latest is not None else None
            run = ledger.run(run_id) if run_id is not None else None
    if run is None:
        raise UsageError(f"no run {run_id} in the history" if run_id is not None else "no run in the history yet")
    if wanted:
        run.items = [item for item in run.items if item.outcome in wanted]
    if as_csv:
        _write_csv(run)
        return
    if as_json:
        emit_json({"schema": 1, **run.to_json()})
        return
    settings = app.settings(check_addresses=False)
    zone, host = settings.zone or clock.host_zone(), clock.host_zone()
    click.echo(f"Run {run.id}: {run.status} ({run.trigger}), started {times.moment(run.started_at, zone, host)}, "
               f"finished {times.moment(run.finished_at, zone, host)}")
    click.echo(f"Host: {run.host or '-'}" + (f"; attempt {run.attempt}" if run.attempt > 1 else ""))
    if run.occurrence:
        click.echo(f"Occurrence: {times.occurrence(run.occurrence, zone, host)}"
                   + (f" (ran {run.late_seconds}s late)" if run.late_seconds else ""))
    if run.message:
        click.echo(f"Message: {clean.message(run.message)}")
    counts = run.counts
    click.echo("Counts: " + (", ".join(f"{word} {counts[word]}" for word in outcomes.ITEM_ORDER if counts.get(word))
                             or "no items") + f"; {run.api_requests} API requests"
               + (f" ({rate}/s)" if (rate := run.to_json(items=False)["requests_per_second"]) else ""))
    click.echo(f"Email: {run.email.status or 'not sent'}"
               + (f" ({clean.message(run.email.message)})" if run.email.message else ""))
    for approval in run.approvals:
        click.echo(f"Approval: {approval.action} by {clean.clean(approval.by)} on {approval.host} at "
                   f"{times.moment(approval.at, zone, host)} ({approval.items} item(s))")
    _items(run)


def _items(run: Run) -> None:
    order = {word: i for i, word in enumerate(outcomes.ITEM_ORDER)}
    for item in sorted(run.items, key=lambda i: (order.get(i.outcome, 99), i.customer.casefold(), i.sku)):
        delta = change(item.old, item.new) if item.old is not None or item.new is not None else ""
        extra = f" {clean.message(item.message)}" if item.message else ""
        rule = f" [{item.rule}]" if item.rule else ""
        click.echo(f"  {item.outcome:<9}{rule} {clean.clean(item.customer)} / {clean.clean(item.sku)} "
                   f"{delta}{extra}".rstrip())


def _write_csv(run: Run) -> None:
    writer = csv.writer(sys.stdout, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for item in run.sorted_items():
        data = item.to_json()
        writer.writerow([cell(data[column]) for column in COLUMNS])


@history.command("site")
@click.option("--output", metavar="DIR", help="Write the site here (default: [history] site_dir, else site in "
                                               "the state dir).")
@click.option("--days", type=click.IntRange(1, 3650), help="Days of runs on the index (default: [history] site_days).")
@json_option
@pass_app
def site(app: App, output: Optional[str], days: Optional[int], as_json: bool) -> None:
    """Rebuild the static history site: the index, one page per run and per customer.

    Serve the directory with any web server; see docs/history-site.md.

    \b
    Examples:
      psabill history site
      psabill history site --output /var/www/billing --days 90
    """
    settings = app.settings(check_addresses=False)
    store = app.store()
    target = Path(output).expanduser().resolve() if output else site_dir(settings, app.paths)
    with store.ledger as ledger:
        written = rebuild(settings, app.paths, ledger, output=target, days=days, now=clock.now())
    if as_json:
        emit_json({"schema": 1, "dir": str(target), "written": [str(p) for p in written]})
        return
    echo(f"Wrote {len(written)} file(s) to {target} (open {target / 'index.html'})")
