"""``psabill run``: the billing update, by hand or from cron."""

import sys

import click

from psabill import clock, outcomes
from psabill.cli.options import App, Fail, echo, json_option, pass_app
from psabill.cli.render import ProgressBar, change, emit_json, run_text
from psabill.errors import ExitCode, UsageError
from psabill.report import Run
from psabill.run import guard
from psabill.run.safety import Review
from psabill.text import clean

PREVIEW_LINES = 10


def confirm(run: Run, review: Review) -> bool:
    """Show the stored plan, the guard's findings first, and ask; a "y" covers the findings."""
    for finding in review.run:
        click.echo(f"GUARD [{finding.rule}]: {finding.reason}; an unattended run would hold all of it")
    for seq, finding in sorted(review.lines.items()):
        item = next((i for i in run.items if i.seq == seq), None)
        if item is not None:
            click.echo(f"GUARD [{finding.rule}] {clean.name(item.customer)} / {clean.name(item.sku)}: "
                       f"{finding.reason}; an unattended run would hold it")
    counts = run.counts
    click.echo(f"Planned (run {run.id}): {counts.get(outcomes.PLANNED, 0)} to update, "
               f"{counts.get(outcomes.UNCHANGED, 0)} unchanged, {counts.get(outcomes.FAILED, 0)} failed, "
               f"{counts.get(outcomes.UNMAPPED, 0)} unmapped ({run.api_requests} API requests, nothing written)")
    shown = [item for item in run.sorted_items() if item.outcome != outcomes.UNCHANGED]
    for item in shown[:PREVIEW_LINES]:
        who = f"{clean.name(item.customer)} / {clean.name(item.sku)}"
        if item.outcome == outcomes.PLANNED:
            click.echo(f"  would update {who}: {change(item.old, item.new)}")
        else:
            click.echo(f"  {item.outcome.upper()} {who}: {clean.message(item.message)}")
    if len(shown) > PREVIEW_LINES:
        click.echo(f"  ... and {len(shown) - PREVIEW_LINES} more (psabill history show {run.id} lists every line)")
    if not counts.get(outcomes.PLANNED):
        click.echo("Nothing to write.")
        return False
    return click.confirm("This changes billing quantities in your PSA and cannot be undone. "
                         "Write exactly this plan?")


def interactive() -> bool:
    """Whether a human can answer the confirmation prompt."""
    return sys.stdin.isatty()


@click.command()
@click.option("--scheduled", is_flag=True, help="Cron mode: run only if an occurrence is due; silent unless a human is needed.")
@click.option("--dry-run", is_flag=True, help="Show the planned changes (old -> new); write nothing to the PSA.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask: write the plan, holding what the guard holds.")
@json_option
@pass_app
def run(app: App, scheduled: bool, dry_run: bool, yes: bool, as_json: bool) -> None:
    """Update the PSA quantities now (or, with --scheduled, when due).

    A run plans every change first. By hand it shows the plan and, on "y",
    writes exactly that plan. Unattended (--yes, --scheduled), what looks like
    a broken source is held for 'psabill approve' (exit 8) and the rest is
    written.

    \b
    Examples:
      psabill run --dry-run
      psabill run --yes
      psabill run --scheduled      # what cron runs
    """
    if scheduled and dry_run:
        raise UsageError("--scheduled and --dry-run cannot be combined")
    if scheduled:
        outcome = guard.run_scheduled(app.paths, clock.now, verbose=app.verbose)
        if outcome.run is None:
            if outcome.exit_code != ExitCode.OK:  # an undelivered report that could not be re-sent
                if outcome.error:
                    raise Fail(outcome.error, int(outcome.exit_code))
                raise SystemExit(int(outcome.exit_code))  # failing as before: the log and status say it
            return  # nothing due: silence, because cron mails any output
        if outcome.run.status == outcomes.ABORTED and not as_json:
            if outcome.run.attempt > 1:
                raise SystemExit(int(outcome.exit_code))  # retried, failing as before: the log and the report say it
            # Cron mails whatever is printed: the reason once, on stderr, and nothing else.
            raise Fail(outcome.error or outcome.run.message or f"run {outcome.run.id} was aborted",
                       int(outcome.exit_code))
    else:
        ask = None
        if not dry_run and not yes:
            if not interactive():
                raise UsageError("refusing to change billing without a terminal: pass --yes (or --dry-run)")
            ask = confirm
        bar = ProgressBar() if sys.stderr.isatty() and not as_json else None
        try:
            outcome = guard.run_manual(app.paths, clock.now, dry_run=dry_run, confirm=ask, progress=bar,
                                       verbose=app.verbose)
        finally:
            if bar is not None:
                bar.close()
        if outcome.run is None:
            echo(outcome.error or "cancelled: nothing was changed")
            return
    report = outcome.run
    if as_json:
        emit_json({"schema": 1, **report.to_json()})
    elif not scheduled or outcome.exit_code != ExitCode.OK:
        run_text(report)
    if outcome.exit_code != ExitCode.OK:
        raise Fail(outcome.error or f"run {report.id} finished with status {report.status}", int(outcome.exit_code))
