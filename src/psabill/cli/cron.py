"""``psabill cron``: show, re-sync and remove this config's crontab lines."""

import click

from psabill import clock
from psabill.cli.options import App, echo, json_option, pass_app
from psabill.cli.render import emit_json
from psabill.ledger.lock import config_lock
from psabill.schedule.crontab import cron_view, remove_cron, sync_cron


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
    view = cron_view(app.paths, app.settings(), clock.now(), clock.host_zone())
    if as_json:
        emit_json({"schema": 1, "lines": view.installed, "expected": view.expected, "in_sync": view.in_sync})
        return
    if not view.installed:
        click.echo(f"# nothing installed: {view.where} has no psabill lines", err=True)
    for line in view.installed:
        click.echo(line)
    if not view.in_sync:
        click.echo("# out of sync with the config: run 'psabill cron install'", err=True)


@cron.command()
@json_option
@pass_app
def install(app: App, as_json: bool) -> None:
    """Rewrite this config's crontab lines from it (every other line is kept).

    A config that does not exist is refused (a mistyped --config changes nothing).

    \b
    Example:
      psabill cron install
    """
    app.settings(must_exist=True)  # a mistyped --config creates nothing, not even the lock
    with config_lock(app.paths.config):
        lines = sync_cron(app.paths, app.settings(must_exist=True), clock.now(), clock.host_zone())
    if as_json:
        emit_json({"schema": 1, "installed": bool(lines), "lines": lines})
        return
    if lines:
        echo("Installed:")
        for line in lines:
            echo(f"  {line}")
    else:
        echo("No enabled schedule: psabill's crontab lines removed.")


@cron.command()
@json_option
@pass_app
def remove(app: App, as_json: bool) -> None:
    """Remove this config's crontab lines (every other line is kept; the config is unchanged).

    \b
    Example:
      psabill cron remove
    """
    removed = remove_cron(app.paths)
    if as_json:
        emit_json({"schema": 1, "config": str(app.paths.config), "removed": removed})
        return
    if removed:
        echo(f"Removed {len(removed)} crontab line(s) for {app.paths.config}.")
    else:
        echo(f"No crontab lines for {app.paths.config}: nothing removed.")
