"""``psabill check``: source, PSA, credentials and the email path, without writing."""

import click

from psabill.cli.options import App, echo, json_option, pass_app
from psabill.cli.render import emit_json
from psabill.config import readiness
from psabill.run.check import check as check_all


@click.command()
@click.option("--send-email", is_flag=True, help="Also send a test message (otherwise the email path is tried "
                                                 "without sending).")
@json_option
@pass_app
def check(app: App, send_email: bool, as_json: bool) -> None:
    """Verify the source, the PSA credentials, reachability and the email path; write nothing.

    \b
    Example:
      psabill check
    """
    settings = app.settings(must_exist=True)
    early = readiness.cron_env_warnings(settings)
    for warning in early:  # first: a check that fails (the variable is not set here either) still says it
        click.echo(f"Warning: {warning}", err=True)
    result = check_all(settings, outbox=app.paths.outbox, send_email=send_email)
    for warning in result.warnings:
        if warning not in early:
            click.echo(f"Warning: {warning}", err=True)
    if as_json:
        emit_json({"schema": 1, "source": {"rows": result.rows, "customers": result.customers, "seats": result.seats,
                                           "note": result.source_note or None},
                   "psa": result.psa, "api_requests": result.api_requests, "email": result.email})
        return
    seats = ", ".join(f"{sku} {total}" for sku, total in sorted(result.seats.items())) or "no seats"
    echo(f"Source: {result.rows} rows for {result.customers} customers ({seats})"
         + (f"; {result.source_note}" if result.source_note else ""))
    echo(f"PSA:    {result.psa}")
    echo(f"Email:  {result.email or 'no [notify] emails: no report is sent'}")
    echo("Nothing was written.")
