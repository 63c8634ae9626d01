"""``psabill status``: schedule, next run, cron entry, last run, and what needs you."""

import click

from psabill import clock
from psabill import status as status_mod
from psabill.cli.options import App, colour_wanted, json_option, pass_app
from psabill.cli.render import emit_json, paint


@click.command()
@json_option
@pass_app
def status(app: App, as_json: bool) -> None:
    """Show the schedule, the next and last run, the crontab entry, and anything held or undelivered.

    The JSON keys are stable (docs/json.md). On a terminal, states are
    coloured (NO_COLOR turns it off, CLICOLOR_FORCE=1 forces it).

    \b
    Example:
      psabill status --json | jq .next_run.utc
    """
    now = clock.now()
    view = status_mod.build(app.paths, app.settings(), now, clock.host_zone())
    if as_json:
        emit_json(view.to_json())
        return
    colour = colour_wanted()
    click.echo(view.text(lambda text: paint(text, colour)), color=True if colour else None)
