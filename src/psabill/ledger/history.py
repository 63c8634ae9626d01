"""The run history that doubles as the once-only ledger: SQLite or PostgreSQL.

* By default it is ``state.db`` in the state dir. With ``[state] url`` (or
  ``PSABILL_STATE_URL``, which wins) it is a PostgreSQL database that several
  hosts share; :func:`open_store` picks, and :mod:`psabill.ledger.dialect` holds what
  differs. The log always stays local.
* It holds one ``runs`` row per run and one ``items`` row per
  (customer, SKU). Rows are written as the run goes, so a run that is killed
  leaves its record; the next run that takes the lock marks it ``interrupted``.
* A scheduled occurrence counts as *done* once a run for it exists in any
  status but ``interrupted`` or ``aborted``: an interrupted occurrence is run
  again (the PSA writes are idempotent or re-read before each change), and so
  is an aborted one (it stopped before any write: PSA unreachable, credentials
  refused, source unreadable), at later firings within catch-up; every other
  one never. Each attempt is its own row (:meth:`History.attempts`).
* Runs are serialized by the store's run lock (an ``flock`` in the state dir,
  or a PostgreSQL advisory lock on a connection held for the run); the guard
  re-checks the ledger after taking it, and a scheduled run claims its
  occurrence in one transaction.
* Every run records the host it ran on.
* A corrupt or unreadable database is an error, never a silent fresh start:
  the file is left exactly as found for the admin to inspect.
* Every text written (run, item and email messages, hints, names) passes
  through :func:`psabill.text.redact.scrub` first (:func:`_text`): the history is an
  output like any other and must never hold a registered secret.
"""


import os
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Dict, List, NamedTuple, Optional, Union

from psabill.ledger import dialect as dialect_mod
from psabill.ledger.dialect import Cursor, Dialect, SqliteDialect
from psabill.errors import StateError
from psabill.config.paths import Paths
from psabill.outcomes import ABORTED, INTERRUPTED, RUNNING

if TYPE_CHECKING:  # the report classes load only where a run or a resend needs them
    from psabill.report import ItemResult, RunReport

SCHEMA_VERSION = dialect_mod.SCHEMA_VERSION
JUMP = timedelta(days=366)  # a gap between two runs this long is a clock jump, not a pruning reason


def _stored(value: Any) -> Any:
    """A quantity for SQLite: ints as they are, Decimals as REAL (2.5 must not become 2)."""
    from decimal import Decimal  # not at module level: the not-due cron path never reads a quantity

    return float(value) if isinstance(value, Decimal) else value


def _loaded(value: Any) -> Any:
    """A stored quantity back: whole ones as int, others as exact Decimals."""
    if value is None or isinstance(value, int):
        return value
    from decimal import Decimal

    try:
        number = Decimal(str(value))
    except ArithmeticError:
        return value
    return int(number) if number == number.to_integral_value() else number


def _text(value: Any) -> Any:
    """A text column's value, scrubbed of registered secrets; anything else as it is."""
    if isinstance(value, str):
        from psabill.text import redact

        return redact.scrub(value)
    return value


def iso(value: Optional[datetime]) -> Optional[str]:
    return value.astimezone(timezone.utc).isoformat() if value else None


def _parse(value: Optional[str]) -> Optional[datetime]:
    return datetime.fromisoformat(value) if value else None


class RunRow(NamedTuple):
    id: int
    trigger: str
    occurrence: Optional[str]
    started_at: str
    finished_at: Optional[str]
    status: str
    late_seconds: Optional[int]
    message: str
    psa_kind: Optional[str]
    api_requests: int
    updated: int
    unchanged: int
    failed: int
    unmapped: int
    email_status: Optional[str]
    email_message: str
    host: Optional[str] = None

    @property
    def request_rate(self) -> Optional[float]:
        """API requests per second over the run, once it has finished."""
        if not self.finished_at:
            return None
        seconds = (datetime.fromisoformat(self.finished_at) - datetime.fromisoformat(self.started_at)).total_seconds()
        return round(self.api_requests / seconds, 1) if seconds > 0 else None

    def to_json(self) -> Dict[str, Any]:
        return {
            "id": self.id,
            "trigger": self.trigger,
            "occurrence": self.occurrence,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "status": self.status,
            "late_seconds": self.late_seconds,
            "message": self.message,
            "psa": self.psa_kind,
            "api_requests": self.api_requests,
            "requests_per_second": self.request_rate,
            "counts": {
                "updated": self.updated,
                "unchanged": self.unchanged,
                "failed": self.failed,
                "unmapped": self.unmapped,
            },
            "email": {"status": self.email_status, "message": self.email_message},
            "host": self.host,
        }


