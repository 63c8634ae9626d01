"""``psabill cron``: show and re-sync psabill's crontab lines."""

from __future__ import annotations

import click

from psabill.cli import emit_json, get_ctx, json_option


@click.group()
def cron() -> None:
    """Inspect or re-sync psabill's lines in the crontab.

    \b
    Example:
      psabill cron show
    """


@cron.command()
@json_option
def show(as_json: bool) -> None:
    """Print psabill's crontab lines (and whether they match the config).

    \b
    Example:
      psabill cron show --json
    """
    from psabill import clock, core
    from psabill import cron as cron_mod

    ctx = get_ctx()
    cfg = ctx.load_config()
    installed = cron_mod.Crontab(ctx.crontab_file).lines()
    expected = core.desired_cron_lines(ctx, cfg, clock.now(), clock.host_zone())
    if as_json:
        emit_json({"lines": installed, "expected": expected, "in_sync": installed == expected})
        return
    for line in installed:
        click.echo(line)
    if installed != expected:
        click.echo("# out of sync with the config: run 'psabill cron install'", err=True)


@cron.command()
def install() -> None:
    """Rewrite psabill's crontab lines from the config (other lines are kept).

    \b
    Example:
      psabill cron install
    """
    from psabill import clock, core

    ctx = get_ctx()
    lines = core.sync_cron(ctx, ctx.load_config(), clock.now(), clock.host_zone())
    if lines:
        click.echo("Installed:")
        for line in lines:
            click.echo(f"  {line}")
    else:
        click.echo("No enabled schedule: psabill's crontab lines removed.")
