"""One run, start to finish: record it, plan, guard, apply, settle, notify.

A run is **plan, then guard, then apply**:

1. The run is recorded as ``running`` (a killed run leaves its record).
2. Writes an earlier run left open (an intent without an outcome, an outcome
   still unknown) are read back from the PSA and settled (:func:`reconcile`).
3. The source is read once; every row is planned against the PSA
   (:func:`psabill.run.engine.plan`): each item holds the PSA's current
   quantity and the planned one. The plan, with a digest of the source bytes,
   is stored before anything is written.
4. The guard (:mod:`psabill.run.safety`) holds what looks like a broken
   source, in unattended runs. An interactive run shows its findings above the
   plan, and the admin's "y" covers them.
5. Exactly the planned, unheld items are written. Each write's intent is
   committed before it is sent; its outcome when it settles.
6. The run settles from its items, is recorded, pruned, reported and pinged.

A failure before the first write aborts the run (exit 4) and its occurrence
is retried at a later firing within catch-up; so are writes that failed for a
transient reason (the PSA down, its allowance used up). Ctrl-C, SIGTERM and
SIGHUP record the run as interrupted. The report goes out only after the run
is recorded, so a failed email never loses a result.
"""

import contextlib
import getpass
import logging
import os
import signal
import threading
from datetime import datetime, timedelta
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional

from psabill import clock, outcomes
from psabill.config.paths import Paths
from psabill.config.settings import Settings
from psabill.errors import AbortError, EmailError, ExitCode, PsabillError
from psabill.ledger.history import Ledger, LeaseLost
from psabill.psa.base import PsaClient, Target, open_client
from psabill.report import Item, Run
from psabill.run import engine, mapping, safety
from psabill.schedule.cronplan import next_retry
from psabill.sources import reader
from psabill.sources.rows import Usage, folded
from psabill.text import log

Progress = Optional[Callable[[str, int, int, int], None]]  # (phase, done, total, API requests so far)
Confirm = Callable[[Run, safety.Review], bool]


class Outcome(NamedTuple):
    """What a run (or a guard that found nothing due) hands back to the CLI edge."""

    run: Optional[Run]  # None: nothing was due
    exit_code: ExitCode
    error: Optional[str] = None  # a one-line message for the edge to show
    review: Optional[safety.Review] = None


EXIT = {outcomes.SUCCESS: ExitCode.OK, outcomes.PARTIAL: ExitCode.PARTIAL, outcomes.FAILED_RUN: ExitCode.PARTIAL,
        outcomes.UNMAPPED_RUN: ExitCode.PARTIAL, outcomes.HELD_RUN: ExitCode.HELD, outcomes.PLANNED_RUN: ExitCode.OK}
UNMAPPED_SHARE = 0.5  # a run that maps fewer than half its rows is not a success


