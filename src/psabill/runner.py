"""``psabill run``: the guard that makes each occurrence run once, and the run itself.

The not-due path is what cron hits most, so :func:`due_occurrence` touches
only the config (tomllib), the schedule core and a read-only SQLite query. The
refresh, the PSA clients, httpx and Jinja2 are imported only once a run starts.

Guard rule: at ``now`` the due occurrence is the latest occurrence at or before
``now`` that has not run and is at most ``[schedule] catch_up`` old. Anything
older is *missed* (``status`` reports it); it is never run late.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable, Optional

from psabill import report as rpt
from psabill.config import Config
from psabill.context import Context
from psabill.errors import AbortError, EmailError, ExitCode, PsabillError
from psabill.report import RunReport

DEFAULT_LOCK_TIMEOUT = "10m"
RETENTION_DAYS = 400  # the history keeps at least LastPass's 60 days, and a year for audits


@dataclass
class Outcome:
    report: Optional[RunReport]  # None: nothing was due
    exit_code: ExitCode
    error: Optional[str] = None  # a one-line message for the edge to show


def due_occurrence(ctx: Context, cfg: Config, now: datetime, *, readonly: bool) -> Optional[datetime]:
    from psabill.core import schedule_enabled, schedule_from

    schedule = schedule_from(cfg)
    if schedule is None or not schedule_enabled(cfg):
        return None
    occurrence = schedule.previous(now)
    if occurrence is None or now - occurrence > cfg.catch_up:
        return None
    state = ctx.state()
    done = state.occurrence_done_readonly(occurrence) if readonly else state.occurrence_done(occurrence)
    return None if done else occurrence


Progress = Optional[Callable[[int, int, int], None]]  # (items done, items in all, API requests so far)


def run_scheduled(ctx: Context, now: Callable[[], datetime]) -> Outcome:
    """The cron entry point. Prints nothing and returns OK when nothing is due."""
    cfg = ctx.load_config(check_addresses=False, must_exist=True)
    if due_occurrence(ctx, cfg, now(), readonly=True) is None:
        return Outcome(None, ExitCode.OK)
    cfg = ctx.load_config(must_exist=True)
    state = ctx.state()
    with state.run_lock(_lock_timeout(cfg)):
        state.mark_interrupted()
        # Whoever held the lock before us may have run this very occurrence.
        at = now()
        occurrence = due_occurrence(ctx, cfg, at, readonly=False)
        if occurrence is None:
            return Outcome(None, ExitCode.OK)
        late = int((at - occurrence).total_seconds())
        report = _new_report(cfg, "scheduled", at, occurrence=occurrence, late_seconds=late if late >= 60 else None)
        return _perform(ctx, cfg, report, dry_run=False, now=now)


def run_manual(ctx: Context, now: Callable[[], datetime], *, dry_run: bool, progress: Progress = None) -> Outcome:
    cfg = ctx.load_config(must_exist=True)
    state = ctx.state()
    with state.run_lock(_lock_timeout(cfg)):
        state.mark_interrupted()
        report = _new_report(cfg, "dry-run" if dry_run else "manual", now())
        return _perform(ctx, cfg, report, dry_run=dry_run, now=now, progress=progress)


def _lock_timeout(cfg: Config) -> float:
    from psabill.config import parse_duration

    return parse_duration(cfg.get("run.lock_timeout", DEFAULT_LOCK_TIMEOUT)).total_seconds()


def _new_report(cfg: Config, trigger: str, at: datetime, **kwargs: object) -> RunReport:
    from psabill.core import describe_run

    return describe_run(cfg, RunReport(trigger=trigger, started_at=at, **kwargs), at)  # type: ignore[arg-type]


def _perform(ctx: Context, cfg: Config, report: RunReport, *, dry_run: bool, now: Callable[[], datetime],
             progress: Progress = None) -> Outcome:
    from psabill import log

    logger = log.setup(ctx)
    state = ctx.state()
    state.start_run(report)
    logger.info("run %s started (%s%s)", report.run_id, report.trigger,
                f", occurrence {report.occurrence.isoformat()}" if report.occurrence else "")
    seq = 0

    def record(item: rpt.ItemResult) -> None:
        nonlocal seq
        seq += 1
        assert report.run_id is not None
        state.add_item(report.run_id, seq, item)

    error: Optional[str] = None
    error_code: Optional[ExitCode] = None
    try:
        _refresh(cfg, report, dry_run=dry_run, record=record, progress=progress)
    except PsabillError as exc:
        # The run stays in the history either way; the exit code says what went wrong.
        report.status = rpt.ABORTED if isinstance(exc, AbortError) else rpt.FAILED_RUN
        report.message = error = exc.message
        error_code = exc.exit_code
    report.finished_at = now()
    report.settle()
    state.finish_run(report)
    seconds = max((report.finished_at - report.started_at).total_seconds(), 1e-9)
    logger.info(
        "run %s finished: %s, %s, %d API requests (%.1f/s)",
        report.run_id, report.status,
        ", ".join(f"{k} {v}" for k, v in report.counts.items()), report.api_requests,
        report.api_requests / seconds,
    )
    pruned = state.prune(report.started_at - timedelta(days=int(cfg.get("history.retention_days", RETENTION_DAYS))))
    if pruned:
        logger.info("history: removed %d runs older than the retention period", pruned)
    code = error_code or {rpt.FAILED_RUN: ExitCode.PARTIAL, rpt.PARTIAL: ExitCode.PARTIAL}.get(
        report.status, ExitCode.OK)
    if not dry_run:
        from psabill import mail  # decides itself: scheduled runs always, manual ones if [notify] on_manual

        try:
            mail.send_report(cfg, report, state)
        except EmailError as exc:
            logger.error("run %s: report email failed: %s", report.run_id, exc.message)
            if code in (ExitCode.OK, ExitCode.PARTIAL):
                code = ExitCode.EMAIL
            error = error or f"the run was recorded, but its report email failed: {exc.message} (retry with 'psabill email resend {report.run_id}')"
    return Outcome(report, code, error)


def _refresh(cfg: Config, report: RunReport, *, dry_run: bool, record: Callable[[rpt.ItemResult], None],
             progress: Progress) -> None:
    """Read usage and update the PSA. Without [psa] there is nothing to update yet."""
    if not cfg.section("psa"):
        report.message = "no [psa] configured: nothing to update"
        return
    from psabill import refresh, sources
    from psabill.psa.factory import make_client

    rows = sources.read(cfg)
    client = make_client(cfg)
    try:
        refresh.refresh(cfg, client, rows, report, dry_run=dry_run, record=record,
                        progress=None if progress is None else
                        (lambda done, total: progress(done, total, client.request_count)))
    finally:
        report.api_requests = client.request_count
        client.close()

