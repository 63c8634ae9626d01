"""``psabill run``: the billing update, by hand or from cron."""

from __future__ import annotations

import sys
import time
from typing import Any

import click

from psabill.cli.options import App, Fail, change, emit_json, json_option, pass_app, render_report
from psabill.errors import ExitCode, UsageError
from psabill.outcomes import ABORTED

PREVIEW_LINES = 10


def show_preview(app: App, now: Any) -> None:
    """Before the prompt: what the run would change, read-only against the PSA and not recorded.

    A preview that cannot reach the PSA (or read the source) ends the command
    with that error: there is nothing to confirm.
    """
    from psabill.config import readiness
    from psabill.errors import ConfigError
    from psabill.report import RunReport
    from psabill.outcomes import PLANNED
    from psabill.run.perform import _refresh

    settings = app.settings(must_exist=True)
    if readiness.missing(settings):
        raise ConfigError(readiness.not_ready_text(settings))
    report = RunReport(trigger="dry-run", started_at=now())
    click.echo("Checking what would change (read-only)...")
    _refresh(settings, report, dry_run=True, record=lambda item: None, progress=None)
    report.settle()
    counts = report.counts
    click.echo(f"Planned: {counts['updated']} to update, {counts['unchanged']} unchanged, {counts['failed']} failed, "
               f"{counts['unmapped']} unmapped ({report.api_requests} API requests, nothing written)")
    shown = [item for item in report.items if item.outcome != "unchanged"]
    for item in shown[:PREVIEW_LINES]:
        if item.outcome == PLANNED:
            click.echo(f"  would update {item.customer} / {item.sku}: {change(item.old, item.new)}")
        else:
            click.echo(f"  {item.outcome.upper()} {item.customer} / {item.sku}: {item.message}")
    if len(shown) > PREVIEW_LINES:
        click.echo(f"  ... and {len(shown) - PREVIEW_LINES} more (psabill run --dry-run shows every line)")


def interactive() -> bool:
    """Whether a human can answer the confirmation prompt."""
    return sys.stdin.isatty()


@click.command()
@click.option("--scheduled", is_flag=True, help="Cron mode: run only if an occurrence is due; silent unless a human is needed.")
@click.option("--dry-run", is_flag=True, help="Show the planned changes (old -> new); write nothing to the PSA.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@json_option
@pass_app
def run(app: App, scheduled: bool, dry_run: bool, yes: bool, as_json: bool) -> None:
    """Update the PSA quantities now (or, with --scheduled, when due).

    \b
    Examples:
      psabill run --dry-run
      psabill run --yes
      psabill run --scheduled      # what cron runs
    """
    from psabill import clock
    from psabill.run import guard

    if scheduled and dry_run:
        raise UsageError("--scheduled and --dry-run cannot be combined")
    if scheduled:
        outcome = guard.run_scheduled(app.paths, clock.now, verbose=app.verbose)
        if outcome.report is None:
            return  # nothing due: silence, because cron mails any output
        if outcome.report.status == ABORTED and not as_json:
            # Cron mails whatever is printed: the reason once, on stderr, and nothing else.
            raise Fail(outcome.error or outcome.report.message or f"run {outcome.report.run_id} was aborted",
                       int(outcome.exit_code))
    else:
        if not dry_run and not yes:
            if not interactive():
                raise UsageError("refusing to change billing without a terminal: pass --yes (or --dry-run)")
            show_preview(app, clock.now)
            if not click.confirm("This changes billing quantities in your PSA and cannot be undone. Continue?"):
                click.echo("cancelled: nothing was changed or recorded")
                return
        if sys.stdout.isatty() and not as_json:
            started = time.monotonic()
            with click.progressbar(length=1, label="Updating", show_pos=True) as bar:
                def progress(done: int, total: int, requests: int) -> None:
                    rate = requests / max(time.monotonic() - started, 1e-3)
                    bar.label = f"Updating ({requests} API requests, {rate:.0f}/s)"
                    bar.length = total
                    bar.update(done - bar.pos)

                outcome = guard.run_manual(app.paths, clock.now, dry_run=dry_run, progress=progress, verbose=app.verbose)
        else:
            outcome = guard.run_manual(app.paths, clock.now, dry_run=dry_run, verbose=app.verbose)
    report = outcome.report
    assert report is not None
    if as_json:
        emit_json(report.to_json())
    elif not scheduled or outcome.exit_code != ExitCode.OK:
        render_report(report)
    if outcome.exit_code != ExitCode.OK:
        raise Fail(outcome.error or f"run {report.run_id} finished with status {report.status}", int(outcome.exit_code))

