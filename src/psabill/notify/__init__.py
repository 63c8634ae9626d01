"""The results email: decide, render, deliver, and record what happened.

Steps, each in its own module and usable alone:

* :mod:`~psabill.notify.facts` states what the email says;
* :mod:`~psabill.notify.templates` renders subject, text and HTML (Jinja2);
* :mod:`~psabill.notify.message` wraps them in a MIME message;
* :mod:`~psabill.notify.transports` hands it to SMTP, sendmail or a file.

One email per occurrence's story: the first attempt's report goes out; a
retry that fails again stays quiet; the attempt that finally succeeds, or the
last one within catch-up, reports again, threaded under the first
(``In-Reply-To``). Each report has a stable Message-ID, so a re-send is
recognisable as the same message.

Delivery is recorded ``pending`` (with the Message-ID) before the message is
handed over, and ``sent`` or ``failed`` after. A report left pending (psabill
killed mid-delivery) or failed is shown by ``status`` as undelivered, and the
next firing within catch-up sends it again.
"""

import html
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, List, Optional

from psabill import clock, outcomes
from psabill.config import addresses
from psabill.config.paths import Paths
from psabill.config.settings import Settings
from psabill.errors import ConfigError, EmailError, UsageError
from psabill.ledger.history import Ledger, open_store
from psabill.notify.facts import header_text
from psabill.notify.message import build_message, message_id, sender_for
from psabill.notify.templates import Rendered, render
from psabill.notify.transports import deliver
from psabill.report import Run
from psabill.text import clean

# Email status values stored in the ledger.
SENT = "sent"
EMAIL_FAILED = "failed"
SKIPPED = "skipped"
PENDING = "pending"
UNDELIVERED = (PENDING, EMAIL_FAILED)
PENDING_TEXT = "being handed to the mailer; its delivery was never confirmed"


def run_filename(run_id: Optional[int]) -> str:
    return f"run-{run_id:06d}.eml" if run_id is not None else "run-unsaved.eml"


def should_send(settings: Settings, run: Run, earlier: List[Run], *, retrying: bool) -> Optional[str]:
    """None when the report should be emailed, else why not (the skipped status text).

    ``earlier`` are the occurrence's earlier attempts; ``retrying``: a later firing tries this one again.
    """
    notify = settings.notify
    if not notify.emails:
        return "no notification addresses configured ([notify] emails): no report is sent"
    if run.trigger not in ("scheduled",) and not notify.on_manual:
        return (f"{run.trigger} run: no report is sent (set [notify] on_manual = true to email manual runs)")
    if run.trigger == "scheduled" and earlier:
        reported = [r for r in earlier if r.email.status == SENT]
        failing = run.status in outcomes.BAD or run.status in (outcomes.PARTIAL, outcomes.FAILED_RUN)
        if reported and failing and retrying:
            return (f"attempt {run.attempt} of this occurrence failed again; its first failure was emailed "
                    f"(run {reported[0].id}), and the final outcome will be")
    return None


def report_run(settings: Settings, paths: Paths, run: Run, ledger: Ledger, *, retrying: bool,
               now: Optional[datetime] = None, force: bool = False) -> None:
    """Decide, render, deliver and record a run's report (see the module docstring). Raises EmailError."""
    earlier = [r for r in ledger.of_occurrence(run) if r.id != run.id and r.trigger == "scheduled"] \
        if run.occurrence is not None else []
    reason = None if force and settings.notify.emails else should_send(settings, run, earlier, retrying=retrying)
    if reason is not None:
        _record(ledger, run, SKIPPED, reason)
        return
    first = next((r for r in earlier if r.email.message_id), None)
    next_attempt = _next_attempt(settings, run, now or run.finished_at or run.started_at) if retrying else None
    send(settings, paths, run, ledger, next_attempt=next_attempt, in_reply_to=first.email.message_id if first else None,
         now=now)
    _supersede(ledger, run, earlier)


