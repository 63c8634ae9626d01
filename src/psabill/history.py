"""The run history (SQLite in the state dir) that doubles as the once-only ledger.

* ``state.db`` holds one ``runs`` row per run and one ``items`` row per
  (customer, SKU). Rows are written as the run goes, so a run that is killed
  leaves its record; the next run that takes the lock marks it ``interrupted``.
* A scheduled occurrence counts as *done* once a run for it exists in any
  status but ``interrupted``: an interrupted occurrence is run again (the PSA
  writes are idempotent or re-read before each change), every other one never.
* Runs are serialized by :mod:`psabill.lock`; the guard re-checks the ledger
  after taking it.
* A corrupt or unreadable database is an error, never a silent fresh start:
  the file is left exactly as found for the admin to inspect.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Dict, List, Optional

from psabill.errors import StateError
from psabill.fsutil import make_private_dir
from psabill.report import INTERRUPTED, RUNNING, ItemResult, RunReport

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    trigger TEXT NOT NULL,
    occurrence TEXT,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    status TEXT NOT NULL,
    late_seconds INTEGER,
    message TEXT NOT NULL DEFAULT '',
    psa_kind TEXT,
    api_requests INTEGER NOT NULL DEFAULT 0,
    updated INTEGER NOT NULL DEFAULT 0,
    unchanged INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    unmapped INTEGER NOT NULL DEFAULT 0,
    email_status TEXT,
    email_message TEXT NOT NULL DEFAULT '',
    pid INTEGER
);
CREATE INDEX IF NOT EXISTS runs_occurrence ON runs (occurrence);
CREATE INDEX IF NOT EXISTS runs_started ON runs (started_at);
CREATE TABLE IF NOT EXISTS items (
    run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    customer TEXT NOT NULL,
    sku TEXT NOT NULL,
    psa_company TEXT,
    agreement TEXT,
    line TEXT,
    old INTEGER,  -- a PSA quantity: INTEGER affinity keeps a decimal 2.5 as REAL 2.5, exactly
    new INTEGER,
    outcome TEXT NOT NULL,
    message TEXT NOT NULL DEFAULT '',
    hint TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (run_id, seq)
);
"""


def _stored(value: Any) -> Any:
    """A quantity for SQLite: ints as they are, Decimals as REAL (2.5 must not become 2)."""
    return float(value) if isinstance(value, Decimal) else value


def _loaded(value: Any) -> Any:
    """A stored quantity back: whole ones as int, others as exact Decimals."""
    if value is None or isinstance(value, int):
        return value
    try:
        number = Decimal(str(value))
    except ArithmeticError:
        return value
    return int(number) if number == number.to_integral_value() else number


def iso(value: Optional[datetime]) -> Optional[str]:
    return value.astimezone(timezone.utc).isoformat() if value else None


def _parse(value: Optional[str]) -> Optional[datetime]:
    return datetime.fromisoformat(value) if value else None


@dataclass
class RunRow:
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
        }


_RUN_COLUMNS = (
    "id, trigger, occurrence, started_at, finished_at, status, late_seconds, message, "
    "psa_kind, api_requests, updated, unchanged, failed, unmapped, email_status, email_message"
)


