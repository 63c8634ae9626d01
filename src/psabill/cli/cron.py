"""``psabill cron``: show, re-sync and remove this config's crontab lines."""

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
    from psabill import clock
    from psabill.schedule import crontab
    from psabill.schedule import save as scheduling

    tab = crontab.Crontab(app.paths.crontab_file, app.paths.config)
    installed = tab.lines()
    expected = scheduling.desired_lines(app.paths, app.settings(), clock.now(), clock.host_zone(), validate=False)
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
    """Rewrite this config's crontab lines from it (every other line is kept).

    A config that does not exist is refused (a mistyped --config changes nothing).

    \b
    Example:
      psabill cron install
    """
    from psabill import clock
    from psabill.schedule import save as scheduling

    from psabill.ledger.lock import config_lock

    app.settings(must_exist=True)  # a mistyped --config creates nothing, not even the lock
    with config_lock(app.paths.config):
        settings = app.settings(must_exist=True)
        lines = scheduling.sync_cron(app.paths, settings, clock.now(), clock.host_zone())
    if as_json:
        emit_json({"installed": bool(lines), "lines": lines})
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
    from psabill.schedule import crontab

    tab = crontab.Crontab(app.paths.crontab_file, app.paths.config)
    removed = tab.lines()
    tab.replace([])
    if as_json:
        emit_json({"config": str(app.paths.config), "removed": removed})
        return
    if removed:
        echo(f"Removed {len(removed)} crontab line(s) for {app.paths.config}.")
    else:
        echo(f"No crontab lines for {app.paths.config}: nothing removed.")
