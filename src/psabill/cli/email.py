"""``psabill email``: resend, preview and test the results email.

Each command loads what it needs through the :class:`~psabill.cli.options.App`,
calls :mod:`psabill.notify` and raises :mod:`psabill.errors` exceptions; the
root group maps those to exit codes.
"""

from __future__ import annotations

from typing import Optional

import click

from psabill.cli.options import RUN_ID, App, complete_run_id, echo, emit_json, json_option, pass_app
from psabill.errors import ConfigError, UsageError


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
    """Send the report of run RUN again to the configured addresses.

    The new outcome (sent or failed) replaces the run's email status in the
    history. Manual runs are sent even when [notify] on_manual is off.

    \b
    Example:
      psabill email resend 42
    """
    from psabill import clock, notify
    from psabill.schedule import save as scheduling

    settings = app.settings()
    if not settings.notify.emails:
        raise ConfigError(f"{settings.path}: [notify] emails is empty: there is nobody to send run {run}'s report to")
    with app.history() as history:
        report = history.report(run)
        if report is None:
            raise UsageError(f"no run {run} in the history: 'psabill history' lists the runs")
        scheduling.describe_run(settings, report, clock.now())
        notify.send_report(settings.notify, report, history, outbox=app.paths.outbox, force=True)
    if as_json:
        emit_json({"run": run, "email": {"status": report.email_status, "message": report.email_message}})
        return
    echo(f"Run {run}: report {report.email_message}")


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
    from psabill import clock
    from psabill.schedule import save as scheduling
    from psabill.notify.templates import render_for

    settings = app.settings(check_addresses=False)
    with app.history() as history:
        if run is None:
            latest = history.last_run()
            if latest is None:
                raise UsageError("no run in the history yet: there is no report to preview")
            run = latest.id
        report = history.report(run)
    if report is None:
        raise UsageError(f"no run {run} in the history: 'psabill history' lists the runs")
    scheduling.describe_run(settings, report, clock.now())
    rendered = render_for(settings.notify, report)
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
    from psabill import clock, notify

    settings = app.settings()
    receipt = notify.send_test(settings.notify, settings.account.name, outbox=app.paths.outbox, now=clock.now())
    if as_json:
        emit_json({"sent": True, "receipt": receipt, "to": list(settings.notify.emails)})
        return
    echo(f"Test message {receipt}")
