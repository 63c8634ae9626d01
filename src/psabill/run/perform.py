"""One run, start to finish: record it, refresh, settle, prune, notify.

The run is in the history from its first moment, and every item is recorded
as it settles, so a killed run leaves its record. The report email goes out
only after the run is recorded, so a failed email never loses a result.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from typing import Callable, Iterator, Optional

from psabill import outcomes
from psabill.errors import AbortError, EmailError, ExitCode, PsabillError
from psabill.ledger.history import History
from psabill.config.paths import Paths
from psabill.report import ItemResult, RunReport
from psabill.config.settings import Settings

Progress = Optional[Callable[[int, int, int], None]]  # (items done, items in all, API requests so far)


@dataclass
class Outcome:
    """What a run (or a guard that found nothing due) hands back to the CLI edge."""

    report: Optional[RunReport]  # None: nothing was due
    exit_code: ExitCode
    error: Optional[str] = None  # a one-line message for the edge to show


def perform(paths: Paths, settings: Settings, history: History, report: RunReport, *, dry_run: bool,
            now: Callable[[], datetime], progress: Progress = None, verbose: bool = False) -> Outcome:
    """Run ``report``'s refresh and return its outcome; the caller holds the run lock."""
    from psabill.text import log
    from psabill.schedule.save import describe_run

    describe_run(settings, report, report.started_at)
    logger = log.setup(paths.log, verbose=verbose, max_bytes=settings.log_max_bytes, backups=settings.log_backups)
    history.start_run(report)
    if not dry_run:
        from psabill.notify.ping import ping

        ping(settings.notify.ping_url, "start", logger)
    logger.info("run %s started (%s%s)", report.run_id, report.trigger,
                f", occurrence {report.occurrence.isoformat()}" if report.occurrence else "")
    seq = 0

    def record(item: ItemResult) -> None:
        nonlocal seq
        seq += 1
        assert report.run_id is not None
        history.add_item(report.run_id, seq, item)

    error: Optional[str] = None
    error_code: Optional[ExitCode] = None
    interrupted = False
    try:
        with _signals_interrupt():
            _refresh(settings, report, dry_run=dry_run, record=record, progress=progress)
    except PsabillError as exc:
        # The run stays in the history either way; the exit code says what went wrong.
        report.status = outcomes.ABORTED if isinstance(exc, AbortError) else outcomes.FAILED_RUN
        report.message = error = exc.message
        error_code = exc.exit_code
    except (KeyboardInterrupt, Terminated) as exc:
        # Ctrl-C or SIGTERM: recorded as interrupted, so a scheduled occurrence runs again.
        name = "SIGTERM" if isinstance(exc, Terminated) else "SIGINT"
        report.status = outcomes.INTERRUPTED
        report.message = error = f"interrupted by {name} before it finished"
        error_code = ExitCode.TERMINATED if isinstance(exc, Terminated) else ExitCode.INTERRUPTED
        interrupted = True
    report.finished_at = now()
    report.settle()
    history.finish_run(report)
    seconds = max((report.finished_at - report.started_at).total_seconds(), 1e-9)
    logger.info(
        "run %s finished: %s, %s, %d API requests (%.1f/s)",
        report.run_id, report.status,
        ", ".join(f"{k} {v}" for k, v in report.counts.items()), report.api_requests,
        report.api_requests / seconds,
    )
    pruned = history.prune(timedelta(days=settings.retention_days), settings.guard_horizon)
    if pruned:
        logger.info("history: removed %d runs older than the retention period", pruned)
    code = error_code or {outcomes.FAILED_RUN: ExitCode.PARTIAL, outcomes.PARTIAL: ExitCode.PARTIAL}.get(
        report.status, ExitCode.OK)
    if not dry_run and not interrupted:
        from psabill import notify  # decides itself: scheduled runs always, manual ones if [notify] on_manual

        try:
            notify.send_report(settings.notify, report, history, outbox=paths.outbox)
        except EmailError as exc:
            logger.error("run %s: report email failed: %s", report.run_id, exc.message)
            if code in (ExitCode.OK, ExitCode.PARTIAL):
                code = ExitCode.EMAIL
            error = error or (f"the run was recorded, but its report email failed: {exc.message} "
                              f"(retry with 'psabill email resend {report.run_id}')")
    if not dry_run:
        ping(settings.notify.ping_url, "success" if code == ExitCode.OK else "fail", logger)
    return Outcome(report, code, error)


def account_zone(settings: Settings) -> tzinfo:
    """The account's zone ([account] timezone; UTC when unset)."""
    from psabill.clock import load_zone

    return load_zone(settings.account.timezone or "UTC")


def billing_date(settings: Settings, report: RunReport) -> date:
    """The date the run bills for: its start on the account's calendar, not the UTC date.

    A run at 09:00 on 1 December in Sydney is still 30 November in UTC.
    """
    return report.started_at.astimezone(account_zone(settings)).date()


class Terminated(Exception):
    """SIGTERM arrived during a run."""


@contextlib.contextmanager
def _signals_interrupt() -> Iterator[None]:
    """Turn SIGTERM into :class:`Terminated` (SIGINT already raises KeyboardInterrupt) while a run works."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum: int, frame: object) -> None:
        raise Terminated()

    previous_term = signal.signal(signal.SIGTERM, on_term)
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        signal.signal(signal.SIGINT, previous_int)


def _refresh(settings: Settings, report: RunReport, *, dry_run: bool,
             record: Callable[[ItemResult], None], progress: Progress) -> None:
    """Read usage and update the PSA (the guard refused a config without [psa] or [source])."""
    assert settings.psa is not None
    from psabill import sources
    from psabill.psa.factory import make_client
    from psabill.run import engine, mapping

    products = settings.product_map
    rows = sources.read(settings.source, set(products), settings.path)
    pins = mapping.load(settings.mapping_file)
    client = make_client(settings.psa, settings.path, billing_date=billing_date(settings, report),
                         zone=account_zone(settings))
    try:
        engine.refresh(client, rows, report, products=products, pins=pins, dry_run=dry_run, record=record,
                       concurrency=settings.psa.concurrency, url=settings.psa.url,
                       progress=None if progress is None else
                       (lambda done, total: progress(done, total, client.request_count)))
    finally:
        report.api_requests = client.request_count
        client.close()
