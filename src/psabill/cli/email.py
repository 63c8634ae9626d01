"""``psabill email``: resend, preview and test the results email."""

from typing import Optional

import click

from psabill import clock, notify
from psabill.cli.options import RUN_ID, App, complete_run_id, echo, json_option, pass_app
from psabill.cli.render import emit_json


@click.group(name="email")
def email_group() -> None:
    """Resend, preview or test the report email.

    \b
    Example:
      psabill email preview
    """


@email_group.command("resend")
@click.argument("run", type=RUN_ID, shell_complete=complete_run_id)
@json_option
@pass_app
def resend(app: App, run: int, as_json: bool) -> None:
    """Send the report of run RUN again, as the run was, to the configured addresses.

    The new outcome (sent or failed) replaces the run's email status in the
    history; the message keeps its Message-ID, so it reads as the same report.
    Manual runs are sent even when [notify] on_manual is off.

    \b
    Example:
      psabill email resend 42
    """
    sent = notify.resend(app.settings(), app.paths, run, now=clock.now())
    if as_json:
        emit_json({"schema": 1, "run": run, "email": {"status": sent.email.status, "message": sent.email.message}})
        return
    echo(f"Run {run}: report {sent.email.message}")


@email_group.command("preview")
@click.argument("run", type=RUN_ID, required=False, shell_complete=complete_run_id)
@click.option("--html", "as_html", is_flag=True, help="Print the HTML part instead of the text part.")
@pass_app
def preview(app: App, run: Optional[int], as_html: bool) -> None:
    """Print the report email of run RUN (default: the latest run) without sending it.

    Shows the subject and the plain-text part, or the HTML part with --html.
    Useful after changing [notify] template_dir.

    \b
    Examples:
      psabill email preview
      psabill email preview 42 --html > report.html
    """
    settings = app.settings(check_addresses=False)
    _run, rendered = notify.preview(settings, app.paths, run)
    if as_html:
        click.echo(rendered.html, nl=not rendered.html.endswith("\n"))
        return
    recipients = ", ".join(settings.notify.emails) or "(no addresses configured: nothing would be sent)"
    click.echo(f"To: {recipients}")
    click.echo(f"Subject: {rendered.subject}")
    click.echo("")
    click.echo(rendered.text, nl=not rendered.text.endswith("\n"))


@email_group.command("test")
@json_option
@pass_app
def test(app: App, as_json: bool) -> None:
    """Send a short test message to the configured addresses.

    Checks the [notify] transport settings (SMTP host, TLS, login, sendmail
    command or file dir) without running an update. Nothing is recorded.

    \b
    Example:
      psabill email test
    """
    settings = app.settings()
    receipt = notify.send_test(settings, outbox=app.paths.outbox, now=clock.now())
    if as_json:
        emit_json({"schema": 1, "sent": True, "receipt": receipt, "to": list(settings.notify.emails)})
        return
    echo(f"Test message {receipt}")
