"""What is due, and running it exactly once; the ways a run starts.

The not-due path is what cron hits most, so :func:`due_occurrence` needs only
the typed settings (the schedule is decoded there, once) and one read-only
ledger query. The run machinery is imported only once a run starts.

Guard rule: at ``now`` the due occurrence is the latest occurrence at or
before ``now`` that is not done and is at most ``[schedule] catch_up`` old.
Anything older is *missed* (``status`` reports it); it is never run late.

Every run holds this config's run lock, re-checks the ledger after taking it,
and marks runs a killed process left ``running`` as interrupted. An
interactive run plans under the lock, lets it go while the admin reads the
plan, then takes it again to apply that same plan, re-reading the lines it
writes first (a line that moved since fails, the others go on).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Callable, Optional

from psabill.config.paths import Paths
from psabill.config.settings import Settings, load
from psabill.errors import ExitCode
from psabill.ledger.history import Ledger, open_store

if TYPE_CHECKING:  # the run machinery loads only once an occurrence is due
    from psabill.run.perform import Confirm, Outcome, Progress

Now = Callable[[], datetime]


def due_occurrence(settings: Settings, now: datetime, done: Callable[[datetime], bool]) -> Optional[datetime]:
    """The occurrence to run at ``now``, or None; ``done`` asks the ledger."""
    schedule = settings.when
    if schedule is None or not settings.schedule.enabled:
        return None
    occurrence = schedule.previous(now)
    if occurrence is None or now - occurrence > settings.schedule.catch_up:
        return None
    return None if done(occurrence) else occurrence


def undelivered_within_catch_up(settings: Settings, now: datetime, ledger: Ledger) -> bool:
    """Whether a scheduled run's report, of an occurrence within catch-up, was never confirmed delivered
    (left ``pending`` by a run killed mid-delivery, or ``failed``): the next firing re-sends it.

    Only the firings within catch-up of the latest occurrence ask the ledger; the others cost nothing."""
    schedule = settings.when
    if schedule is None or not settings.schedule.enabled:
        return False
    latest = schedule.previous(now)
    if latest is None or now - latest > settings.schedule.catch_up:
        return False
    return ledger.undelivered_readonly(now - settings.schedule.catch_up)


def run_scheduled(paths: Paths, now: Now, *, verbose: bool = False) -> Outcome:
    """The cron entry point. Prints nothing and returns OK when nothing is due (an undelivered report
    within catch-up is re-sent then: :func:`psabill.notify.redeliver`)."""
    # The run machinery loads only here: the not-due fast path imports this module for due_occurrence.
    from psabill.config import addresses, readiness
    from psabill.report import Run
    from psabill.run.perform import Job, Outcome

    settings = load(paths.config, check_addresses=False, must_exist=True)
    store = open_store(paths, settings.state_url, settings.account_id)
    with store.ledger.one_look():
        due = due_occurrence(settings, now(), store.ledger.occurrence_done_readonly)
        undelivered = due is None and undelivered_within_catch_up(settings, now(), store.ledger)
    if due is None:
        if not undelivered:
            return Outcome(None, ExitCode.OK)
        from psabill import notify  # the mailer: only a firing with a report to re-send

        with store.lock(settings.run.lock_timeout, ttl=settings.run.lease), store.ledger as ledger:
            failure = notify.redeliver(settings, paths, ledger, now(), verbose=verbose)
        return Outcome(None, ExitCode.OK if failure is None else ExitCode.EMAIL, failure or None)
    addresses.check_configured(settings)
    readiness.require(settings)
    from psabill.ledger.lease import Elsewhere  # the run lease: only a firing with something due takes it

    try:
        # A live lease held for this very occurrence (on this host or another) is its run: exit 0 at once.
        with store.lock(settings.run.lock_timeout, occurrence=due, ttl=settings.run.lease), \
                store.ledger as ledger:
            ledger.mark_interrupted()
            at = now()  # whoever held the lease before us may have run this very occurrence
            occurrence = due_occurrence(settings, at, ledger.occurrence_done)
            if occurrence is None:
                return Outcome(None, ExitCode.OK)
            late = int((at - occurrence).total_seconds())
            attempt = ledger.attempts(occurrence).get(occurrence.isoformat())
            run = Run(trigger="scheduled", started_at=at, occurrence=occurrence,
                      late_seconds=late if late >= 60 else None, attempt=(attempt.tries + 1) if attempt else 1)
            job = Job(paths, settings, ledger, run, now=now, verbose=verbose)
            try:
                job.start()
                with job.steps():
                    job.plan(unattended=True)
                    job.apply(fresh=False)
                return job.finish()
            finally:
                job.close()
    except Elsewhere as busy:
        from psabill.text import log  # only this firing's one line (shown under -v)

        logger = log.setup(paths.log, verbose=verbose, max_bytes=settings.log.max_bytes, backups=settings.log.backups)
        logger.info("%s: this firing leaves it to that run", busy.message)
        return Outcome(None, ExitCode.OK)


def run_manual(paths: Paths, now: Now, *, dry_run: bool, confirm: Optional[Confirm] = None,
               progress: Progress = None, verbose: bool = False) -> Outcome:
    """A run by hand: a dry run, ``--yes`` (unattended: the guard holds), or interactive (``confirm`` asks)."""
    from psabill import outcomes  # as in run_scheduled: not on the fast path
    from psabill.config import readiness
    from psabill.report import Run
    from psabill.run.perform import Job, Outcome

    settings = load(paths.config, must_exist=True)
    readiness.require(settings)
    store = open_store(paths, settings.state_url, settings.account_id)
    with store.ledger as ledger:
        run = Run(trigger="dry-run" if dry_run else "manual", started_at=now())
        job: Optional[Job] = None
        try:
            with store.lock(settings.run.lock_timeout, ttl=settings.run.lease):
                # The job (and the log it opens) only under the lock: a state dir that cannot hold the
                # lock is one line, as for a scheduled run.
                job = Job(paths, settings, ledger, run, now=now, progress=progress, verbose=verbose)
                ledger.mark_interrupted()
                job.start()
                with job.steps():
                    review = job.plan(unattended=confirm is None)
                    if not dry_run and job.error is None and confirm is None:
                        job.apply(fresh=False)
                if dry_run or job.error is not None or confirm is None:
                    return job.finish()
                assert run.id is not None
                ledger.set_status(run.id, outcomes.PLANNED_RUN)
                job.release_tenant()
            if not confirm(run, review):
                ledger.discard(run.id)
                return Outcome(None, ExitCode.OK, "cancelled: nothing was changed", review)
            with store.lock(settings.run.lock_timeout, ttl=settings.run.lease):
                ledger.set_status(run.id, outcomes.RUNNING)
                with job.steps():
                    job.apply(fresh=True)
                return job.finish()
        finally:
            if job is not None:
                job.close()
