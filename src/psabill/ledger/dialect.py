"""Where the history lives: SQLite in the state dir, or a shared PostgreSQL database.

:class:`~psabill.ledger.history.History` holds every query, written once with ``?``
placeholders; a dialect holds only what differs between the two servers:
connecting, the placeholder style, the DDL (AUTOINCREMENT vs an identity
column), the item upsert, creating or migrating the schema in one transaction,
the write transaction, and turning a driver error into a one-line
:class:`~psabill.errors.StateError`.

psycopg is imported only when a ``[state] url`` (or ``PSABILL_STATE_URL``) is
set, so the SQLite path and the not-due cron path never load it. A password in
the URL is never shown: every message names :func:`redact` of the URL.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Protocol, Sequence, Tuple, Type

from psabill.errors import StateError
from psabill.text.files import make_private_dir, open_private, refuse_symlink

SCHEMA_VERSION = 4
READ_AS_IS = 3  # the oldest schema whose tables this psabill reads as they are (4 only adds an index)

# {id} is the dialect's auto-numbered primary key. Counts are never stored: they are the items'.
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id {id},
    trigger TEXT NOT NULL,
    occurrence TEXT,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    status TEXT NOT NULL,
    late_seconds INTEGER,
    message TEXT NOT NULL DEFAULT '',
    psa_kind TEXT,
    api_requests INTEGER NOT NULL DEFAULT 0,
    email_status TEXT,
    email_message TEXT NOT NULL DEFAULT '',
    pid INTEGER,
    host TEXT,
    account TEXT,
    attempt INTEGER NOT NULL DEFAULT 1,
    of_run INTEGER,
    retry INTEGER NOT NULL DEFAULT 0,
    source_digest TEXT,
    planned_at TEXT,
    message_id TEXT,
    account_name TEXT NOT NULL DEFAULT '',
    zone TEXT NOT NULL DEFAULT 'UTC',
    schedule_text TEXT NOT NULL DEFAULT '',
    next_run TEXT
);
CREATE INDEX IF NOT EXISTS runs_started ON runs (started_at);
CREATE INDEX IF NOT EXISTS runs_account_occurrence ON runs (account, occurrence);
CREATE TABLE IF NOT EXISTS items (
    run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    customer TEXT NOT NULL,
    sku TEXT NOT NULL,
    psa_company TEXT,
    agreement TEXT,
    line TEXT,
    old NUMERIC,  -- a PSA quantity is a decimal: 2.5 stays 2.5 (SQLite keeps it REAL, PostgreSQL exact)
    new NUMERIC,
    outcome TEXT NOT NULL,
    message TEXT NOT NULL DEFAULT '',
    hint TEXT NOT NULL DEFAULT '',
    product TEXT,
    rule TEXT NOT NULL DEFAULT '',
    transient INTEGER NOT NULL DEFAULT 0,
    intent_at TEXT,  -- committed before the write is sent: an intent without an outcome is read back
    PRIMARY KEY (run_id, seq)
);
CREATE INDEX IF NOT EXISTS items_intents ON items (intent_at) WHERE intent_at IS NOT NULL AND outcome = 'planned';
CREATE INDEX IF NOT EXISTS items_customer ON items (customer, run_id);
CREATE TABLE IF NOT EXISTS approvals (
    run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    action TEXT NOT NULL,
    by_user TEXT NOT NULL,
    host TEXT NOT NULL,
    at TEXT NOT NULL,
    items INTEGER NOT NULL,
    applied_by INTEGER
);
CREATE INDEX IF NOT EXISTS approvals_run ON approvals (run_id);
CREATE TABLE IF NOT EXISTS leases (
    account TEXT PRIMARY KEY,
    token INTEGER NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    since TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    run_id INTEGER
);
"""

