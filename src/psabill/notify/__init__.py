"""The results email: render a RunReport, deliver it, record what happened.

Steps, each in its own module and usable alone:

* :mod:`~psabill.notify.facts` states what the email says;
* :mod:`~psabill.notify.templates` renders subject, text and HTML (Jinja2);
* :mod:`~psabill.notify.message` wraps them in a MIME message;
* :mod:`~psabill.notify.transports` hands it to SMTP, sendmail or a file.

:func:`send_report` chains them for a run and records the outcome in the
history *after* the run itself is recorded, so a failed email never loses a
result. jinja2 and smtplib are imported inside functions: a cron invocation
that finds nothing due must not pay for (or depend on) them.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from psabill.errors import EmailError
from psabill.notify.facts import TRIGGER_WORDS, header_text, inline
from psabill.notify.message import build_message, sender_for
from psabill.notify.templates import Rendered, render_for
from psabill.notify.transports import deliver
from psabill.report import RunReport
from psabill.config.settings import NotifySettings

if TYPE_CHECKING:  # pragma: no cover - typing only
    from psabill.ledger.history import History

# Email status values stored in the history.
SENT = "sent"
EMAIL_FAILED = "failed"
SKIPPED = "skipped"


def run_filename(run_id: Optional[int]) -> str:
    return f"run-{run_id:06d}.eml" if run_id is not None else "run-unsaved.eml"


def should_send(notify: NotifySettings, report: RunReport) -> Optional[str]:
    """None when the report should be emailed, else why not (the skipped status text)."""
    if not notify.emails:
        return "no notification addresses configured ([notify] emails): no report is sent"
    if report.trigger != "scheduled" and not notify.on_manual:
        return (
            f"{TRIGGER_WORDS.get(report.trigger, report.trigger)} run: no report is sent "
            "(set [notify] on_manual = true to email manual runs)"
        )
    return None


def send_report(
    notify: NotifySettings,
    report: RunReport,
    history: "History",
    *,
    outbox: Path,
    force: bool = False,
    now: Optional[datetime] = None,
) -> None:
    """Render, deliver, and record ``sent`` / ``failed`` / ``skipped`` for ``report``.

    Call after the run is recorded (``report.run_id`` set). ``force`` sends even
    a manual run's report (``email resend``); no addresses is always skipped.
    Raises EmailError after recording the failure.
    """
    reason = None if force and notify.emails else should_send(notify, report)
    if reason is not None:
        _record(history, report, SKIPPED, reason)
        return
    recipients = list(notify.emails)
    try:
        rendered = render_for(notify, report)
        sender = sender_for(notify.sender, notify.transport)
        message = build_message(rendered, recipients, sender=sender, now=now, run_id=report.run_id)
        receipt = deliver(notify, message, recipients, outbox=outbox, name=run_filename(report.run_id))
    except EmailError as exc:
        _record(history, report, EMAIL_FAILED, exc.message)
        raise
    _record(history, report, SENT, receipt)


def _record(history: "History", report: RunReport, status: str, message: str) -> None:
    report.email_status = status
    report.email_message = message
    if report.run_id is not None:
        history.set_email(report.run_id, status, message)


def send_test(notify: NotifySettings, account_name: str, *, outbox: Optional[Path] = None,
              now: Optional[datetime] = None) -> str:
    """A short fixed message to every configured address; returns the receipt."""
    recipients = list(notify.emails)
    if not recipients:
        raise EmailError("no notification addresses configured: set [notify] emails")
    account = inline(account_name) or "psabill"
    text = (
        f"This is a test message from psabill for {account}.\n\n"
        f"If you can read it, billing reports will reach {', '.join(recipients)}.\n"
    )
    import html as html_mod

    body = (
        "<!DOCTYPE html>\n<html><body><p>This is a test message from psabill for "
        f"<strong>{html_mod.escape(account)}</strong>.</p><p>If you can read it, billing reports "
        f"will reach {html_mod.escape(', '.join(recipients))}.</p></body></html>\n"
    )
    rendered = Rendered(subject=header_text(f"psabill test message ({account})"), text=text, html=body)
    message = build_message(rendered, recipients, sender=sender_for(notify.sender, notify.transport), now=now)
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    return deliver(notify, message, recipients, outbox=outbox, name=f"test-{stamp}.eml")