_RUN_COLUMNS = (
    "id, trigger, occurrence, started_at, finished_at, status, late_seconds, message, "
    "psa_kind, api_requests, updated, unchanged, failed, unmapped, email_status, email_message, host"
)
_ITEM_COLUMNS = ("run_id", "seq", "customer", "sku", "psa_company", "agreement", "line", "old", "new", "outcome",
                 "message", "hint")


class History:
    """The history database. Open one per command or run, and close it (it is a context manager).

    ``where`` is the SQLite file (the default, in the state dir) or a
    :class:`~psabill.ledger.dialect.Dialect` such as PostgreSQL's; every query below is
    written once, with ``?`` placeholders the dialect rewrites.
    """

    def __init__(self, where: Union[Path, Dialect]) -> None:
        self.dialect: Dialect = SqliteDialect(where) if isinstance(where, Path) else where
        self.db_path: Optional[Path] = where if isinstance(where, Path) else None
        self.dir = self.db_path.parent if self.db_path is not None else None
        self._conn: Any = None

    def __enter__(self) -> "History":
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

    # -- opening --------------------------------------------------------------

    @property
    def conn(self) -> Any:
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    def _connect(self, readonly: bool = False) -> Any:
        conn = None
        try:
            conn = self.dialect.connect(readonly=readonly)
            if not readonly:
                version = self.dialect.migrate(conn)
            else:
                version = dialect_mod._read_version(self.dialect, conn)
                if version == 0:
                    return conn  # created by a process still writing its schema: nothing has run yet
                if version < SCHEMA_VERSION:
                    return conn  # an older schema: readable; the next writer migrates it
            if version != SCHEMA_VERSION:
                raise StateError(
                    f"history database {self.where} has schema version {version}, this psabill "
                    f"knows {SCHEMA_VERSION}: upgrade psabill (the database was left unchanged)"
                )
        except self.dialect.errors as exc:
            if conn is not None:
                conn.close()
            raise self._db_error(exc) from None
        except StateError:
            if conn is not None:
                conn.close()
            raise
        return conn

    def _db_error(self, exc: BaseException) -> StateError:
        return self.dialect.error(exc)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _execute(self, sql: str, params: Any = ()) -> Cursor:
        try:
            with self.dialect.transaction(self.conn):
                cursor: Cursor = self.conn.execute(self.dialect.sql(sql), params)
                return cursor
        except self.dialect.errors as exc:
            raise self._db_error(exc) from None

    def _query(self, sql: str, params: Any = ()) -> List[Any]:
        try:
            rows: List[Any] = self.conn.execute(self.dialect.sql(sql), params).fetchall()
            return rows
        except self.dialect.errors as exc:
            raise self._db_error(exc) from None

    # -- the cheap read used by the not-due guard path ----------------------

    def occurrence_done_readonly(self, occurrence: datetime) -> bool:
        """Like :meth:`occurrence_done`, without creating anything."""
        if not self.exists:
            return False
        conn = self._connect(readonly=True)
        try:
            return self.dialect.has_meta(conn) and _done(self.dialect, conn, occurrence)
        except self.dialect.errors as exc:
            raise self._db_error(exc) from None
        finally:
            conn.close()

    def occurrence_done(self, occurrence: datetime) -> bool:
        try:
            return _done(self.dialect, self.conn, occurrence)
        except self.dialect.errors as exc:
            raise self._db_error(exc) from None

    def hosts(self) -> List[str]:
        """Every host that has a run in the history."""
        rows = self._query("SELECT DISTINCT host FROM runs WHERE host IS NOT NULL ORDER BY host")
        return [row[0] for row in rows]

    # -- runs -----------------------------------------------------------------

    def mark_interrupted(self) -> int:
        """Mark runs left ``running`` as interrupted. Call only while holding the run lock."""
        cursor = self._execute(
            "UPDATE runs SET status = ?, message = CASE WHEN message = '' THEN ? ELSE message END "
            "WHERE status = ?",
            (INTERRUPTED, "the run was killed before it finished", RUNNING),
        )
        return cursor.rowcount

    def start_run(self, report: "RunReport") -> int:
        """Record the run as ``running``. A scheduled run claims its occurrence: the check that
        nobody ran it and the insert are one transaction that keeps other writers out."""
        params = (
            report.trigger,
            iso(report.occurrence),
            iso(report.started_at),
            RUNNING,
            report.late_seconds,
            _text(report.psa_kind),
            os.getpid(),
            _hostname(),
        )
        sql = self.dialect.sql(
            "INSERT INTO runs (trigger, occurrence, started_at, status, late_seconds, psa_kind, pid, host) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
        claim = report.trigger == "scheduled" and report.occurrence is not None
        try:
            with self.dialect.transaction(self.conn, exclusive=claim):
                if claim and report.occurrence is not None and _done(self.dialect, self.conn, report.occurrence):
                    raise StateError(f"occurrence {iso(report.occurrence)} already ran (see 'psabill history'); "
                                     "nothing was run")
                run_id = self.dialect.insert_id(self.conn, sql, params)
        except self.dialect.errors as exc:
            raise self._db_error(exc) from None
        report.run_id = run_id
        return run_id

    def add_item(self, run_id: int, seq: int, item: "ItemResult") -> None:
        self._execute(
            self.dialect.upsert("items", _ITEM_COLUMNS, ("run_id", "seq")),
            (
                run_id,
                seq,
                _text(item.customer),
                _text(item.sku),
                _text(item.psa_company),
                _text(item.agreement),
                item.line,
                _stored(item.old),
                item.new,
                item.outcome,
                _text(item.message),
                _text(item.hint),
            ),
        )

    def progress(self, run_id: int, api_requests: int) -> None:
        self._execute("UPDATE runs SET api_requests = ? WHERE id = ?", (api_requests, run_id))

    def finish_run(self, report: "RunReport") -> None:
        counts = report.counts
        self._execute(
            "UPDATE runs SET finished_at = ?, status = ?, message = ?, api_requests = ?, "
            "updated = ?, unchanged = ?, failed = ?, unmapped = ?, psa_kind = ? WHERE id = ?",
            (
                iso(report.finished_at),
                report.status,
                _text(report.message),
                report.api_requests,
                counts["updated"],
                counts["unchanged"],
                counts["failed"],
                counts["unmapped"],
                report.psa_kind,
                report.run_id,
            ),
        )

    def set_email(self, run_id: int, status: str, message: str) -> None:
        self._execute(
            "UPDATE runs SET email_status = ?, email_message = ? WHERE id = ?",
            (status, _text(message), run_id),
        )

    def last_run(self, *, real: bool = False) -> Optional[RunRow]:
        """The newest run; with ``real``, the newest that was not a dry run."""
        where = "WHERE trigger != 'dry-run' " if real else ""
        rows = self._query(f"SELECT {_RUN_COLUMNS} FROM runs {where}ORDER BY id DESC LIMIT 1")
        return RunRow(*rows[0]) if rows else None

    def runs(self, since: Optional[datetime] = None) -> List[RunRow]:
        if since is None:
            rows = self._query(f"SELECT {_RUN_COLUMNS} FROM runs ORDER BY id DESC")
        else:
            rows = self._query(
                f"SELECT {_RUN_COLUMNS} FROM runs WHERE started_at >= ? ORDER BY id DESC",
                (iso(since),),
            )
        return [RunRow(*row) for row in rows]

    def run(self, run_id: int) -> Optional[RunRow]:
        rows = self._query(f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,))
        return RunRow(*rows[0]) if rows else None

    def items(self, run_id: int) -> List["ItemResult"]:
        rows = self._query(
            "SELECT customer, sku, outcome, psa_company, agreement, line, old, new, message, hint "
            "FROM items WHERE run_id = ? ORDER BY seq",
            (run_id,),
        )
        from psabill.report import ItemResult

        return [ItemResult(*row[:6], _loaded(row[6]), _loaded(row[7]), *row[8:]) for row in rows]

    def done_occurrences(self, since: datetime) -> List[str]:
        rows = self._query(
            "SELECT DISTINCT occurrence FROM runs WHERE occurrence >= ? AND trigger = 'scheduled' "
            "AND status NOT IN (?, ?, ?)",
            (iso(since), INTERRUPTED, RUNNING, ABORTED),
        )
        return [row[0] for row in rows]

    def attempts(self, since: datetime) -> Dict[str, "Attempts"]:
        """Scheduled occurrences since ``since`` that were tried but are not done (aborted or
        interrupted): occurrence ISO -> how many attempts and the newest one's reason."""
        rows = self._query(
            "SELECT occurrence, status, message FROM runs WHERE occurrence >= ? AND trigger = 'scheduled' "
            "ORDER BY id",
            (iso(since),),
        )
        found: Dict[str, Attempts] = {}
        done = set()
        for occurrence, status, message in rows:
            if status in (INTERRUPTED, RUNNING, ABORTED):
                previous = found.get(occurrence)
                found[occurrence] = Attempts((previous.tries if previous else 0) + 1, status, message or status)
            else:
                done.add(occurrence)
        return {k: v for k, v in found.items() if k not in done}

    def report(self, run_id: int) -> Optional["RunReport"]:
        """Rebuild a RunReport from the history (for resending an email)."""
        from psabill.report import RunReport

        row = self.run(run_id)
        if row is None:
            return None
        report = RunReport(
            trigger=row.trigger,
            started_at=_parse(row.started_at) or datetime.now(timezone.utc),
            status=row.status,
            run_id=row.id,
            occurrence=_parse(row.occurrence),
            finished_at=_parse(row.finished_at),
            late_seconds=row.late_seconds,
            message=row.message,
            psa_kind=row.psa_kind,
            api_requests=row.api_requests,
            items=self.items(run_id),
            email_status=row.email_status,
            email_message=row.email_message,
        )
        return report

    def prune(self, retention: timedelta, keep: timedelta) -> int:
        """Delete runs (and their items) older than the retention window; keep the newest always.

        The window is measured from the newest record, never from a "now" that
        could be earlier than the records (a clock set back), and it is never
        shorter than ``keep``: what the guard may still need (catch-up + 3 h).
        A clock that jumps forward for one run (or back after it) never empties it.
        """
        rows = self._query("SELECT started_at FROM runs ORDER BY started_at DESC LIMIT 1")
        if not rows:
            return 0
        newest = datetime.fromisoformat(rows[0][0])
        # A clock far ahead must not empty the ledger. A run recorded while it was ahead must not
        # push the window past every later run: measure from the newest run or the latest one,
        # whichever is earlier. And a latest run more than a year (and a window) after the one
        # before it (a clock that jumped years ahead, or a very long pause) prunes nothing this time.
        window = max(retention, keep)
        latest = [datetime.fromisoformat(row[0])
                  for row in self._query("SELECT started_at FROM runs ORDER BY id DESC LIMIT 2")]
        if len(latest) == 2 and latest[0] - latest[1] > max(window, JUMP):
            return 0
        newest = min(newest, latest[0])
        cutoff = newest - window
        cursor = self._execute(
            "DELETE FROM runs WHERE started_at < ? AND id != (SELECT MAX(id) FROM runs)",
            (iso(cutoff),),
        )
        return cursor.rowcount


