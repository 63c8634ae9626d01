"""What is due, and running it exactly once.

The not-due path is what cron hits most, so :func:`run_scheduled` parses the
config once, asks the pure schedule core, and makes one read-only ledger
query (SQLite, or PostgreSQL with ``[state] url``). The refresh, the PSA
clients, httpx and Jinja2 are imported only once a run starts.

Guard rule: at ``now`` the due occurrence is the latest occurrence at or before
``now`` that has not run and is at most ``[schedule] catch_up`` old. Anything
older is *missed* (``status`` reports it); it is never run late.

Each run opens one :class:`~psabill.ledger.history.History` (and its run lock) through
:func:`~psabill.ledger.history.open_store`, and closes it on every path.
"""

from __future__ import annotations

from datetime import datetime
from typing import Callable, Optional

from typing import TYPE_CHECKING

from psabill.errors import ExitCode
from psabill.ledger.history import open_store, state_url
from psabill.config.paths import Paths
from psabill.config.settings import Settings, load

if TYPE_CHECKING:  # the run machinery loads only once an occurrence is due
    from psabill.run.perform import Outcome, Progress

def due_occurrence(settings: Settings, now: datetime, done: Callable[[datetime], bool]) -> Optional[datetime]:
    """The occurrence to run at ``now``, or None; ``done`` asks the ledger."""
    from psabill.schedule.save import schedule_of

    schedule = schedule_of(settings)
    if schedule is None or not settings.schedule.enabled:
        return None
    occurrence = schedule.previous(now)
    if occurrence is None or now - occurrence > settings.schedule.catch_up:
        return None
    return None if done(occurrence) else occurrence


def run_scheduled(paths: Paths, now: Callable[[], datetime], *, verbose: bool = False) -> Outcome:
    """The cron entry point. Prints nothing and returns OK when nothing is due."""
    from psabill.report import RunReport
    from psabill.run.perform import Outcome, perform

    settings = load(paths.config, check_addresses=False, must_exist=True)
    store = open_store(paths, state_url(settings.state_url))
    if due_occurrence(settings, now(), store.history.occurrence_done_readonly) is None:
        return Outcome(None, ExitCode.OK)
    _check_addresses(settings)
    _check_ready(settings)

    with store.lock(settings.lock_timeout), store.history as history:
        history.mark_interrupted()
        # Whoever held the lock before us may have run this very occurrence.
        at = now()
        occurrence = due_occurrence(settings, at, history.occurrence_done)
        if occurrence is None:
            return Outcome(None, ExitCode.OK)
        late = int((at - occurrence).total_seconds())
        report = RunReport(trigger="scheduled", started_at=at, occurrence=occurrence,
                           late_seconds=late if late >= 60 else None)
        return perform(paths, settings, history, report, dry_run=False, now=now, verbose=verbose)


def run_manual(paths: Paths, now: Callable[[], datetime], *, dry_run: bool, progress: Progress = None,
               verbose: bool = False) -> Outcome:
    """A run by hand (or a dry run): no guard, but the same lock and record."""
    from psabill.report import RunReport
    from psabill.run.perform import perform

    settings = load(paths.config, must_exist=True)
    _check_ready(settings)
    store = open_store(paths, state_url(settings.state_url))
    with store.lock(settings.lock_timeout), store.history as history:
        history.mark_interrupted()
        report = RunReport(trigger="dry-run" if dry_run else "manual", started_at=now())
        return perform(paths, settings, history, report, dry_run=dry_run, now=now, progress=progress,
                       verbose=verbose)


def _check_ready(settings: Settings) -> None:
    """A config without [psa] or [source] cannot update anything: refuse, record nothing."""
    from psabill.config import readiness
    from psabill.errors import ConfigError

    if readiness.missing(settings):
        raise ConfigError(readiness.not_ready_text(settings))


def _check_addresses(settings: Settings) -> None:
    """The not-due path skips email-validator; a due run checks the addresses like any load."""
    if not settings.notify.emails:
        return
    from psabill.config.addresses import validate_addresses
    from psabill.errors import ConfigError, UsageError

    try:
        validate_addresses(settings.notify.emails)
    except UsageError as exc:
        raise ConfigError(f"{settings.path}: [notify] emails: {exc.message}") from None
