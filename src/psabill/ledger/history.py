"""The run ledger: every run, its plan and its items, and the once-only record of occurrences.

* By default it is ``state.db`` in the state dir. With ``[state] url`` (or
  ``PSABILL_STATE_URL``, which wins) it is a PostgreSQL database that several
  hosts share; :func:`open_store` picks, and :mod:`psabill.ledger.dialect`
  holds what differs. The log always stays local.
* Each config has its own identity (``account``, see
  :attr:`psabill.config.settings.Settings.account_id`): several configs can
  share one ledger, and each sees and runs only its own runs. Runs recorded
  before psabill knew identities (no account) belong to every config.
* One ``runs`` row per run; one ``items`` row per (customer, SKU) of its plan.
  The plan is stored, whole, before any write. Before a write is sent its
  item's ``intent_at`` is committed; the outcome follows when the write
  settles. An intent without an outcome (a run killed, a disk that filled up,
  a lost connection) is read back from the PSA by the next run
  (:func:`psabill.run.perform.reconcile`), so every change the PSA took is in
  exactly one run's history, never assumed and never lost.
* Counts are never stored: :attr:`psabill.report.Run.counts` comes from the
  items (a list of runs gets them from one grouped query over them).
* A scheduled occurrence counts as done once a run for it ended in any status
  but running, interrupted or aborted, and without ``retry`` (a transient
  failure: the PSA down, its allowance used up). A run that held anything is
  done: the next occurrence plans afresh.
* Every text written passes through :func:`psabill.text.redact.scrub` first:
  the history is an output like any other and never holds a registered secret.
* A corrupt or unreadable database is an error, never a silent fresh start.
"""

from __future__ import annotations  # the report's classes are only annotations here until a run is read

import contextlib
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import (TYPE_CHECKING, Any, Callable, Dict, Iterable, Iterator, List, NamedTuple, Optional,
                    Protocol, Sequence, Tuple, TypeVar, Union)

from psabill import outcomes
from psabill.errors import StateError
from psabill.ledger import dialect as dialect_mod
from psabill.ledger.dialect import Cursor, Dialect, SqliteDialect

if TYPE_CHECKING:  # the not-due cron path opens the ledger but never reads a run: no dataclasses, no decimal
    from psabill.report import Approval, Item, Run

SCHEMA_VERSION = dialect_mod.SCHEMA_VERSION
JUMP = timedelta(days=366)  # a gap between two runs this long is a clock jump, not a pruning reason
PRUNE_BATCH = 200  # runs deleted per transaction: a year of history never holds the lock for long
FLUSH = 200  # item outcomes written per transaction
PLAN_CHUNK = 1000  # plan rows built and sent at a time (one transaction for the whole plan)
INTENT_CHUNK = 500  # item seqs per intent statement (SQLite allows 999 parameters on old builds)
_SETTLE = ("UPDATE items SET outcome = ?, old = ?, message = ?, hint = ?, rule = ?, transient = ? "
           "WHERE run_id = ? AND seq = ?")
T = TypeVar("T")


def _stored(value: Any) -> Any:
    """A quantity for the database: ints as they are, Decimals as REAL (2.5 must not become 2)."""
    return value if value is None or isinstance(value, (int, float, str)) else float(value)  # no decimal import


def _loaded(value: Any) -> Any:
    """A stored quantity back: whole ones as int, others as exact Decimals."""
    if value is None or isinstance(value, int):
        return value
    from decimal import Decimal  # only a fractional quantity read back needs it (not the not-due cron path)

    try:
        number = Decimal(str(value))
    except ArithmeticError:
        return value
    return int(number) if number == number.to_integral_value() else number


def _text(value: Any) -> Any:
    """A text column's value, scrubbed of registered secrets; anything else as it is."""
    if not isinstance(value, str):
        return value
    from psabill.text.redact import scrub  # the redactor's patterns: only a write needs them, not the not-due read

    return scrub(value)


def iso(value: Optional[datetime]) -> Optional[str]:
    return value.astimezone(timezone.utc).isoformat() if value else None


def _parse(value: Optional[str]) -> Optional[datetime]:
    return datetime.fromisoformat(value) if value else None


_RUN_COLUMNS = ("id, trigger, occurrence, started_at, finished_at, status, late_seconds, message, psa_kind, "
                "api_requests, email_status, email_message, host, account, attempt, of_run, source_digest, "
                "message_id, account_name, zone, schedule_text, next_run")
_ITEM_COLUMNS = ("run_id", "seq", "customer", "sku", "psa_company", "agreement", "line", "product", "old", "new",
                 "outcome", "message", "hint", "rule", "transient")
_ITEM_READ = "seq, customer, sku, outcome, psa_company, agreement, line, product, old, new, message, hint, rule, transient"
_MINE = "(account = ? OR account IS NULL)"  # this config's runs, and those recorded before identities