def _next_attempt(settings: Settings, run: Run, at: datetime) -> Optional[datetime]:
    if run.occurrence is None or settings.when is None:
        return None
    from psabill.schedule.cronplan import next_retry  # the same firing `status` names

    return next_retry(settings.when, settings.schedule.catch_up, run.occurrence, at, clock.host_zone())


def _supersede(ledger: Ledger, run: Run, earlier: List[Run]) -> None:
    """Once ``run``'s report is delivered, its occurrence's earlier undelivered reports are not re-sent."""
    for old in earlier:
        if old.id is not None and old.id < (run.id or 0) and old.email.status in UNDELIVERED:
            _record(ledger, old, SKIPPED, f"superseded by run {run.id}'s report, which was delivered")


def redeliver(settings: Settings, paths: Paths, ledger: Ledger, now: datetime, *,
              verbose: bool = False) -> Optional[str]:
    """Re-send each scheduled report of an occurrence within catch-up that was never confirmed delivered.

    A report left ``pending`` (psabill killed while handing it over) or ``failed`` goes out again, as the
    run was, with its own Message-ID (a duplicate is recognisable) and threaded like the first send. The
    caller holds the run lock. None when every one was delivered (or there was none); else the one-line
    failure to show, or "" when that report had failed before (cron was told then; the log says it again).
    """
    from psabill.text import log  # logging: only a firing that re-sends a report

    logger = log.setup(paths.log, verbose=verbose, max_bytes=settings.log.max_bytes, backups=settings.log.backups)
    failures: List[str] = []
    for stale in ledger.undelivered(now - settings.schedule.catch_up):
        run = ledger.run(stale.id) if stale.id is not None else None
        if run is None:
            continue
        before = run.email.status
        if not settings.notify.emails:
            _record(ledger, run, SKIPPED, "no notification addresses configured ([notify] emails): "
                                          "the undelivered report is not sent")
            continue
        earlier = [r for r in ledger.of_occurrence(run) if r.id != run.id and r.trigger == "scheduled"]
        first = next((r for r in earlier if r.email.message_id), None)
        retrying = run.occurrence is not None and not ledger.occurrence_done(run.occurrence)
        try:
            send(settings, paths, run, ledger, next_attempt=_next_attempt(settings, run, now) if retrying else None,
                 in_reply_to=first.email.message_id if first else None, now=now)
        except EmailError as exc:
            logger.error("run %s: re-sending its undelivered report failed: %s", run.id, exc.message)
            failures.append("" if before == EMAIL_FAILED else (
                f"run {run.id}'s report was never confirmed delivered, and sending it again failed: "
                f"{exc.message} (the next firing within catch-up tries again, or 'psabill email resend {run.id}')"))
            continue
        logger.info("run %s: its undelivered report (%s) was sent again: %s", run.id, before, run.email.message)
        _supersede(ledger, run, earlier)
    if not failures:
        return None
    return next((text for text in failures if text), "")


def send(settings: Settings, paths: Paths, run: Run, ledger: Optional[Ledger], *, next_attempt: Any = None,
         in_reply_to: Optional[str] = None, now: Optional[datetime] = None) -> None:
    """Render and deliver ``run``'s report to ``[notify] emails``, recording pending, then sent or failed."""
    notify = settings.notify
    try:
        recipients = addresses.recipients(notify.emails)
        sender = sender_for(notify.sender, notify.transport)
        mid = run.email.message_id or message_id(run, sender)
        run.email.message_id = mid
        if ledger is not None and run.id is not None:  # before anything that can hang or be killed
            ledger.set_email(run.id, PENDING, PENDING_TEXT, mid)
        rendered = render_for(settings, run, next_attempt=next_attempt)
        message = build_message(rendered, [r.display for r in recipients], sender=sender, now=now, run_id=run.id,
                                message_id=mid, in_reply_to=in_reply_to)
        receipt = deliver(settings, message, [r.address for r in recipients], outbox=paths.outbox,
                          name=run_filename(run.id))
    except EmailError as exc:
        _record(ledger, run, EMAIL_FAILED, exc.message)
        raise
    except Exception as exc:  # an address the validator let through, a template's own error...
        message_text = f"cannot send the report: {type(exc).__name__}: {clean.message(exc)}"
        _record(ledger, run, EMAIL_FAILED, message_text)
        raise EmailError(message_text) from None
    _record(ledger, run, SENT, receipt)


