"""``psabill email``: resend, preview and test the results email.

Each command builds what it needs from ``ctx.obj`` (a
:class:`psabill.context.Context`), calls one function of :mod:`psabill.mail`
and raises :mod:`psabill.errors` exceptions; ``psabill.cli`` maps those to exit
codes.
"""

from __future__ import annotations

from typing import Optional

import click

from psabill.errors import ConfigError, UsageError


@click.group(name="email")
def email_group() -> None:
    """Resend, preview or test the report email.

    \b
    Example:
      psabill email preview
    """


@email_group.command("resend")
@click.argument("run", type=int)
@click.pass_context
def resend(ctx: click.Context, run: int) -> None:
    """Send the report of run RUN again to the configured addresses.

    The new outcome (sent or failed) replaces the run's email status in the
    history. Manual runs are sent even when [notify] on_manual is off.

    \b
    Example:
      psabill email resend 42
    """
    from psabill import clock, core, mail

    cfg = ctx.obj.load_config()
    if not cfg.emails:
        raise ConfigError(f"{cfg.path}: [notify] emails is empty: there is nobody to send run {run}'s report to")
    state = ctx.obj.state()
    report = state.report(run)
    if report is None:
        raise UsageError(f"no run {run} in the history: 'psabill history' lists the runs")
    core.describe_run(cfg, report, clock.now())
    mail.send_report(cfg, report, state, force=True)
    click.echo(f"Run {run}: report {report.email_message}")


@email_group.command("preview")
@click.argument("run", type=int, required=False)
@click.option("--html", "as_html", is_flag=True, help="Print the HTML part instead of the text part.")
@click.pass_context
def preview(ctx: click.Context, run: Optional[int], as_html: bool) -> None:
    """Print the report email of run RUN (default: the latest run) without sending it.

    Shows the subject and the plain-text part, or the HTML part with --html.
    Useful after changing [notify] template_dir.

    \b
    Examples:
      psabill email preview
      psabill email preview 42 --html > report.html
    """
    from psabill import clock, core, mail

    cfg = ctx.obj.load_config(check_addresses=False)
    state = ctx.obj.state()
    if run is None:
        latest = state.last_run()
        if latest is None:
            raise UsageError("no run in the history yet: there is no report to preview")
        run = latest.id
    report = state.report(run)
    if report is None:
        raise UsageError(f"no run {run} in the history: 'psabill history' lists the runs")
    core.describe_run(cfg, report, clock.now())
    rendered = mail.render_for(cfg, report)
    if as_html:
        click.echo(rendered.html, nl=not rendered.html.endswith("\n"))
        return
    recipients = ", ".join(cfg.emails) or "(no addresses configured: nothing would be sent)"
    click.echo(f"To: {recipients}")
    click.echo(f"Subject: {rendered.subject}")
    click.echo("")
    click.echo(rendered.text, nl=not rendered.text.endswith("\n"))


@email_group.command("test")
@click.pass_context
def test(ctx: click.Context) -> None:
    """Send a short test message to the configured addresses.

    Checks the [notify] transport settings (SMTP host, TLS, login, sendmail
    command or file dir) without running an update. Nothing is recorded.

    \b
    Example:
      psabill email test
    """
    from psabill import clock, mail

    cfg = ctx.obj.load_config()
    outbox = ctx.obj.state_dir / mail.OUTBOX_DIR
    receipt = mail.send_test(cfg, outbox=outbox, now=clock.now())
    click.echo(f"Test message {receipt}")