def _run(row: Sequence[Any]) -> Run:
    from psabill.report import Email, Run  # only once a run is read: the not-due cron path reads none

    (run_id, trigger, occurrence, started, finished, status, late, message, psa, requests, email_status,
     email_message, host, account, attempt, of_run, digest, message_id, name, zone, schedule, next_run) = row
    return Run(trigger=trigger, started_at=_parse(started) or datetime.now(timezone.utc), status=status, id=run_id,
               account=account or "", occurrence=_parse(occurrence), attempt=attempt or 1, of_run=of_run,
               finished_at=_parse(finished), late_seconds=late, message=message or "", psa=psa,
               api_requests=requests or 0, host=host, source_digest=digest, account_name=name or "",
               zone=zone or "UTC", schedule_text=schedule or "", next_run=_parse(next_run),
               email=Email(email_status, email_message or "", message_id))


def _item(row: Sequence[Any]) -> Item:
    from psabill.report import Item  # as in _run

    seq, customer, sku, outcome, company, agreement, line, product, old, new, message, hint, rule, transient = row
    # Positional, in Item's field order, and _loaded only for a value that is not a whole number: a year's
    # history site reads millions of items (tests/test_ledger.py checks the round trip).
    if old is not None and type(old) is not int:
        old = _loaded(old)
    if new is not None and type(new) is not int:
        new = _loaded(new)
    return Item(customer, sku, outcome, seq, company, agreement, line, product, old, new, message or "",
                hint or "", rule or "", bool(transient))


class LeaseLost(StateError):
    """The run's lease on the ledger is no longer its own: nothing more may be written (psabill.ledger.lease)."""


class Fence(Protocol):
    """What the ledger needs of the run lease that fences its writes (psabill.ledger.lease.Lease)."""

    account: str
    token: int
    ttl: float

    def lose(self, why: str) -> None:
        """Mark the lease lost (the run stops writing)."""

    def explain(self, conn: Any) -> str:
        """Why the lease is no longer this run's, as one line, read on ``conn``."""


class Attempts(NamedTuple):
    """The runs of an occurrence that is not done yet."""

    tries: int
    status: str  # the newest attempt's
    reason: str  # the newest attempt's message
    pending: int  # items the newest attempt did not finish (to retry)


class Baseline(NamedTuple):
    run_id: int
    keys: List[Tuple[str, str]]  # (customer, sku) of its items


