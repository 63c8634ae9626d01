"""``psabill cron``: show and re-sync psabill's crontab lines."""

from __future__ import annotations

import click

from psabill.cli.options import App, echo, emit_json, json_option, pass_app


@click.group()
def cron() -> None:
    """Inspect or re-sync psabill's lines in the crontab.

    \b
    Example:
      psabill cron show
    """


@cron.command()
@json_option
@pass_app
def show(app: App, as_json: bool) -> None:
    """Print psabill's crontab lines (and whether they match the config).

    \b
    Example:
      psabill cron show --json
    """
    from psabill import clock, crontab, scheduling

    tab = crontab.Crontab(app.paths.crontab_file)
    installed = tab.lines()
    expected = scheduling.desired_lines(app.paths, app.settings(), clock.now(), clock.host_zone())
    if as_json:
        emit_json({"lines": installed, "expected": expected, "in_sync": installed == expected})
        return
    if not installed:
        click.echo(f"# nothing installed: {tab.where} has no psabill lines", err=True)
    for line in installed:
        click.echo(line)
    if installed != expected:
        click.echo("# out of sync with the config: run 'psabill cron install'", err=True)


@cron.command()
@json_option
@pass_app
def install(app: App, as_json: bool) -> None:
    """Rewrite psabill's crontab lines from the config (other lines are kept).

    \b
    Example:
      psabill cron install
    """
    from psabill import clock, scheduling

    lines = scheduling.sync_cron(app.paths, app.settings(), clock.now(), clock.host_zone())
    if as_json:
        emit_json({"installed": bool(lines), "lines": lines})
        return
    if lines:
        echo("Installed:")
        for line in lines:
            echo(f"  {line}")
    else:
        echo("No enabled schedule: psabill's crontab lines removed.")