class Terminated(Exception):
    """SIGTERM or SIGHUP arrived during a run."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


class Job:
    """One run's steps, in order; the guard (psabill.run.guard) holds the lock around them."""

    def __init__(self, paths: Paths, settings: Settings, ledger: Ledger, run: Run, *,
                 now: Callable[[], datetime], progress: Progress = None, verbose: bool = False) -> None:
        self.paths = paths
        self.settings = settings
        self.ledger = ledger
        self.run = run
        self.now = now
        self.progress = progress
        self.logger = log.setup(paths.log, verbose=verbose, max_bytes=settings.log.max_bytes,
                                backups=settings.log.backups)
        self.client: Optional[PsaClient] = None
        self.usage: Optional[Usage] = None
        self.review: Optional[safety.Review] = None
        self.error: Optional[PsabillError] = None
        self.unattended = False
        self._halt = threading.Event()
        self._tenant = contextlib.ExitStack()
        self._tenant_held = False
        self.lease_lost: Optional[str] = None  # why the run lease was lost (psabill.ledger.lease), if it was
        self._watched: Any = None

    # -- steps ------------------------------------------------------------------

    def start(self) -> None:
        run = self.run
        settings = self.settings
        run.account_name = settings.account.name
        run.zone = settings.account.timezone or "UTC"
        if settings.when is not None:
            run.schedule_text = settings.when.describe()
            if settings.schedule.enabled:
                run.next_run = settings.when.next_after(run.started_at)
        self.ledger.start_run(run)
        previous = getattr(self.ledger.fence, "previous", None)
        if getattr(self.ledger.fence, "took_over", False) and previous is not None:
            self.logger.warning("run %s took over the run lease: it was %s, and was never released", run.id,
                                previous.text())
        self._ping("start")
        self.logger.info("run %s started (%s%s)", run.id, run.trigger,
                         f", occurrence {run.occurrence.isoformat()}" if run.occurrence else "")

    def plan(self, *, unattended: bool) -> safety.Review:
        """Read the source and the PSA, store the plan; in an unattended run, hold what the guard found."""
        run = self.run
        settings = self.settings
        assert settings.psa is not None
        self.unattended = unattended and run.trigger != "dry-run"
        self._watch_lease()
        self.hold_tenant()
        client = self._client()
        reconcile(client, self.ledger, settings.product_map, self.logger)
        self._phase("reading the source", 0, 0)
        usage = self.usage = reader(settings.source.kind)(settings.source, set(settings.product_map), settings.path)
        pins = mapping.load(settings.mapping.file, usage.aliases)  # a LastPass company by name or id
        self._phase("reading the PSA", 0, len(usage.rows))
        where = f"{client.terms.psa} at {settings.psa.url}" if settings.psa.url else client.terms.psa
        run.items = engine.plan(client, usage.rows, products=settings.product_map, pins=pins, where=where)
        run.psa = client.kind
        run.source_digest = usage.digest
        run.api_requests = self._requests(client)
        baseline = self.ledger.baseline()
        review = self.review = safety.review(
            run.items, rows=len(usage.rows), unterminated=usage.unterminated, rules=settings.guard,
            baseline=safety.Baseline(baseline.run_id, {(folded(c), s) for c, s in baseline.keys})
            if baseline is not None else None)
        self.usage = usage._replace(rows=[])  # the rows live on in the items: keep no second copy for the run
        if self.unattended:
            held = safety.hold(run.items, review, run.id)
            if held or review.run:
                self.logger.warning("run %s: the guard held %d item(s): %s", run.id, held,
                                    "; ".join(f.reason for f in review.run) or "lines beyond their limits")
        self.ledger.store_plan(run, self.now())
        return review

    def apply(self, *, fresh: bool) -> None:
        """Write the planned items; ``fresh`` first re-reads them (a plan that waited for a human)."""
        run = self.run
        assert run.id is not None
        client = self._client()
        products = self.settings.product_map
        todo = [item for item in run.items if item.outcome == outcomes.PLANNED]
        if not todo:
            return
        self._watch_lease()
        if self.lease_lost is not None:  # lost while it planned: nothing is sent
            for item in todo:
                _not_written(item, self._lost_text())
            self.ledger.settle(run.id, todo)
            return
        self.hold_tenant()
        if fresh:
            todo = self._still_as_planned(todo)
        total, done = len(todo), 0
        self._phase("writing", 0, total)
        buffered: List[Item] = []

        def sending(batch: List[Target]) -> None:
            from psabill.psa.base import Stop  # the interface's own signal to stop

            if self.lease_lost is not None:
                raise Stop(self._lost_text())
            if self._halt.is_set():
                raise Stop("the run was interrupted")
            # The outcomes settled since the last batch, the lease renewed and checked, and this batch's
            # intents: one transaction (one round trip on PostgreSQL), before any of the batch is sent.
            try:
                self.ledger.intend(run.id, [target.key for target in batch], self.now(), settled=buffered)
            except LeaseLost:
                buffered.clear()  # recorded: the outcomes are written whether the lease holds or not
                raise Stop(self._lost_text()) from None
            buffered.clear()

        try:
            for item, written in engine.apply(client, todo, products=products, halt=self._halt.is_set,
                                              sending=sending):  # type: ignore[arg-type]
                engine.settle(item, written)
                if self.lease_lost is not None and item.transient and item.message.startswith("not written"):
                    item.message = f"not written: {self._lost_text()}"  # why the client stopped, not just that it did
                buffered.append(item)
                done += 1
                if len(buffered) >= 200:
                    self._flush(buffered)
                self._phase("writing", done, total)
        finally:
            self._halt.set()  # writes not yet sent are never sent (Ctrl-C, SIGTERM, an error)
            self._flush(buffered)
            run.api_requests = self._requests(client)
        unknown = [item for item in run.items if item.outcome == outcomes.UNKNOWN]
        if unknown:
            _read_back(client, unknown, products, "the write's answer was lost")
            self.ledger.settle(run.id, unknown)

    def _still_as_planned(self, todo: List[Item]) -> List[Item]:
        """Items whose line moved since the plan fail now; the others go on."""
        client = self._client()
        now = engine.current(client, todo, products=self.settings.product_map)
        kept = []
        changed = []
        for item in todo:
            if now.get(item.seq) != item.old:
                item.outcome = outcomes.FAILED
                item.message = (f"changed in {client.terms.psa} since the plan: it held {item.old} then and "
                                f"{now.get(item.seq)} now; not written")
                item.hint = "run again: the next plan starts from what the PSA holds now"
                changed.append(item)
            else:
                kept.append(item)
        if changed and self.run.id is not None:
            self.ledger.settle(self.run.id, changed)
        return kept

    def _watch_lease(self) -> None:
        """Be told at once when the run lease is lost (the lease renewer's thread calls ``_lost``)."""
        fence = self.ledger.fence
        if fence is not None and fence is not self._watched:
            self._watched = fence
            watch = getattr(fence, "watch", None)
            if watch is not None:
                watch(self._lost)

    def _lost(self, why: str) -> None:
        if self.lease_lost is None:
            self.lease_lost = why
            self._halt.set()  # no write not yet sent is sent
            self.logger.error("run %s: %s; it stops writing", self.run.id, why)

    def _lost_text(self) -> str:
        return f"the run lost its lease ({self.lease_lost})"

    def _flush(self, buffered: List[Item]) -> None:
        if buffered and self.run.id is not None:
            self.ledger.settle(self.run.id, list(buffered))
            buffered.clear()

    def _requests(self, client: Any) -> int:
        """Every request the run sent: to the PSA, and to the source when it is an API (LastPass)."""
        return client.request_count + (self.usage.requests if self.usage is not None else 0)

    def finish(self) -> Outcome:
        """Settle the run from its items, record, prune, report and ping."""
        run = self.run
        error = self.error
        run.finished_at = self.now()
        if self.client is not None:
            run.api_requests = self._requests(self.client)
        if error is not None and run.status == outcomes.RUNNING:
            if isinstance(error, AbortError):
                run.status = outcomes.ABORTED
            else:
                run.status = outcomes.FAILED_RUN
            run.message = error.message
        if run.status == outcomes.RUNNING:
            run.status = status_of(run, held_whole=self.unattended and self.review is not None and bool(self.review.run))
        if self.lease_lost is not None and not run.message:
            run.message = (f"{self._lost_text()}: it stopped writing; a later firing within catch-up retries "
                           "what it did not write")
        retry = run.trigger == "scheduled" and run.status in (outcomes.PARTIAL, outcomes.FAILED_RUN) and any(
            item.transient or item.outcome in (outcomes.PLANNED, outcomes.UNKNOWN) for item in run.items)
        self.ledger.finish_run(run, retry=retry)
        counts = ", ".join(f"{k} {v}" for k, v in sorted(run.counts.items()))
        self.logger.info("run %s finished: %s, %s, %d API requests", run.id, run.status, counts or "no items",
                         run.api_requests)
        pruned = self.ledger.prune(timedelta(days=self.settings.history.retention_days), self.settings.guard_horizon)
        if pruned:
            self.logger.info("history: removed %d runs older than the retention period", pruned)
        code = _code(error, run)
        message = error.message if error is not None else None
        if run.status == outcomes.HELD_RUN and message is None:
            message = held_message(run)
        if run.trigger != "dry-run" and run.status != outcomes.INTERRUPTED:
            from psabill import notify  # the report: Jinja2 and the mailer, only once a run has ended

            try:
                notify.report_run(self.settings, self.paths, run, self.ledger, retrying=self._tried_again(retry),
                                  now=self.now())
            except EmailError as exc:
                self.logger.error("run %s: report email failed: %s", run.id, exc.message)
                if code in (ExitCode.OK, ExitCode.PARTIAL):
                    code = ExitCode.EMAIL
                message = message or (f"the run was recorded, but its report email failed: {exc.message} "
                                      f"(retry with 'psabill email resend {run.id}')")
        if run.trigger != "dry-run":
            self._ping("success" if code == ExitCode.OK else "fail")
            self._publish()
        return Outcome(run, code, message, self.review)

    def _tried_again(self, retry: bool) -> bool:
        """Whether a later firing within catch-up tries this occurrence again (an aborted run, or one to
        retry): its report then waits for that firing, unless it is the story's first (psabill.notify)."""
        run = self.run
        if run.trigger != "scheduled" or run.occurrence is None or self.settings.when is None:
            return False
        if not retry and run.status != outcomes.ABORTED:
            return False

        return next_retry(self.settings.when, self.settings.schedule.catch_up, run.occurrence,
                          run.finished_at or self.now(), clock.host_zone()) is not None

    def hold_tenant(self) -> None:
        """Take this host's lock on the PSA tenant (once): no other run on this host plans or writes it now."""
        if not self._tenant_held:
            from psabill.ledger.lock import tenant_lock  # an abstract socket: only a run takes it

            self._tenant.enter_context(tenant_lock(self.settings.tenant, self.settings.run.lock_timeout))
            self._tenant_held = True

    def release_tenant(self) -> None:
        """Let the tenant go while a plan waits for a human (the apply re-reads what it writes)."""
        self._tenant.close()
        self._tenant_held = False

    def close(self) -> None:
        self.release_tenant()
        if self.client is not None:
            self.client.close()
            self.client = None

    # -- helpers -------------------------------------------------------------------

    def _client(self) -> PsaClient:
        if self.client is None:
            assert self.settings.psa is not None
            self.client = open_client(self.settings.psa, billing_date=billing_date(self.settings, self.run),
                                      zone=self.settings.zone)
        return self.client

    def _phase(self, phase: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(phase, done, total, self.client.request_count if self.client is not None else 0)

    def _ping(self, event: str) -> None:
        if self.run.trigger != "dry-run":
            from psabill.notify.ping import ping  # httpx: only a real run pings

            ping(self.settings.notify.ping_url, event, self.logger)

    def _publish(self) -> None:
        """The history site: a failure never fails the run, and is said once."""
        from psabill.notify.site import publish  # the site's templates: only once a run has ended

        publish(self.settings, self.paths, self.ledger, self.run, self.logger)

    @contextlib.contextmanager
    def steps(self) -> Iterator[None]:
        """Run steps; a domain error or an interrupt is recorded on the run instead of escaping."""
        try:
            with interrupts(self._halt):
                yield
        except PsabillError as exc:
            self.error = exc
        except (KeyboardInterrupt, Terminated) as exc:
            name = exc.name if isinstance(exc, Terminated) else "SIGINT"
            self.run.status = outcomes.INTERRUPTED
            self.run.message = f"interrupted by {name} before it finished"
            self.error = _Interrupted(self.run.message, name)


class _Interrupted(PsabillError):
    def __init__(self, message: str, name: str) -> None:
        super().__init__(message)
        self.exit_code = ExitCode.TERMINATED if name in ("SIGTERM", "SIGHUP") else ExitCode.INTERRUPTED


def status_of(run: Run, *, held_whole: bool = False) -> str:
    """A finished run's status, from its items; ``held_whole``: the guard held the whole run."""
    counts = run.counts
    if counts.get(outcomes.HELD) or held_whole:
        return outcomes.HELD_RUN
    failed = counts.get(outcomes.FAILED, 0) + counts.get(outcomes.UNKNOWN, 0)
    mapped = len(run.items) - counts.get(outcomes.UNMAPPED, 0)
    if failed and failed >= mapped:
        return outcomes.FAILED_RUN
    if failed:
        return outcomes.PARTIAL
    if not run.items or counts.get(outcomes.UNMAPPED, 0) > UNMAPPED_SHARE * len(run.items):
        return outcomes.UNMAPPED_RUN
    return outcomes.SUCCESS


def held_message(run: Run) -> str:
    held = run.count(outcomes.HELD)
    return (f"held for approval: run {run.id} holds {held} change(s) that look like a broken source; "
            f"see 'psabill history show {run.id}', then 'psabill approve {run.id}' or 'psabill reject {run.id}'")


def _code(error: Optional[PsabillError], run: Run) -> ExitCode:
    if error is not None:
        return ExitCode(error.exit_code)
    return EXIT.get(run.status, ExitCode.OK)


def reconcile(client: PsaClient, ledger: Ledger, products: Dict[str, str], logger: logging.Logger) -> int:
    """Settle every write an earlier run left open or unknown, by reading the PSA back; how many were."""
    settled = 0
    for run, items in ledger.open_intents() + ledger.unknown_items():
        if not items or run.id is None:
            continue
        _read_back(client, items, products, "the run stopped before it recorded the outcome")
        ledger.settle(run.id, items)
        settled += len(items)
        if run.status not in (outcomes.INTERRUPTED, outcomes.ABORTED, outcomes.RUNNING):
            full = ledger.run(run.id)
            if full is not None:
                ledger.set_status(run.id, status_of(full))
        logger.info("run %s: %d write(s) read back from the PSA", run.id, len(items))
    return settled


def _not_written(item: Item, why: str) -> None:
    item.outcome = outcomes.FAILED
    item.transient = True
    item.message = f"not written: {why}"
    item.hint = "a later firing within catch-up writes it; nothing is double-counted"


def _read_back(client: PsaClient, items: List[Item], products: Dict[str, str], why: str) -> None:
    """Decide each item's write by what the PSA holds now: never assumed."""
    try:
        now = engine.current(client, items, products=products)
    except PsabillError:
        raise
    except Exception as exc:  # the PSA is away: they stay unknown, and the next run reads them again
        for item in items:
            item.outcome = outcomes.UNKNOWN
            item.transient = True
            item.message = f"the write's outcome is unknown ({why}); it could not be read back: {exc}"
        return
    for item in items:
        held = now.get(item.seq)
        if held is not None and held == item.new:
            item.outcome = outcomes.UPDATED
            item.message = f"read back: {client.terms.psa} holds {held} ({why})"
            item.transient = False
        elif held is not None and held == item.old:
            item.outcome = outcomes.FAILED
            item.transient = True
            item.message = f"not written ({why}); {client.terms.psa} still holds {held}"
            item.hint = "a later firing within catch-up writes it; nothing is double-counted"
        elif held is None:
            item.outcome = outcomes.UNKNOWN
            item.transient = True
            item.message = f"the write's outcome is unknown ({why}): the line could not be read back"
        else:
            item.outcome = outcomes.FAILED
            item.transient = True
            item.message = (f"{client.terms.psa} holds {held}, neither the planned {item.new} nor the earlier "
                            f"{item.old} ({why}); the next run plans from it")


def billing_date(settings: Settings, run: Run) -> Any:
    """The date the run bills for: its start on the account's calendar, not the UTC date.

    A run at 09:00 on 1 December in Sydney is still 30 November in UTC.
    """
    zone = settings.zone
    return run.started_at.astimezone(zone).date() if zone is not None else run.started_at.date()


def who() -> str:
    """The admin an approval is recorded as: the login name."""
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry (a container's arbitrary uid)

        return f"uid {os.getuid()}"


@contextlib.contextmanager
def interrupts(halt: threading.Event) -> Iterator[None]:
    """SIGTERM and SIGHUP become :class:`Terminated` (SIGINT already raises KeyboardInterrupt) while a run works.

    ``halt`` is set at once, so the writes not yet sent stop even while the main thread waits.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_signal(signum: int, frame: object) -> None:
        halt.set()
        raise Terminated("SIGTERM" if signum == signal.SIGTERM else "SIGHUP")

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGHUP)}
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        signal.signal(signal.SIGINT, previous_int)