class Ledger:
    """The ledger of one config. Open one per command or run, and close it (it is a context manager).

    ``where`` is the SQLite file (the default, in the state dir) or a
    :class:`~psabill.ledger.dialect.Dialect` such as PostgreSQL's; every query
    below is written once, with ``?`` placeholders the dialect rewrites.
    """

    def __init__(self, where: Union[Path, Dialect], account: str = "", *, name: str = "psabill") -> None:
        self.dialect: Dialect = SqliteDialect(where) if isinstance(where, Path) else where
        self.account = account
        self.name = name  # the session's application_name (PostgreSQL)
        self._conn: Any = None
        # The run lease this ledger's writes are fenced by (psabill.ledger.lease), while a run holds it:
        # intents are recorded only while the lease is still this run's.
        self.fence: Optional[Fence] = None
        self._looking = False  # inside one_look(): the read-only asks share self._look
        self._look: Any = None

    def __enter__(self) -> "Ledger":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def exists(self) -> bool:
        """Whether the database exists (read-only commands never create the SQLite file)."""
        return self.dialect.exists()

    @property
    def where(self) -> str:
        """The database, as messages name it (a URL never shows its password)."""
        return self.dialect.where

    @property
    def shared(self) -> bool:
        return self.dialect.shared

    # -- opening --------------------------------------------------------------

    @property
    def conn(self) -> Any:
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    def _connect(self, readonly: bool = False) -> Any:
        conn = None
        try:
            conn = self.dialect.connect(readonly=readonly, name=self.name)
            if not readonly:
                version = self.dialect.migrate(conn)
            else:
                version = dialect_mod._read_version(self.dialect, conn)
                if version == 0 or version < SCHEMA_VERSION:
                    return conn  # being created, or older: readable as it is; the next writer migrates it
            if version != SCHEMA_VERSION:
                raise StateError(
                    f"history database {self.where} has schema version {version}, this psabill "
                    f"knows {SCHEMA_VERSION}: upgrade psabill (the database was left unchanged)"
                )
        except self.dialect.errors as exc:
            if conn is not None:
                conn.close()
            raise self.dialect.error(exc) from None
        except StateError:
            if conn is not None:
                conn.close()
            raise
        return conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def attempt(self, work: Callable[[Any], T], *, again: bool = True) -> T:
        """``work(connection)``, its driver errors as one-line StateErrors.

        A connection the server dropped (a killed session, a failover, ``idle_session_timeout`` during a
        long read phase) is opened afresh, and ``work`` done once more when ``again``: every write it is
        given for that is idempotent (an UPDATE to given values, an upsert), so doing it twice is doing it once.
        """
        for tries in (1, 2):
            try:
                return work(self.conn)
            except self.dialect.errors as exc:
                dropped = self._conn is not None and self.dialect.dropped(self._conn, exc)
                if dropped:
                    self.close()
                if not (dropped and again and tries == 1):
                    raise self.dialect.error(exc) from None
        raise AssertionError("unreachable")

    def _execute(self, sql: str, params: Any = ()) -> Cursor:
        def work(conn: Any) -> Cursor:
            with self.dialect.transaction(conn):
                cursor: Cursor = conn.execute(self.dialect.sql(sql), params)
                return cursor

        return self.attempt(work)

    def _execute_many(self, sql: str, rows: Sequence[Any]) -> None:
        if not rows:
            return

        def work(conn: Any) -> None:
            with self.dialect.transaction(conn):
                self.dialect.execute_many(conn, self.dialect.sql(sql), rows)

        self.attempt(work)

    def _query(self, sql: str, params: Any = ()) -> List[Any]:
        def work(conn: Any) -> List[Any]:
            rows: List[Any] = conn.execute(self.dialect.sql(sql), params).fetchall()
            return rows

        return self.attempt(work)

    # -- the cheap read used by the not-due guard path ----------------------

    @contextlib.contextmanager
    def one_look(self) -> Iterator[None]:
        """The read-only asks inside share one connection: a not-due firing asks whether its occurrence
        ran and whether a report waits to be re-sent, and on a shared ledger a connection is the cost."""
        self._looking = True
        try:
            yield
        finally:
            self._looking = False
            look, self._look = self._look, None
            if look is not None:
                look.close()

    def _readonly(self) -> Any:
        if not self._looking:
            return self._connect(readonly=True)
        if self._look is None:
            self._look = self._connect(readonly=True)
        return self._look

    def _done_reading(self, conn: Any) -> None:
        if conn is not self._look:
            conn.close()

    def occurrence_done_readonly(self, occurrence: datetime) -> bool:
        """Like :meth:`occurrence_done`, without creating anything."""
        if not self.exists:
            return False
        conn = self._readonly()
        try:
            if not self.dialect.has_meta(conn):
                return False
            legacy = dialect_mod._read_version(self.dialect, conn) < dialect_mod.READ_AS_IS  # not migrated yet
            return _done(self.dialect, conn, occurrence, self.account, legacy=legacy)
        except self.dialect.errors as exc:
            raise self.dialect.error(exc) from None
        finally:
            self._done_reading(conn)

    def undelivered_readonly(self, since: datetime, statuses: Sequence[str] = ("pending", "failed")) -> bool:
        """Whether a scheduled run of an occurrence at or after ``since`` has its report email in one of
        ``statuses`` (never confirmed: the next firing re-sends it, psabill.notify); creates nothing."""
        if not self.exists:
            return False
        conn = self._readonly()
        marks = ", ".join("?" for _ in statuses)
        try:
            return conn.execute(self.dialect.sql(
                f"SELECT 1 FROM runs WHERE occurrence >= ? AND trigger = 'scheduled' AND {_MINE} "
                f"AND email_status IN ({marks}) LIMIT 1"), (iso(since), self.account, *statuses)).fetchone() is not None
        except self.dialect.errors:  # a ledger being created, or one older than pending reports: none to re-send
            return False
        finally:
            self._done_reading(conn)

    def undelivered(self, since: datetime, statuses: Sequence[str] = ("pending", "failed"),
                    reported: Sequence[str] = ("sent", "pending", "failed")) -> List[Run]:
        """Per occurrence at or after ``since``: its newest scheduled run with a report (``reported``),
        when that report's email is in ``statuses``; newest first (psabill.notify re-sends them)."""
        marks = ", ".join("?" for _ in reported)
        current: Dict[Any, Run] = {}
        for run in self._runs(f"occurrence >= ? AND trigger = 'scheduled' AND email_status IN ({marks})",
                              (iso(since), *reported)):
            current.setdefault(run.occurrence, run)  # newest first: the occurrence's current report
        return [run for run in current.values() if run.email.status in statuses]

    def peek(self, work: Callable[[Any], T]) -> Optional[T]:
        """``work`` on a read-only connection of its own that creates nothing; None when there is no
        ledger yet, or only an older one (the next writer migrates it)."""
        if not self.exists:
            return None
        conn = self._connect(readonly=True)
        try:
            if not self.dialect.has_meta(conn) or dialect_mod._read_version(self.dialect, conn) < dialect_mod.READ_AS_IS:
                return None
            return work(conn)
        except self.dialect.errors as exc:
            raise self.dialect.error(exc) from None
        finally:
            conn.close()

    def occurrence_done(self, occurrence: datetime) -> bool:
        return self.attempt(lambda conn: _done(self.dialect, conn, occurrence, self.account))

    # -- runs -----------------------------------------------------------------

    def mark_interrupted(self) -> int:
        """Mark this config's runs left ``running`` as interrupted. Call only while holding the run lock."""
        cursor = self._execute(
            f"UPDATE runs SET status = ?, message = CASE WHEN message = '' THEN ? ELSE message END "
            f"WHERE status = ? AND {_MINE}",
            (outcomes.INTERRUPTED, "the run was killed before it finished", outcomes.RUNNING, self.account),
        )
        return cursor.rowcount

    def start_run(self, run: Run) -> int:
        """Record the run as ``running``. A scheduled run claims its occurrence: the check that
        nobody ran it and the insert are one transaction that keeps other writers out."""
        run.host = run.host or hostname()
        run.account = self.account
        params = (run.trigger, iso(run.occurrence), iso(run.started_at), outcomes.RUNNING, run.late_seconds,
                  _text(run.psa), os.getpid(), run.host, self.account, run.attempt, run.of_run,
                  _text(run.account_name), run.zone, _text(run.schedule_text), iso(run.next_run))
        sql = self.dialect.sql(
            "INSERT INTO runs (trigger, occurrence, started_at, status, late_seconds, psa_kind, pid, host, account, "
            "attempt, of_run, account_name, zone, schedule_text, next_run) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
        claim = run.trigger == "scheduled" and run.occurrence is not None
        fence = self.fence

        def work(conn: Any) -> int:
            with self.dialect.transaction(conn, exclusive=claim):
                if claim and run.occurrence is not None and _done(self.dialect, conn, run.occurrence, self.account):
                    raise StateError(f"occurrence {iso(run.occurrence)} already ran (see 'psabill history'); "
                                     "nothing was run")
                run_id = self.dialect.insert_id(conn, sql, params)
                if fence is not None:  # the lease names the run it is for: other hosts see which occurrence runs
                    conn.execute(self.dialect.sql("UPDATE leases SET run_id = ? WHERE account = ? AND token = ? "
                                                  "AND pid <> 0"), (run_id, fence.account, fence.token))
                    if conn.execute(self.dialect.sql("SELECT 1 FROM leases WHERE account = ? AND token = ? "
                                                     "AND run_id = ?"), (fence.account, fence.token, run_id)
                                    ).fetchone() is None:  # read, not a rowcount: a pipeline knows it only later
                        raise LeaseLost(f"{fence.explain(conn)}; nothing was run")
                return run_id

        run.id = self.attempt(work, again=False)  # an INSERT is never sent twice
        return run.id

    def store_plan(self, run: Run, at: datetime) -> None:
        """The whole plan, in one transaction, before anything is written."""
        assert run.id is not None
        run_id = run.id
        upsert = self.dialect.sql(self.dialect.upsert("items", _ITEM_COLUMNS, ("run_id", "seq")))

        def work(conn: Any) -> None:
            with self.dialect.batch(conn):
                for start in range(0, len(run.items), PLAN_CHUNK):  # rows made a chunk at a time: no second copy
                    chunk = run.items[start: start + PLAN_CHUNK]
                    self.dialect.execute_many(conn, upsert, [self._item_row(run_id, item) for item in chunk])
                conn.execute(self.dialect.sql(
                    "UPDATE runs SET planned_at = ?, source_digest = ?, psa_kind = ? WHERE id = ?"),
                    (iso(at), run.source_digest, _text(run.psa), run_id))

        self.attempt(work)  # an upsert: after a dropped connection, the plan is stored whole, once

    @staticmethod
    def _item_row(run_id: int, item: Item) -> Tuple[Any, ...]:
        return (run_id, item.seq, _text(item.customer), _text(item.sku), _text(item.psa_company),
                _text(item.agreement), item.line, _text(item.product), _stored(item.old), _stored(item.new),
                item.outcome, _text(item.message), _text(item.hint), item.rule, int(item.transient))

    def intend(self, run_id: int, seqs: Iterable[int], at: datetime, settled: Sequence[Item] = ()) -> None:
        """Commit the intent to write these items before any of them is sent, with the outcomes of ``settled``.

        One transaction, sent as one round trip where the driver pipelines (PostgreSQL). With a fence
        (the run lease) the same transaction renews the lease, and the intents are recorded only if the
        lease is still this run's; otherwise :class:`LeaseLost`, and nothing of the batch may be sent.
        The outcomes are recorded either way: they are what happened.
        """
        seqs = list(seqs)
        fence = self.fence
        rows = self._settled_rows(run_id, settled)
        stamp = iso(at)

        def work(conn: Any) -> bool:
            renewed = None
            with self.dialect.batch(conn):
                if rows:
                    self.dialect.execute_many(conn, self.dialect.sql(_SETTLE), rows)
                guard, extra = "", ()  # type: Tuple[str, Tuple[Any, ...]]
                if fence is not None:
                    renewed = conn.execute(self.dialect.sql(
                        f"UPDATE leases SET expires_at = {self.dialect.LATER} WHERE account = ? AND token = ? "
                        "AND pid <> 0"), (fence.ttl, fence.account, fence.token))
                    guard = " AND EXISTS (SELECT 1 FROM leases WHERE account = ? AND token = ? AND pid <> 0)"
                    extra = (fence.account, fence.token)
                for start in range(0, len(seqs), INTENT_CHUNK):
                    chunk = seqs[start: start + INTENT_CHUNK]
                    conn.execute(self.dialect.sql(
                        f"UPDATE items SET intent_at = ? WHERE run_id = ? AND seq IN ({', '.join('?' for _ in chunk)})"
                        f"{guard}"), (stamp, run_id, *chunk, *extra))
            return renewed is None or renewed.rowcount == 1

        if not self.attempt(work):  # every statement is idempotent: after a dropped connection, done again
            assert fence is not None
            why = self.attempt(fence.explain)
            fence.lose(why)
            raise LeaseLost(why)

    def settle(self, run_id: int, items: Sequence[Item]) -> None:
        """Write how these items ended (their outcome, quantities and messages)."""
        self._execute_many(_SETTLE, self._settled_rows(run_id, items))

    @staticmethod
    def _settled_rows(run_id: int, items: Sequence[Item]) -> List[Tuple[Any, ...]]:
        return [(item.outcome, _stored(item.old), _text(item.message), _text(item.hint), item.rule,
                 int(item.transient), run_id, item.seq) for item in items]

    def progress(self, run_id: int, api_requests: int) -> None:
        self._execute("UPDATE runs SET api_requests = ? WHERE id = ?", (api_requests, run_id))

    def finish_run(self, run: Run, *, retry: bool) -> None:
        self._execute(
            "UPDATE runs SET finished_at = ?, status = ?, message = ?, api_requests = ?, psa_kind = ?, retry = ?, "
            "next_run = ? WHERE id = ?",
            (iso(run.finished_at), run.status, _text(run.message), run.api_requests, _text(run.psa), int(retry),
             iso(run.next_run), run.id),
        )

    def set_email(self, run_id: int, status: str, message: str, message_id: Optional[str] = None) -> None:
        self._execute(
            "UPDATE runs SET email_status = ?, email_message = ?, message_id = COALESCE(?, message_id) WHERE id = ?",
            (status, _text(message), message_id, run_id),
        )

    # -- reading runs ---------------------------------------------------------

    def _runs(self, where: str, params: Sequence[Any], *, limit: Optional[int] = None) -> List[Run]:
        suffix = f" LIMIT {int(limit)}" if limit else ""
        rows = self._query(f"SELECT {_RUN_COLUMNS} FROM runs WHERE {_MINE} AND {where} ORDER BY id DESC{suffix}",
                           (self.account, *params))
        runs = [_run(row) for row in rows]
        self._tally(runs)
        return runs

    def _tally(self, runs: List[Run]) -> None:
        """Each run's counts, from its items (one grouped query per few hundred runs)."""
        by_id = {run.id: run for run in runs}
        for run in runs:
            run.tally = {}
        ids = list(by_id)
        for start in range(0, len(ids), 500):
            chunk = ids[start: start + 500]
            marks = ", ".join("?" for _ in chunk)
            for run_id, outcome, count in self._query(
                    f"SELECT run_id, outcome, COUNT(*) FROM items WHERE run_id IN ({marks}) GROUP BY run_id, outcome",
                    chunk):
                tally = by_id[run_id].tally
                assert tally is not None
                tally[outcome] = int(count)

    def last_run(self, *, real: bool = False) -> Optional[Run]:
        """The newest run; with ``real``, the newest that was not a dry run."""
        runs = self._runs("trigger != 'dry-run'" if real else "1 = 1", (), limit=1)
        return runs[0] if runs else None

    def runs(self, since: Optional[datetime] = None) -> List[Run]:
        """Runs (without their items, with their counts), newest first."""
        if since is None:
            return self._runs("1 = 1", ())
        return self._runs("started_at >= ?", (iso(since),))

    def run(self, run_id: int) -> Optional[Run]:
        """One run with its items and approvals; None if it is not this config's."""
        runs = self._runs("id = ?", (run_id,))
        if not runs:
            return None
        run = runs[0]
        run.items = self.items(run_id)
        run.tally = None
        run.approvals = self.approvals(run_id)
        return run

    def items(self, run_id: int) -> List[Item]:
        rows = self._query(f"SELECT {_ITEM_READ} FROM items WHERE run_id = ? ORDER BY seq", (run_id,))
        return [_item(row) for row in rows]

    def approvals(self, run_id: int) -> List[Approval]:
        from psabill.report import Approval  # as in _run

        rows = self._query("SELECT action, by_user, host, at, items FROM approvals WHERE run_id = ? ORDER BY at",
                           (run_id,))
        return [Approval(action, by, host, _parse(at) or datetime.now(timezone.utc), int(count))
                for action, by, host, at, count in rows]

    def run_ids(self, prefix: str = "", limit: int = 200) -> List[Tuple[int, str, str, str]]:
        """(id, started_at, trigger, status) of the newest runs whose id starts with ``prefix`` (completion)."""
        rows = self._query(f"SELECT id, started_at, trigger, status FROM runs WHERE {_MINE} ORDER BY id DESC "
                           f"LIMIT {int(limit)}", (self.account,))
        return [(int(r[0]), r[1], r[2], r[3]) for r in rows if str(r[0]).startswith(prefix)]

    def hosts(self) -> List[str]:
        """Every host that has a run of this config in the history."""
        rows = self._query(f"SELECT DISTINCT host FROM runs WHERE host IS NOT NULL AND {_MINE} ORDER BY host",
                           (self.account,))
        return [row[0] for row in rows]

    # -- what the run needs to know ----------------------------------------------

    def baseline(self) -> Optional[Baseline]:
        """The last run that applied a plan (its rows are what the source should still have), if any."""
        rows = self._query(
            f"SELECT id FROM runs WHERE {_MINE} AND trigger IN ('scheduled', 'manual') AND status IN (?, ?, ?) "
            "AND planned_at IS NOT NULL ORDER BY id DESC LIMIT 1",
            (self.account, outcomes.SUCCESS, outcomes.PARTIAL, outcomes.UNMAPPED_RUN))
        if not rows:
            return None
        run_id = int(rows[0][0])
        keys = [(customer, sku) for customer, sku in
                self._query("SELECT customer, sku FROM items WHERE run_id = ?", (run_id,))]
        return Baseline(run_id, keys)

    def open_intents(self) -> List[Tuple[Run, List[Item]]]:
        """Writes whose intent was recorded but whose outcome never was, by run (not running ones)."""
        rows = self._query(
            "SELECT DISTINCT items.run_id FROM items JOIN runs ON runs.id = items.run_id WHERE "
            "items.intent_at IS NOT NULL AND items.outcome = ? AND runs.status != ? AND "
            "(runs.account = ? OR runs.account IS NULL)",
            (outcomes.PLANNED, outcomes.RUNNING, self.account))
        found = []
        for (run_id,) in rows:
            run = self.run(int(run_id))
            if run is None:
                continue
            open_items = [_item(r) for r in self._query(
                f"SELECT {_ITEM_READ} FROM items WHERE run_id = ? AND intent_at IS NOT NULL AND outcome = ? "
                "ORDER BY seq", (run_id, outcomes.PLANNED))]
            found.append((run, open_items))
        return found

    def unknown_items(self) -> List[Tuple[Run, List[Item]]]:
        """Writes whose outcome is still unknown (re-checked by every run until they are known)."""
        rows = self._query(
            "SELECT DISTINCT items.run_id FROM items JOIN runs ON runs.id = items.run_id WHERE items.outcome = ? "
            "AND (runs.account = ? OR runs.account IS NULL)", (outcomes.UNKNOWN, self.account))
        found = []
        for (run_id,) in rows:
            run = self.run(int(run_id))
            if run is not None:
                found.append((run, [i for i in run.items if i.outcome == outcomes.UNKNOWN]))
        return found

    def discard(self, run_id: int) -> None:
        """Forget a plan nobody applied (an interactive run the admin cancelled)."""
        try:
            with self.dialect.transaction(self.conn):
                for table, column in (("items", "run_id"), ("approvals", "run_id"), ("runs", "id")):
                    self.conn.execute(self.dialect.sql(f"DELETE FROM {table} WHERE {column} = ?"), (run_id,))
        except self.dialect.errors as exc:
            raise self.dialect.error(exc) from None

    def set_status(self, run_id: int, status: str, message: Optional[str] = None) -> None:
        if message is None:
            self._execute("UPDATE runs SET status = ? WHERE id = ?", (status, run_id))
        else:
            self._execute("UPDATE runs SET status = ?, message = ? WHERE id = ?", (status, _text(message), run_id))

    def done_occurrences(self, since: datetime) -> List[str]:
        rows = self._query(
            f"SELECT DISTINCT occurrence FROM runs WHERE occurrence >= ? AND trigger = 'scheduled' AND {_MINE} "
            "AND status NOT IN (?, ?, ?) AND retry = 0",
            (iso(since), self.account, *outcomes.NOT_DONE),
        )
        return [row[0] for row in rows]

    def attempts(self, since: datetime) -> Dict[str, Attempts]:
        """Scheduled occurrences since ``since`` that were tried but are not done: occurrence ISO -> attempts."""
        rows = self._query(
            f"SELECT id, occurrence, status, message, retry FROM runs WHERE occurrence >= ? AND trigger = 'scheduled' "
            f"AND {_MINE} ORDER BY id", (iso(since), self.account))
        found: Dict[str, Attempts] = {}
        done = set()
        newest: Dict[str, int] = {}
        for run_id, occurrence, status, message, retry in rows:
            if status in outcomes.NOT_DONE or retry:
                previous = found.get(occurrence)
                found[occurrence] = Attempts((previous.tries if previous else 0) + 1, status, message or status, 0)
                newest[occurrence] = run_id
                done.discard(occurrence)
            else:
                done.add(occurrence)
        result = {}
        for occurrence, attempt in found.items():
            if occurrence in done:
                continue
            pending = self._query("SELECT COUNT(*) FROM items WHERE run_id = ? AND outcome IN (?, ?, ?) AND "
                                  "(transient = 1 OR outcome = ?)",
                                  (newest[occurrence], outcomes.FAILED, outcomes.PLANNED, outcomes.UNKNOWN,
                                   outcomes.PLANNED))[0][0]
            result[occurrence] = attempt._replace(pending=int(pending))
        return result

    def held(self) -> List[Run]:
        """Runs whose held items wait for an approval or a rejection, newest first."""
        rows = self._query(
            "SELECT DISTINCT items.run_id FROM items JOIN runs ON runs.id = items.run_id WHERE items.outcome = ? "
            "AND (runs.account = ? OR runs.account IS NULL) ORDER BY items.run_id DESC",
            (outcomes.HELD, self.account))
        ids = [int(r[0]) for r in rows]
        return [run for run in (self._runs("id = ?", (i,)) for i in ids) for run in run]

    def record_approval(self, run_id: int, approval: Approval, applied_by: Optional[int]) -> None:
        self._execute("INSERT INTO approvals (run_id, action, by_user, host, at, items, applied_by) "
                      "VALUES (?, ?, ?, ?, ?, ?, ?)",
                      (run_id, approval.action, _text(approval.by), approval.host, iso(approval.at), approval.items,
                       applied_by))

    def of_occurrence(self, run: Run) -> List[Run]:
        """Every run of ``run``'s occurrence (its attempts), and the approvals of it, oldest first."""
        if run.occurrence is None:
            related = self._runs("(id = ? OR of_run = ?)", (run.id, run.id))
        else:
            related = self._runs("((occurrence = ? AND trigger = 'scheduled') OR of_run = ?)",
                                 (iso(run.occurrence), run.id))
        return sorted(related, key=lambda r: r.id or 0)

    def customer_items(self, customers: Sequence[str], since: datetime) -> Dict[str, List[Tuple[int, Item]]]:
        """Per customer: its items (every SKU) in this config's runs started at or after ``since``, each
        with its run's id, oldest run first. A few hundred customers a query, by the ``items_customer``
        index: a history site update after a 5,000-customer run reads only those customers' rows."""
        found: Dict[str, List[Tuple[int, Item]]] = {customer: [] for customer in customers}
        names = list(found)
        columns = ", ".join("items." + c.strip() for c in _ITEM_READ.split(","))
        for start in range(0, len(names), INTENT_CHUNK):
            chunk = names[start: start + INTENT_CHUNK]
            rows = self._query(
                f"SELECT items.run_id, {columns} FROM items JOIN runs ON runs.id = items.run_id "
                f"WHERE items.customer IN ({', '.join('?' for _ in chunk)}) AND runs.started_at >= ? AND "
                f"(runs.account = ? OR runs.account IS NULL) ORDER BY items.run_id, items.seq",
                (*chunk, iso(since), self.account))
            for row in rows:
                found[row[2]].append((row[0], _item(row[1:])))
        return found

    def sku_totals(self, since: datetime) -> List[Tuple[Run, Dict[str, int]]]:
        rows = self._query(
            "SELECT items.run_id, items.sku, SUM(items.new) FROM items JOIN runs ON runs.id = items.run_id "
            "WHERE runs.started_at >= ? AND (runs.account = ? OR runs.account IS NULL) AND runs.trigger != 'dry-run' "
            "GROUP BY items.run_id, items.sku ORDER BY items.run_id", (iso(since), self.account))
        runs = {run.id: run for run in self.runs(since)}
        totals: Dict[int, Dict[str, int]] = {}
        for run_id, sku, total in rows:
            if run_id in runs:
                totals.setdefault(run_id, {})[sku] = int(total or 0)
        return [(runs[run_id], totals[run_id]) for run_id in sorted(totals)]

    # -- upkeep ---------------------------------------------------------------

    def prune(self, retention: timedelta, keep: timedelta) -> int:
        """Delete runs (and their items) older than the retention window, in bounded batches; keep the newest.

        The window is measured from the newest record, never from a "now" that
        could be earlier than the records (a clock set back), and it is never
        shorter than ``keep``: what the guard may still need (catch-up + 3 h).
        A clock that jumps forward for one run (or back after it) never empties
        it. SQLite then hands the freed pages back (incremental vacuum).
        """
        rows = self._query("SELECT started_at FROM runs ORDER BY started_at DESC LIMIT 1")
        if not rows:
            return 0
        newest = datetime.fromisoformat(rows[0][0])
        window = max(retention, keep)
        latest = [datetime.fromisoformat(row[0])
                  for row in self._query("SELECT started_at FROM runs ORDER BY id DESC LIMIT 2")]
        if len(latest) == 2 and latest[0] - latest[1] > max(window, JUMP):
            return 0
        newest = min(newest, latest[0])
        cutoff = iso(newest - window)
        removed = 0
        while True:
            ids = [int(r[0]) for r in self._query(
                f"SELECT id FROM runs WHERE started_at < ? AND id != (SELECT MAX(id) FROM runs) ORDER BY id "
                f"LIMIT {PRUNE_BATCH}", (cutoff,))]
            if not ids:
                break
            marks = ", ".join("?" for _ in ids)
            try:
                with self.dialect.transaction(self.conn):
                    for table in ("items", "approvals"):
                        self.conn.execute(self.dialect.sql(f"DELETE FROM {table} WHERE run_id IN ({marks})"), ids)
                    self.conn.execute(self.dialect.sql(f"DELETE FROM runs WHERE id IN ({marks})"), ids)
            except self.dialect.errors as exc:
                raise self.dialect.error(exc) from None
            removed += len(ids)
        if removed:
            self.dialect.reclaim(self.conn)
        return removed


class Store:
    """The ledger and the run lease that guards it (psabill.ledger.lease)."""

    def __init__(self, ledger: Ledger, flock: Optional[Path]) -> None:
        self.ledger = ledger
        self.flock = flock  # SQLite: the run lock file in the state dir, which the lease is taken under

    @property
    def shared(self) -> bool:
        """Whether several hosts can share this ledger (PostgreSQL)."""
        return self.ledger.shared

    @contextlib.contextmanager
    def lock(self, timeout: float, *, occurrence: Optional[datetime] = None,
             ttl: Optional[float] = None) -> Iterator[Any]:
        """Hold this config's run lease, waiting at most ``timeout`` seconds; while it is held the
        ledger's intents are fenced by it. ``occurrence``: a scheduled firing, which does not wait for a
        live lease held for that very occurrence (:class:`psabill.ledger.lease.Elsewhere`)."""
        from psabill.ledger import lease  # the lease machinery: only a run (or an approval) takes it

        held = lease.take(self.ledger, timeout, ttl=lease.DEFAULT_TTL if ttl is None else ttl, flock=self.flock,
                          occurrence=occurrence)
        self.ledger.fence = held
        try:
            yield held
        finally:
            self.ledger.fence = None
            held.release()


def open_store(paths: Any, url: Optional[str], account: str = "") -> Store:
    """The ledger (not yet connected) and its run lease: PostgreSQL at ``url``, else SQLite (with an
    ``flock`` in the state dir under the lease). Nothing is opened until it is used. The lease is this
    config's: two configs that share a ledger never wait for each other."""
    if url:
        from psabill.ledger.dialect import PostgresDialect  # psycopg: only with a [state] url

        if not url.startswith(("postgresql://", "postgres://")):
            raise StateError(f"[state] url {dialect_mod.shown(url)} is not a postgresql:// URL")
        try:
            pg = PostgresDialect(url)
        except ImportError:
            raise StateError("[state] url needs psycopg 3: install psabill with the 'postgres' extra "
                             "(pip install 'psabill[postgres]')") from None
        return Store(Ledger(pg, account), None)
    return Store(Ledger(paths.db, account), paths.lock_for(account))


def _done(dialect: Dialect, conn: Any, occurrence: datetime, account: str, *, legacy: bool = False) -> bool:
    # A row still "running" is either in progress (its owner holds the run lock, and we re-check after
    # taking it) or left by a killed run: neither counts as done, nor does an aborted run (it wrote
    # nothing) or one to retry (a transient failure): a later firing within catch-up runs it again.
    if legacy:  # a version 2 ledger, read before its first writer migrates it: no identities, no retries
        return conn.execute(dialect.sql(
            "SELECT 1 FROM runs WHERE occurrence = ? AND trigger = 'scheduled' AND status NOT IN (?, ?, ?) LIMIT 1"),
            (iso(occurrence), *outcomes.NOT_DONE)).fetchone() is not None
    row = conn.execute(dialect.sql(
        "SELECT 1 FROM runs WHERE occurrence = ? AND trigger = 'scheduled' AND (account = ? OR account IS NULL) "
        "AND status NOT IN (?, ?, ?) AND retry = 0 LIMIT 1"),
        (iso(occurrence), account, *outcomes.NOT_DONE),
    ).fetchone()
    return row is not None


def hostname() -> str:
    import socket  # only a run records its host; the not-due path never does

    return socket.gethostname()