class History:
    """The history database. Open one per command or run, and close it (it is a context manager)."""

    def __init__(self, db_path: Path) -> None:
        self.dir = db_path.parent
        self.db_path = db_path
        self._conn: Optional[sqlite3.Connection] = None

    def __enter__(self) -> "History":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def exists(self) -> bool:
        """Whether the database file exists (read-only commands never create it)."""
        return self.db_path.exists()

    # -- opening --------------------------------------------------------------

    def ensure_dir(self) -> None:
        """Create the state dir (0700) if it is missing."""
        make_private_dir(self.dir, StateError, "state dir")

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            self.ensure_dir()
            self._conn = self._connect(self.db_path)
        return self._conn

    def _connect(self, path: Path, readonly: bool = False) -> sqlite3.Connection:
        try:
            if readonly:
                conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=5)
            else:
                conn = sqlite3.connect(str(path), timeout=5)
                os.chmod(path, 0o600)
                # One commit per item keeps a killed run's record; WAL with NORMAL sync makes
                # each commit cheap (no fsync) and still survives a killed process intact.
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            if not readonly:
                version = self._migrate(conn)
            else:
                version = self._read_version(conn)
                if version == 0:
                    return conn  # created by a process still writing its schema: nothing has run yet
            if version != SCHEMA_VERSION:
                raise StateError(
                    f"history database {path} has schema version {version}, this psabill "
                    f"knows {SCHEMA_VERSION}: upgrade psabill (the file was left unchanged)"
                )
        except sqlite3.DatabaseError as exc:
            raise self._db_error(path, exc) from None
        return conn

    @staticmethod
    def _db_error(path: Path, exc: sqlite3.Error) -> StateError:
        text = str(exc)
        if "locked" in text or "busy" in text:
            return StateError(f"history database {path} is locked by another process ({text}); retry later")
        if "full" in text or "disk I/O" in text:
            return StateError(f"cannot write the history database {path}: the disk is full or failing ({text}); "
                              "free space, then retry")
        if "readonly" in text or "read-only" in text or "unable to open" in text:
            return StateError(f"cannot write the history database {path} ({text}): make it and its directory "
                              "writable by this user, then retry")
        if "not a database" in text or "malformed" in text or "corrupt" in text:
            return StateError(
                f"history database {path} is corrupt ({text}); it was left unchanged. Moving it aside starts "
                "a fresh history, but loses the record of which occurrences already ran"
            )
        return StateError(f"history database {path} failed ({text}); it was left unchanged: retry, and if it "
                          "persists, check the file and the disk")

    @staticmethod
    def _read_version(conn: sqlite3.Connection) -> int:
        """The stored schema version; 0 for a database whose schema was never committed."""
        if not _has_meta(conn):
            return 0
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return int(row[0]) if row else 0

    def _migrate(self, conn: sqlite3.Connection) -> int:
        """Create the schema in one IMMEDIATE transaction: another process sees all of it or none.

        Two guards opening a fresh state dir together serialize here (the second
        waits on SQLite's busy timeout, then finds the schema); a creation that
        fails half-way, on a full disk say, rolls back and leaves nothing that
        wedges the next run.
        """
        if _has_meta(conn):
            return self._read_version(conn)
        conn.isolation_level = None  # explicit BEGIN/COMMIT: DDL stays inside the transaction
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                if not _has_meta(conn):
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            conn.execute(statement)
                    conn.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?)",
                                 (str(SCHEMA_VERSION),))
                version = self._read_version(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        finally:
            conn.isolation_level = ""
        return version

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        try:
            with self.conn:
                return self.conn.execute(sql, params)
        except sqlite3.DatabaseError as exc:
            raise self._db_error(self.db_path, exc) from None

    def _query(self, sql: str, params: Any = ()) -> List[Any]:
        try:
            return self.conn.execute(sql, params).fetchall()
        except sqlite3.DatabaseError as exc:
            raise self._db_error(self.db_path, exc) from None

    # -- the cheap read used by the not-due guard path ----------------------

    def occurrence_done_readonly(self, occurrence: datetime) -> bool:
        """Like :meth:`occurrence_done`, without creating anything."""
        if not self.db_path.exists():
            return False
        try:
            conn = self._connect(self.db_path, readonly=True)
        except StateError:
            raise
        try:
            return _has_meta(conn) and _done(conn, occurrence)
        except sqlite3.DatabaseError as exc:
            raise self._db_error(self.db_path, exc) from None
        finally:
            conn.close()

    def occurrence_done(self, occurrence: datetime) -> bool:
        try:
            return _done(self.conn, occurrence)
        except sqlite3.DatabaseError as exc:
            raise self._db_error(self.db_path, exc) from None

    # -- runs -----------------------------------------------------------------

    def mark_interrupted(self) -> int:
        """Mark runs left ``running`` as interrupted. Call only while holding the run lock."""
        cursor = self._execute(
            "UPDATE runs SET status = ?, message = CASE WHEN message = '' THEN ? ELSE message END "
            "WHERE status = ?",
            (INTERRUPTED, "the run was killed before it finished", RUNNING),
        )
        return cursor.rowcount

    def start_run(self, report: RunReport) -> int:
        cursor = self._execute(
            "INSERT INTO runs (trigger, occurrence, started_at, status, late_seconds, psa_kind, pid) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                report.trigger,
                iso(report.occurrence),
                iso(report.started_at),
                RUNNING,
                report.late_seconds,
                report.psa_kind,
                os.getpid(),
            ),
        )
        run_id = int(cursor.lastrowid or 0)
        report.run_id = run_id
        return run_id

    def add_item(self, run_id: int, seq: int, item: ItemResult) -> None:
        self._execute(
            "INSERT OR REPLACE INTO items (run_id, seq, customer, sku, psa_company, agreement, line, "
            "old, new, outcome, message, hint) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                run_id,
                seq,
                item.customer,
                item.sku,
                item.psa_company,
                item.agreement,
                item.line,
                _stored(item.old),
                item.new,
                item.outcome,
                item.message,
                item.hint,
            ),
        )

    def progress(self, run_id: int, api_requests: int) -> None:
        self._execute("UPDATE runs SET api_requests = ? WHERE id = ?", (api_requests, run_id))

    def finish_run(self, report: RunReport) -> None:
        counts = report.counts
        self._execute(
            "UPDATE runs SET finished_at = ?, status = ?, message = ?, api_requests = ?, "
            "updated = ?, unchanged = ?, failed = ?, unmapped = ?, psa_kind = ? WHERE id = ?",
            (
                iso(report.finished_at),
                report.status,
                report.message,
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
            (status, message, run_id),
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

    def items(self, run_id: int) -> List[ItemResult]:
        rows = self._query(
            "SELECT customer, sku, outcome, psa_company, agreement, line, old, new, message, hint "
            "FROM items WHERE run_id = ? ORDER BY seq",
            (run_id,),
        )
        return [ItemResult(*row[:6], _loaded(row[6]), *row[7:]) for row in rows]

    def done_occurrences(self, since: datetime) -> List[str]:
        rows = self._query(
            "SELECT DISTINCT occurrence FROM runs WHERE occurrence >= ? AND trigger = 'scheduled' "
            "AND status NOT IN (?, ?)",
            (iso(since), INTERRUPTED, RUNNING),
        )
        return [row[0] for row in rows]

    def report(self, run_id: int) -> Optional[RunReport]:
        """Rebuild a RunReport from the history (for resending an email)."""
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
        """
        rows = self._query("SELECT started_at FROM runs ORDER BY started_at DESC LIMIT 1")
        if not rows:
            return 0
        newest = datetime.fromisoformat(rows[0][0])
        cutoff = newest - max(retention, keep)
        cursor = self._execute(
            "DELETE FROM runs WHERE started_at < ? AND id != (SELECT MAX(id) FROM runs)",
            (iso(cutoff),),
        )
        return cursor.rowcount


def _has_meta(conn: sqlite3.Connection) -> bool:
    row = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone()
    return row is not None


def _done(conn: sqlite3.Connection, occurrence: datetime) -> bool:
    # A row still "running" is either in progress (its owner holds the run lock, and
    # we re-check after taking it) or left by a killed run: neither counts as done.
    row = conn.execute(
        "SELECT 1 FROM runs WHERE occurrence = ? AND trigger = 'scheduled' "
        "AND status NOT IN (?, ?) LIMIT 1",
        (iso(occurrence), INTERRUPTED, RUNNING),
    ).fetchone()
    return row is not None