ENV_STATE_URL = "PSABILL_STATE_URL"


def state_url(configured: Optional[str]) -> Optional[str]:
    """``PSABILL_STATE_URL``, then ``[state] url``; None (or empty) keeps SQLite in the state dir."""
    return os.environ.get(ENV_STATE_URL) or configured or None


class Store(NamedTuple):
    """The history and the run lock that guards it."""

    history: History
    lock: Callable[[float], ContextManager[None]]  # lock(timeout): hold the run lock

    @property
    def shared(self) -> bool:
        """Whether several hosts can share this ledger (PostgreSQL)."""
        return self.history.dialect.shared


def open_store(paths: Paths, url: Optional[str]) -> Store:
    """The history (not yet connected) and its run lock: PostgreSQL at ``url`` (see :func:`state_url`),
    else SQLite and an ``flock`` in the state dir. Nothing is opened until it is used."""
    if url:
        from psabill.ledger.dialect import PostgresDialect

        if not url.startswith(("postgresql://", "postgres://")):
            raise StateError(f"[state] url {dialect_mod.redact(url)} is not a postgresql:// URL")
        try:
            pg = PostgresDialect(url)
        except ImportError:
            raise StateError("[state] url needs psycopg 3: install psabill with the 'postgres' extra "
                             "(pip install 'psabill[postgres]')") from None
        return Store(History(pg), pg.lock)
    def flock(timeout: float) -> ContextManager[None]:
        from psabill.ledger.lock import run_lock

        return run_lock(paths.lock, timeout)

    return Store(History(paths.db), flock)


def _done(dialect: Dialect, conn: Any, occurrence: datetime) -> bool:
    # A row still "running" is either in progress (its owner holds the run lock, and
    # we re-check after taking it) or left by a killed run: neither counts as done,
    # nor does an aborted run (it wrote nothing; a later firing retries it).
    row = conn.execute(dialect.sql(
        "SELECT 1 FROM runs WHERE occurrence = ? AND trigger = 'scheduled' "
        "AND status NOT IN (?, ?, ?) LIMIT 1"),
        (iso(occurrence), INTERRUPTED, RUNNING, ABORTED),
    ).fetchone()
    return row is not None


class Attempts(NamedTuple):
    """The runs of an occurrence that is not done yet."""

    tries: int
    status: str  # the newest attempt's
    reason: str  # the newest attempt's message


def _hostname() -> str:
    import socket  # only a run records its host; the not-due path never does

    return socket.gethostname()
