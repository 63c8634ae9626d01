"""``psabill run``: the billing update, by hand or from cron."""

from __future__ import annotations

import sys
import time

import click

from psabill.cli.options import App, Fail, emit_json, json_option, pass_app, render_report
from psabill.errors import ExitCode, UsageError


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
    else:
        if not dry_run and not yes:
            if not interactive():
                raise UsageError("refusing to change billing without a terminal: pass --yes (or --dry-run)")
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

