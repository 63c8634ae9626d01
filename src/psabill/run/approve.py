"""``psabill approve`` and ``psabill reject``: what happens to the changes a run held.

An approval applies the held items of that run's plan exactly as planned,
under the run lock: each line is read again first, and one whose PSA quantity
moved since the plan fails ("changed in the PSA since the plan") while the
others are written, each intent recorded before it is sent, as in any run.
The approval (who, from which host, when, how many items) is recorded in the
ledger, and the run's items and status show the outcome. Approving a run with
nothing left held writes nothing. A rejection discards the held items:
they end ``rejected`` and nothing is written. Neither can be undone.
"""

from datetime import datetime
from typing import Callable, List, NamedTuple, Optional

from psabill import outcomes
from psabill.config import readiness
from psabill.config.paths import Paths
from psabill.config.settings import load
from psabill.errors import ExitCode, UsageError
from psabill.ledger.history import Ledger, hostname, open_store
from psabill.report import Approval, Item, Run
from psabill.run.perform import Job, Outcome, status_of, who


class Decision(NamedTuple):
    """What ``approve`` or ``reject`` did to run ``run``'s held items."""

    run: Run
    action: str  # approved | rejected | nothing
    items: List[Item]  # the items it covered, as they ended
    outcome: Optional[Outcome] = None


def held_items(run: Run) -> List[Item]:
    return [item for item in run.items if item.outcome == outcomes.HELD]


def _run(ledger: Ledger, run_id: int) -> Run:
    """Run ``run_id`` with its items, or a UsageError naming it."""
    run = ledger.run(run_id) if ledger.exists else None
    if run is None:
        raise UsageError(f"no run {run_id} in the history: 'psabill history' lists the runs")
    return run


def load_held(paths: Paths, run_id: int) -> Run:
    """The run and its items, or a UsageError naming the run."""
    settings = load(paths.config, check_addresses=False, must_exist=True)
    ledger = open_store(paths, settings.state_url, settings.account_id).ledger
    with ledger:
        return _run(ledger, run_id)


def approve(paths: Paths, now: Callable[[], datetime], run_id: int, *, verbose: bool = False) -> Decision:
    """Apply run ``run_id``'s held items, under the run lock."""
    settings = load(paths.config, must_exist=True)
    readiness.require(settings)
    store = open_store(paths, settings.state_url, settings.account_id)
    with store.lock(settings.run.lock_timeout), store.ledger as ledger:
        ledger.mark_interrupted()
        run = _run(ledger, run_id)
        held = held_items(run)
        if not held:
            return Decision(run, "nothing", [])
        for item in held:
            item.outcome = outcomes.PLANNED
            item.rule = ""
            item.message = ""
            item.hint = ""
        job = Job(paths, settings, ledger, run, now=now, verbose=verbose)
        try:
            with job.steps():
                job.apply(fresh=True)
        finally:
            job.close()
        if job.error is not None:
            for item in held:  # not written: still held, for another approval once the PSA is back
                if item.outcome == outcomes.PLANNED:
                    item.outcome = outcomes.HELD
                    item.rule = "approval_failed"
            ledger.settle(run_id, held)
        at = now()
        ledger.record_approval(run_id, Approval("approved", who(), hostname(), at, len(held)), None)
        ledger.set_status(run_id, status_of(run))
        job.logger.info("run %s: %d held item(s) approved by %s", run_id, len(held), who())
        code = ExitCode(job.error.exit_code) if job.error is not None else (
            ExitCode.PARTIAL if any(i.outcome in (outcomes.FAILED, outcomes.UNKNOWN) for i in held) else ExitCode.OK)
        return Decision(run, "approved", held, Outcome(run, code, job.error.message if job.error else None))


def reject(paths: Paths, now: Callable[[], datetime], run_id: int) -> Decision:
    """Discard run ``run_id``'s held items: nothing is written."""
    settings = load(paths.config, check_addresses=False, must_exist=True)
    store = open_store(paths, settings.state_url, settings.account_id)
    with store.lock(settings.run.lock_timeout), store.ledger as ledger:
        run = _run(ledger, run_id)
        held = held_items(run)
        if not held:
            return Decision(run, "nothing", [])
        for item in held:
            item.outcome = outcomes.REJECTED
            reason = item.message[len("held: "):] if item.message.startswith("held: ") else item.message
            item.message = f"rejected by {who()}: not written ({reason})"
            item.hint = ""
        ledger.settle(run_id, held)
        ledger.record_approval(run_id, Approval("rejected", who(), hostname(), now(), len(held)), None)
        ledger.set_status(run_id, status_of(run))
        return Decision(run, "rejected", held)