# Schema version N-1 -> N, run inside the same transaction that creates a schema. Version 2's count
# columns (updated, unchanged, failed, unmapped) stay in an upgraded database, unread.
MIGRATIONS = {
    2: ("ALTER TABLE runs ADD COLUMN host TEXT",),
    3: tuple(f"ALTER TABLE runs ADD COLUMN {column}" for column in (
        "account TEXT", "attempt INTEGER NOT NULL DEFAULT 1", "of_run INTEGER", "retry INTEGER NOT NULL DEFAULT 0",
        "source_digest TEXT", "planned_at TEXT", "message_id TEXT", "account_name TEXT NOT NULL DEFAULT ''",
        "zone TEXT NOT NULL DEFAULT 'UTC'", "schedule_text TEXT NOT NULL DEFAULT ''", "next_run TEXT"))
    + tuple(f"ALTER TABLE items ADD COLUMN {column}" for column in (
        "product TEXT", "rule TEXT NOT NULL DEFAULT ''", "transient INTEGER NOT NULL DEFAULT 0", "intent_at TEXT"))
    + ("CREATE INDEX IF NOT EXISTS runs_account_occurrence ON runs (account, occurrence)",
       "CREATE INDEX IF NOT EXISTS items_intents ON items (intent_at) WHERE intent_at IS NOT NULL "
       "AND outcome = 'planned'",
       "CREATE TABLE IF NOT EXISTS approvals (run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE, "
       "action TEXT NOT NULL, by_user TEXT NOT NULL, host TEXT NOT NULL, at TEXT NOT NULL, items INTEGER NOT NULL, "
       "applied_by INTEGER)",
       "CREATE INDEX IF NOT EXISTS approvals_run ON approvals (run_id)",
       "CREATE TABLE IF NOT EXISTS leases (account TEXT PRIMARY KEY, token INTEGER NOT NULL, host TEXT NOT NULL, "
       "pid INTEGER NOT NULL, since TEXT NOT NULL, expires_at TEXT NOT NULL, run_id INTEGER)"),
    # A customer's lines (the history site's customer pages) by index, not by reading every item.
    4: ("CREATE INDEX IF NOT EXISTS items_customer ON items (customer, run_id)",),
}


class Cursor(Protocol):
    """What History uses of a DB-API cursor, sqlite3's or psycopg's."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> List[Any]: ...


def shown(url: str) -> str:
    """``url`` as messages show it: its password (userinfo or ``password=``) masked, however malformed."""
    from psabill.text.redact import mask_url  # a URL is only shown for a PostgreSQL ledger

    return mask_url(url)


def one_line(text: object) -> str:
    from psabill.text.clean import message  # an error's text: not needed until something fails

    return message(text)


class Dialect:
    """What one database server needs done its own way. ``where`` names it in messages."""

    kind = ""
    shared = False  # True: several hosts can share this ledger
    errors: Tuple[Type[BaseException], ...] = ()
    where = ""

    # The ledger's clock as text, in one fixed width ("2026-11-27T06:00:00.000000+00:00") so that times compare
    # as strings; ``LATER`` is that clock plus ``?`` seconds. PostgreSQL's is the server's: hosts sharing a
    # ledger agree on it whatever their own clocks say.
    NOW = ""
    LATER = ""
    FOR_UPDATE = ""  # locks the lease row a SELECT reads until the transaction ends (SQLite's write lock does)

    def exists(self) -> bool:
        raise NotImplementedError

    def connect(self, readonly: bool = False, name: str = "psabill") -> Any:
        """A connection; ``name`` is the session's application_name (PostgreSQL)."""
        raise NotImplementedError

    def dropped(self, conn: Any, exc: BaseException) -> bool:
        """Whether ``exc`` means the connection itself is gone (a killed session, a failover, an idle
        timeout): a fresh connection may then do the work again."""
        return False

    def batch(self, conn: Any) -> "contextlib.AbstractContextManager[None]":
        """A write transaction whose statements go to the server together: one round trip where the
        driver pipelines (PostgreSQL); a cursor's rowcount is known once the block has ended."""
        return self.transaction(conn)

    def sql(self, text: str) -> str:
        """``text`` with this server's placeholders."""
        return text

    def has_meta(self, conn: Any) -> bool:
        raise NotImplementedError

    def migrate(self, conn: Any) -> int:
        """Create or upgrade the schema in one transaction; the schema version it ends at."""
        raise NotImplementedError

    def transaction(self, conn: Any, *, exclusive: bool = False) -> "contextlib.AbstractContextManager[None]":
        """A write transaction; ``exclusive`` also keeps other writers out of ``runs`` until it ends."""
        raise NotImplementedError

    def upsert(self, table: str, columns: Sequence[str], key: Sequence[str]) -> str:
        raise NotImplementedError

    def insert_id(self, conn: Any, sql: str, params: Any) -> int:
        """Run an INSERT into ``runs``; the new row's id."""
        raise NotImplementedError

    def insert_new(self, table: str, columns: Sequence[str], key: Sequence[str]) -> str:
        """An INSERT that leaves an existing row with the same ``key`` as it is."""
        raise NotImplementedError

    def execute_many(self, conn: Any, sql: str, rows: Sequence[Any]) -> None:
        """One statement over many parameter rows, in as few round trips as the driver allows."""
        raise NotImplementedError

    def reclaim(self, conn: Any) -> None:
        """Let the database reuse (or give back) the space pruned rows held."""

    def mark_session(self, conn: Any, account: str) -> bool:
        """PostgreSQL: an advisory lock on the lease holder's session. Elsewhere there is nothing to mark."""
        return True

    def idle_timeout(self, conn: Any) -> float:
        return 0.0

    def create_schema(self, conn: Any, write: Callable[[str], None]) -> None:
        """Create the tables (``write`` runs one statement)."""
        for statement in SCHEMA.format(id=self.id_type).split(";"):
            if statement.strip():
                write(statement)

    id_type = ""

    def error(self, exc: BaseException) -> StateError:
        raise NotImplementedError



