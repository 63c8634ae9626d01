"""``psabill status``: schedule, next run, cron entry, last run."""

from __future__ import annotations

import click

from psabill.cli.options import App, colour_wanted, emit_json, json_option, pass_app, render_status


@click.command()
@json_option
@pass_app
def status(app: App, as_json: bool) -> None:
    """Show the schedule, the next and last run, and the crontab entry.

    The JSON keys are stable (see the README): version, schedule, next_run,
    cron, last_run, missed, notify, config, state_dir. On a terminal, states
    are coloured (NO_COLOR turns it off, CLICOLOR_FORCE=1 forces it).

    \b
    Example:
      psabill status --json | jq .next_run.utc
    """
    from psabill import __version__, clock
    from psabill import status as status_mod

    now = clock.now()
    data = {"version": __version__, **status_mod.build(app.paths, app.settings(), now, clock.host_zone()).to_json()}
    if as_json:
        emit_json(data)
        return
    render_status(data, now, colour=colour_wanted())