def _record(ledger: Optional[Ledger], run: Run, status: str, message: str) -> None:
    run.email.status = status
    run.email.message = message
    if ledger is not None and run.id is not None:
        ledger.set_email(run.id, status, message, run.email.message_id)


def render_for(settings: Settings, run: Run, *, next_attempt: Any = None) -> Rendered:
    """:func:`~psabill.notify.templates.render` with the template dir and links from the settings."""
    return render(run, template_dir=settings.notify.template_dir, history_url=settings.notify.history_url,
                  site_url=settings.history.site_url, next_attempt=next_attempt)


def send_test(settings: Settings, *, outbox: Optional[Path] = None, now: Optional[datetime] = None,
              dry: bool = False) -> str:
    """A short fixed message to every configured address; returns the receipt.

    With ``dry``, everything but the hand-over is done (the addresses, the
    sender, the message, the transport's own checks): ``check`` uses it.
    """
    notify = settings.notify
    if not notify.emails:
        raise EmailError("no notification addresses configured: set [notify] emails")
    recipients = addresses.recipients(notify.emails)
    account = clean.name(settings.account.name) or "psabill"
    text = (f"This is a test message from psabill for {account}.\n\n"
            f"If you can read it, billing reports will reach {', '.join(r.address for r in recipients)}.\n")

    body = ("<!DOCTYPE html>\n<html><body><p>This is a test message from psabill for "
            f"<strong>{html.escape(account)}</strong>.</p><p>If you can read it, billing reports "
            f"will reach {html.escape(', '.join(r.address for r in recipients))}.</p></body></html>\n")

    rendered = Rendered(subject=header_text(f"psabill test message ({account})"), text=text, html=body)
    sender = sender_for(notify.sender, notify.transport)
    message = build_message(rendered, [r.display for r in recipients], sender=sender, now=now)
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    return deliver(settings, message, [r.address for r in recipients], outbox=outbox, name=f"test-{stamp}.eml",
                   dry=dry)


def stored_run(settings: Settings, paths: Paths, run_id: Optional[int]) -> "tuple":
    """(the ledger, run ``run_id`` as it was recorded; the latest run when None), or a UsageError."""
    store = open_store(paths, settings.state_url, settings.account_id)
    if not store.ledger.exists:
        raise UsageError("no run in the history yet: there is no report")
    ledger = store.ledger
    if run_id is None:
        latest = ledger.last_run()
        if latest is None:
            ledger.close()
            raise UsageError("no run in the history yet: there is no report")
        run_id = latest.id
    assert run_id is not None
    run = ledger.run(run_id)
    if run is None:
        ledger.close()
        raise UsageError(f"no run {run_id} in the history: 'psabill history' lists the runs")
    return ledger, run


def resend(settings: Settings, paths: Paths, run_id: int, now: Optional[datetime] = None) -> Run:
    """Send run ``run_id``'s report again, rendered as the run was; its email status is updated."""
    if not settings.notify.emails:
        raise ConfigError(f"{settings.path}: [notify] emails is empty: there is nobody to send run {run_id}'s "
                          "report to")
    ledger, run = stored_run(settings, paths, run_id)
    with ledger:
        send(settings, paths, run, ledger, now=now)
    return run


def preview(settings: Settings, paths: Paths, run_id: Optional[int]) -> "tuple":
    """(the run, its report rendered as the email would be) without sending."""
    ledger, run = stored_run(settings, paths, run_id)
    ledger.close()
    return run, render_for(settings, run)