def _read_version(dialect: Dialect, conn: Any) -> int:
    if not dialect.has_meta(conn):
        return 0
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else 0


def migrate_in(dialect: Dialect, conn: Any) -> int:
    """Inside an open write transaction: create or upgrade the schema; the version it ends at."""
    def write(statement: str) -> None:
        conn.execute(statement)

    version = _read_version(dialect, conn)
    if version == 0:
        dialect.create_schema(conn, write)
        conn.execute(dialect.sql("INSERT INTO meta (key, value) VALUES (?, ?)"),
                     ("schema_version", str(SCHEMA_VERSION)))
        return SCHEMA_VERSION
    if version >= SCHEMA_VERSION:
        return version
    for step in range(version + 1, SCHEMA_VERSION + 1):
        for statement in MIGRATIONS[step]:
            write(statement)
    conn.execute(dialect.sql("UPDATE meta SET value = ? WHERE key = 'schema_version'"), (str(SCHEMA_VERSION),))
    return SCHEMA_VERSION


# -- SQLite ------------------------------------------------------------------


VACUUM_PAGES = 2000  # pages handed back per step (8 MB of 4 KiB pages): the write lock is held briefly
VACUUM_STEPS = 50  # steps per prune at most: a lowered retention is given back over a few runs


class SqliteDialect(Dialect):
    kind = "sqlite"
    errors = (sqlite3.DatabaseError,)
    id_type = "INTEGER PRIMARY KEY AUTOINCREMENT"

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self.where = str(db_path)

    NOW = "strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000+00:00'"
    LATER = "strftime('%Y-%m-%dT%H:%M:%f', 'now', '+' || ? || ' seconds') || '000+00:00'"

    def exists(self) -> bool:
        return self.db_path.exists()

    def connect(self, readonly: bool = False, name: str = "psabill") -> sqlite3.Connection:
        path = self.db_path
        # SQLite follows symlinks and creates files through the umask: refuse a
        # symlink for the database or its companions, and create the database
        # 0600 ourselves (SQLite gives -wal and -shm the database's mode).
        for companion in ("", "-wal", "-shm", "-journal"):
            refuse_symlink(Path(f"{path}{companion}"), StateError, "history database file")
        if readonly:
            conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=5)
        else:
            make_private_dir(path.parent, StateError, "state dir", tighten=True)
            os.close(open_private(path, os.O_RDWR | os.O_CREAT, StateError, "history database"))
            conn = sqlite3.connect(str(path), timeout=5)
            # A fresh file learns to hand pruned pages back (see reclaim) before anything writes its first
            # page: switching to WAL does, and fixes the mode from then on. On an existing file a no-op.
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
            # One commit per item keeps a killed run's record; WAL with NORMAL sync makes
            # each commit cheap (no fsync) and still survives a killed process intact.
            _use_wal(conn, 5.0)
            conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    def has_meta(self, conn: Any) -> bool:
        row = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone()
        return row is not None

    @contextlib.contextmanager
    def transaction(self, conn: Any, *, exclusive: bool = False) -> Iterator[None]:
        if not exclusive:
            with conn:
                yield
            return
        with self.immediate(conn):
            yield

    @contextlib.contextmanager
    def immediate(self, conn: Any) -> Iterator[None]:
        """BEGIN IMMEDIATE ... COMMIT with DDL inside the transaction (explicit BEGIN/COMMIT)."""
        conn.isolation_level = None
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        finally:
            conn.isolation_level = ""

    def migrate(self, conn: Any) -> int:
        """Create or upgrade the schema in one IMMEDIATE transaction: another process sees all of it or none.

        Two guards opening a fresh state dir together serialize here (the second
        waits on SQLite's busy timeout, then finds the schema); a creation that
        fails half-way, on a full disk say, rolls back and leaves nothing that
        wedges the next run.
        """
        version = _read_version(self, conn)
        if version == SCHEMA_VERSION or version > SCHEMA_VERSION:
            return version
        upgrading = version > 0
        with self.immediate(conn):
            version = migrate_in(self, conn)
        if upgrading:  # once: an upgraded file learns to hand pruned pages back (a new one starts so)
            try:
                conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
                conn.execute("VACUUM")
            except sqlite3.DatabaseError:
                pass  # busy: the file keeps its size, and SQLite still reuses its free pages
        return version

    def upsert(self, table: str, columns: Sequence[str], key: Sequence[str]) -> str:
        return (f"INSERT OR REPLACE INTO {table} ({', '.join(columns)}) "
                f"VALUES ({', '.join('?' for _ in columns)})")

    def insert_id(self, conn: Any, sql: str, params: Any) -> int:
        return int(conn.execute(sql, params).lastrowid or 0)

    def insert_new(self, table: str, columns: Sequence[str], key: Sequence[str]) -> str:
        return f"INSERT OR IGNORE INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})"

    def execute_many(self, conn: Any, sql: str, rows: Sequence[Any]) -> None:
        conn.executemany(sql, rows)

    def reclaim(self, conn: Any) -> None:
        """Free pages go back to the file system (auto_vacuum = INCREMENTAL), :data:`VACUUM_PAGES` at a time,
        each step its own short write transaction; a file made before that mode keeps its free pages for
        reuse instead (SQLite fills them before it grows the file)."""
        try:
            for _ in range(VACUUM_STEPS):
                if not conn.execute("PRAGMA freelist_count").fetchone()[0]:
                    break
                conn.execute(f"PRAGMA incremental_vacuum({VACUUM_PAGES})").fetchall()
        except sqlite3.DatabaseError:
            pass  # a busy database keeps its free pages for reuse; nothing is lost

    def create_schema(self, conn: Any, write: Callable[[str], None]) -> None:
        # Before the first table: pruned history's pages can then be handed back (see reclaim).
        write("PRAGMA auto_vacuum = INCREMENTAL")
        super().create_schema(conn, write)

    def error(self, exc: BaseException) -> StateError:
        path, text = self.db_path, str(exc)
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


