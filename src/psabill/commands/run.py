"""``psabill run``: the billing update, by hand or from cron."""

from __future__ import annotations

import sys
import time

import click

from psabill.cli import Fail, emit_json, get_ctx, json_option
from psabill.errors import ExitCode, UsageError


@click.command()
@click.option("--scheduled", is_flag=True, help="Cron mode: run only if an occurrence is due; silent unless a human is needed.")
@click.option("--dry-run", is_flag=True, help="Show the planned changes (old -> new); write nothing to the PSA.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@json_option
def run(scheduled: bool, dry_run: bool, yes: bool, as_json: bool) -> None:
    """Update the PSA quantities now (or, with --scheduled, when due).

    \b
    Examples:
      psabill run --dry-run
      psabill run --yes
      psabill run --scheduled      # what cron runs
    """
    from psabill import clock, runner

    ctx = get_ctx()
    if scheduled and dry_run:
        raise UsageError("--scheduled and --dry-run cannot be combined")
    if scheduled:
        outcome = runner.run_scheduled(ctx, clock.now)
        if outcome.report is None:
            return  # nothing due: silence, because cron mails any output
    else:
        if not dry_run and not yes:
            if not sys.stdin.isatty():
                raise UsageError("refusing to change billing without a terminal: pass --yes (or --dry-run)")
            click.confirm("This changes billing quantities in your PSA and cannot be undone. Continue?", abort=True)
        if sys.stdout.isatty() and not as_json:
            started = time.monotonic()
            with click.progressbar(length=1, label="Updating", show_pos=True) as bar:
                def progress(done: int, total: int, requests: int) -> None:
                    rate = requests / max(time.monotonic() - started, 1e-3)
                    bar.label = f"Updating ({requests} API requests, {rate:.0f}/s)"
                    bar.length = total
                    bar.update(done - bar.pos)

                outcome = runner.run_manual(ctx, clock.now, dry_run=dry_run, progress=progress)
        else:
            outcome = runner.run_manual(ctx, clock.now, dry_run=dry_run)
    report = outcome.report
    assert report is not None
    if as_json:
        emit_json(report.to_json())
    elif not scheduled or outcome.exit_code != ExitCode.OK:
        _render(report)
    if outcome.exit_code != ExitCode.OK:
        raise Fail(outcome.error or f"run {report.run_id} finished with status {report.status}", int(outcome.exit_code))


def _render(report) -> None:  # type: ignore[no-untyped-def]
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