# -- PostgreSQL --------------------------------------------------------------

LOCK_TIMEOUT = 30.0  # seconds a ledger statement may wait for another session's lock

# pg_advisory_lock(int4, int4): psabill's class id, then the schema the ledger lives in.
LOCK_CLASS = 0x50534142  # "PSAB"
_LOCK_ARGS = "%s, hashtext(current_schema())"


class PostgresDialect(Dialect):
    kind = "postgresql"
    shared = True
    id_type = "INTEGER GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"

    def __init__(self, url: str) -> None:
        self.url = url
        self.where = shown(url)
        import logging  # psycopg's own warnings: kept off stderr, which cron mails

        import psycopg  # the optional [postgres] extra: only a PostgreSQL ledger needs it

        self._psycopg = psycopg
        self.errors = (psycopg.Error,)
        # A pipeline cut short by a dropped session logs "error ignored terminating ..." besides raising the
        # error psabill reports (or recovers from): without a handler Python would print it on stderr.
        quiet = logging.getLogger("psycopg")
        if not quiet.handlers:
            quiet.addHandler(logging.NullHandler())

    NOW = """to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')"""
    LATER = ("""to_char((clock_timestamp() AT TIME ZONE 'UTC') + make_interval(secs => ?), """
             """'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')""")
    FOR_UPDATE = " FOR UPDATE OF leases"

    def exists(self) -> bool:
        return True  # a server, not a file: opening it creates nothing until a run writes

    def connect(self, readonly: bool = False, name: str = "psabill") -> Any:
        extra: Dict[str, Any] = {} if "connect_timeout" in self.url else {"connect_timeout": 10}
        # No statement waits unbounded for a lock another session holds (a `runs` table locked by hand,
        # a stuck migration): it fails after LOCK_TIMEOUT with one line (exit 7). TCP keepalives notice a
        # server that went away while a long read phase leaves the connection idle.
        # A keyword replaces the URL's own ``options`` (a search_path, say): add to them, never drop them.
        try:
            given = self._psycopg.conninfo.conninfo_to_dict(self.url).get("options") or ""
        except self._psycopg.Error:
            given = ""  # an unparsable URL: connect() below says so
        extra["options"] = f"{given} -c lock_timeout={int(LOCK_TIMEOUT * 1000)}".strip()
        extra.update(keepalives=1, keepalives_idle=30, keepalives_interval=10, keepalives_count=3)
        try:
            return self._psycopg.connect(self.url, autocommit=True, application_name=name, **extra)
        except self._psycopg.Error as exc:
            raise self.error(exc) from None

    def sql(self, text: str) -> str:
        return text.replace("?", "%s")

    def dropped(self, conn: Any, exc: BaseException) -> bool:
        return bool(conn.closed or getattr(conn, "broken", False))


    def has_meta(self, conn: Any) -> bool:
        row = conn.execute("SELECT 1 FROM information_schema.tables "
                           "WHERE table_schema = current_schema() AND table_name = 'meta'").fetchone()
        return row is not None

    @contextlib.contextmanager
    def transaction(self, conn: Any, *, exclusive: bool = False) -> Iterator[None]:
        """BEGIN ... COMMIT sent in a pipeline: a transaction whose statements need no answer on the way is
        one round trip (psycopg's own transaction() costs three); a statement whose result is read waits
        for it. Any failure rolls it back."""
        if not self._psycopg.Pipeline.is_supported():  # libpq before 14: one round trip a statement
            with conn.transaction():
                if exclusive:
                    conn.execute("LOCK TABLE runs IN SHARE ROW EXCLUSIVE MODE")
                yield
            return
        try:
            with conn.pipeline():
                conn.execute("BEGIN")
                if exclusive:
                    conn.execute("LOCK TABLE runs IN SHARE ROW EXCLUSIVE MODE")
                yield
                conn.execute("COMMIT")
        except BaseException:
            idle = self._psycopg.pq.TransactionStatus.IDLE
            if not conn.closed and conn.info.transaction_status != idle:
                try:
                    conn.execute("ROLLBACK")
                except self._psycopg.Error:
                    pass  # the session is gone: the server rolled it back
            raise

    def migrate(self, conn: Any) -> int:
        """Create or upgrade the schema in one transaction (PostgreSQL DDL is transactional).

        A transaction-scoped advisory lock serializes hosts that open a fresh
        database together: the second waits, then finds the schema.
        """
        version = _read_version(self, conn)
        if version >= SCHEMA_VERSION:
            return version
        with conn.transaction():
            conn.execute(f"SELECT pg_advisory_xact_lock({_LOCK_ARGS})", (LOCK_CLASS + 1,))
            version = migrate_in(self, conn)
        return version

    def upsert(self, table: str, columns: Sequence[str], key: Sequence[str]) -> str:
        update = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c not in key)
        return (f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('%s' for _ in columns)}) "
                f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {update}")

    def insert_id(self, conn: Any, sql: str, params: Any) -> int:
        row = conn.execute(sql + " RETURNING id", params).fetchone()
        return int(row[0])

    def insert_new(self, table: str, columns: Sequence[str], key: Sequence[str]) -> str:
        return (f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('%s' for _ in columns)}) "
                f"ON CONFLICT ({', '.join(key)}) DO NOTHING")

    def execute_many(self, conn: Any, sql: str, rows: Sequence[Any]) -> None:
        with conn.cursor() as cursor:
            cursor.executemany(sql, rows)  # psycopg 3 pipelines these: one round trip, not one per row

    def reclaim(self, conn: Any) -> None:
        """PostgreSQL's autovacuum reuses the space."""

    def error(self, exc: BaseException) -> StateError:
        from psabill.text.redact import url_passwords  # an error on a PostgreSQL ledger names no password

        text = one_line(exc) or type(exc).__name__
        for password in url_passwords(self.url):
            text = text.replace(password, "***")
        if getattr(exc, "sqlstate", None) == "55P03":  # lock_not_available: our lock_timeout passed
            return StateError(f"history database {self.where}: another session has held a lock for more than "
                              f"{LOCK_TIMEOUT:g}s ({text}); nothing was changed: retry later, and if it persists, "
                              "find the session holding it (pg_locks)")
        if isinstance(exc, self._psycopg.OperationalError):
            return StateError(f"cannot reach the history database {self.where} ({text}): check [state] url "
                              "(or PSABILL_STATE_URL) and that the server is up, then retry")
        return StateError(f"history database {self.where} failed ({text}); nothing was changed by the failed "
                          "statement: retry, and if it persists, check the server")

    def mark_session(self, conn: Any, account: str) -> bool:
        """Take this config's advisory lock on ``conn`` (a lease holder's session), if it is free.

        While that session lives, a host that finds the lease knows its holder's session is alive; the
        server drops the lock with the session (psabill.ledger.lease). Raises the driver's error.
        """
        row = conn.execute("SELECT pg_try_advisory_lock(%s, hashtext(current_schema() || ':' || %s))",
                           (LOCK_CLASS, account)).fetchone()
        return bool(row[0])

    def idle_timeout(self, conn: Any) -> float:
        """The server's ``idle_session_timeout`` for this session, in seconds (0: none, or a server before 14)."""
        row = conn.execute("SELECT setting FROM pg_settings WHERE name = 'idle_session_timeout'").fetchone()
        try:
            return int(row[0]) / 1000.0 if row else 0.0
        except (TypeError, ValueError):
            return 0.0


def _use_wal(conn: sqlite3.Connection, timeout: float) -> None:
    """``PRAGMA journal_mode = WAL``, waiting out other connections switching a fresh file at that moment.

    The switch needs the file to itself, and when several processes open a
    fresh ledger together SQLite answers "database is locked" at once instead
    of through its busy timeout; so retry, for as long as that timeout.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)
