"""The run lease: one run of a config at a time, on every host that shares its ledger.

The ``leases`` table holds one row per config identity (``account``): who
holds the lease (host, pid), since when, until when it is good
(``expires_at``), the run it is for, and a **fencing token** that grows by one
at every grant. Its times are the ledger's clock: on PostgreSQL the server's,
so hosts whose clocks differ still agree on when a lease expires.

Granting. One transaction reads the row (locked) and grants the next token
when the lease is free: released, expired, or held by a process of this host
that is gone (a killed run, a reboot) whose database session is gone with it
(its advisory lock is free). Otherwise the caller polls, for up to ``[run]
lock_timeout``. A scheduled firing that finds a live lease held for its own
occurrence does not wait at all (:class:`Elsewhere`): that run is its run.
On SQLite (one host) the grant is made under the ``flock`` on the run lock in
the state dir, which the kernel drops when its holder dies, however it dies;
the row then says who holds it, and carries the token.

Holding. On PostgreSQL the holder renews the lease from a background thread,
every quarter of ``[run] lease`` (and within half of the server's
``idle_session_timeout`` when that is set, so that session never idles out),
on a connection of its own that it opens again when the server drops it
(``pg_terminate_backend``, a failover, an idle timeout): the lease is a row,
not a session, so a lost session loses nothing. Before every write batch the
run renews it once more, inside the transaction that records the batch's
intents (:meth:`psabill.ledger.history.Ledger.intend`), and the intents are
recorded only while the token is still the run's.

Losing it. A lease found taken over, or one the renewer could not renew for
half its length (the ledger unreachable), is lost: the run's watchers are
told at once (the run sets its halt: no write not yet sent is sent; those end
"not written", transient), the run records why, and a later firing within
catch-up retries what it did not write.

What that guarantees: another host is granted the lease only once it has
expired, a whole lease after its holder's last renewal, and the holder stops
sending writes half a lease after its last renewal. The writes of two hosts
never overlap as long as a write in flight ends within half a lease (the PSA
timeout is 30 s, the default lease 2 minutes) and the holder is not frozen
(SIGSTOP, a paused VM) for longer than a lease while a write is in flight: a
PSA takes no fencing token.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, List, NamedTuple, Optional, Tuple

from psabill.errors import StateError
from psabill.text.files import make_private_dir, open_private

# The ledger (psabill.ledger.history.Ledger) is handed in, never imported: history takes the lease.
Ledger = Any

DEFAULT_TTL = 120.0  # seconds; [run] lease
POLL = 0.2  # seconds between two looks at a lease another run holds
MIN_INTERVAL = 0.2  # the renewer never renews more often than this
_COLUMNS = ("account", "token", "host", "pid", "since", "expires_at")
_READ = ("SELECT leases.token, leases.host, leases.pid, leases.since, leases.expires_at, leases.run_id, "
         "runs.trigger, runs.occurrence, runs.status, {now} FROM leases LEFT JOIN runs ON runs.id = leases.run_id "
         "WHERE leases.account = ?")


class Holder(NamedTuple):
    """The lease as the ledger holds it (the holder's run's trigger and occurrence, once it started one)."""

    token: int
    host: str
    pid: int  # 0: released
    since: Optional[datetime]
    expires_at: Optional[datetime]
    run_id: Optional[int]
    trigger: Optional[str]
    occurrence: Optional[datetime]
    status: Optional[str]  # the holder's run's
    now: datetime  # the ledger's clock when the row was read
    live: bool  # held now: unexpired (PostgreSQL) or under the flock (SQLite), and not released

    @property
    def released(self) -> bool:
        return self.pid == 0

    @property
    def expired(self) -> bool:
        return self.expires_at is None or self.expires_at <= self.now

    def text(self) -> str:
        """``running on HOST since TIME (pid P, run R; lease until TIME)``."""
        run = f", run {self.run_id}" if self.run_id is not None else ""
        return (f"running on {self.host or 'an unknown host'} since {_shown(self.since)} (pid {self.pid}{run}; "
                f"lease until {_shown(self.expires_at)})")


class Elsewhere(StateError):
    """A live lease is held for the very occurrence a scheduled firing is due to run: nothing to do here."""

    def __init__(self, holder: Holder) -> None:
        super().__init__(f"occurrence {_shown(holder.occurrence)} is {holder.text()}")
        self.holder = holder


def take(ledger: Ledger, timeout: float, *, ttl: float, flock: Optional[Path],
         occurrence: Optional[datetime]) -> "Lease":
    """The lease of ``ledger``'s config, waiting at most ``timeout`` seconds (see the module docstring)."""
    grant = _Flocked(ledger, flock) if flock is not None else _Shared(ledger)
    deadline = time.monotonic() + timeout
    try:
        while True:
            lease, holder = grant.attempt(ttl)
            if lease is not None:
                return lease
            if (occurrence is not None and holder is not None and holder.live and holder.trigger == "scheduled"
                    and holder.occurrence == occurrence):
                raise Elsewhere(holder)
            if time.monotonic() >= deadline:
                shown = f" ({holder.text()})" if holder is not None and holder.live else ""
                raise StateError(f"another psabill run still holds {grant.what} after {timeout:g}s{shown}; "
                                 "nothing was run (raise [run] lock_timeout to wait longer)")
            time.sleep(POLL)
    finally:
        grant.close()


class Lease:
    """A granted lease: its token, renewal (PostgreSQL) and release. See the module docstring."""

    def __init__(self, own: Ledger, token: int, ttl: float, previous: Optional[Holder], *,
                 fd: Optional[int] = None, renew: bool = False, marked: Any = None) -> None:
        self.account = own.account
        self.token = token
        self.ttl = ttl
        self.previous = previous  # the lease this grant replaced
        self.lost: Optional[str] = None
        self.where = own.where
        self._own = own  # its own connection (PostgreSQL: the renewer's session)
        self._fd = fd  # SQLite: the flock it was granted under
        self._use = threading.Lock()  # the own connection is the renewer's and the release's, never both at once
        self._watchers: List[Callable[[str], None]] = []
        self._stop = threading.Event()
        self._marked: Any = marked  # the session holding the advisory lock that says the holder is alive
        self._thread: Optional[threading.Thread] = None
        self.interval = ttl / 4
        if renew:
            idle = own.attempt(own.dialect.idle_timeout)
            if idle:
                self.interval = min(self.interval, idle / 2)
            self.interval = max(self.interval, MIN_INTERVAL)
            self._thread = threading.Thread(target=self._renewing, name="psabill-lease", daemon=True)
            self._thread.start()

    @property
    def took_over(self) -> bool:
        """Whether this grant replaced a lease that was never released (its holder died, or expired)."""
        previous = self.previous
        return previous is not None and previous.token > 0 and not previous.released

    def watch(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(why)`` once the lease is lost (at once if it already is)."""
        self._watchers.append(callback)
        if self.lost is not None:
            callback(self.lost)

    def lose(self, why: str) -> None:
        if self.lost is None:
            self.lost = why
            for callback in list(self._watchers):
                callback(why)

    def explain(self, conn: Any) -> str:
        """Why the lease is no longer this run's, read on ``conn``."""
        holder = _read(self._own, conn, live=None)
        where = f"the run lease in {self.where}"
        if holder is None or holder.token == self.token and holder.released:
            return f"{where} was released"
        if holder.token != self.token:
            return (f"{where} was taken over: another run is {holder.text()}")
        return f"{where} expired at {_shown(holder.expires_at)}"

    def renew(self) -> Optional[bool]:
        """Renew it now: True; gone (taken over, released): False; the ledger unreachable: None."""
        dialect = self._own.dialect

        def work(conn: Any) -> bool:
            with dialect.transaction(conn):
                cursor = conn.execute(dialect.sql(
                    f"UPDATE leases SET expires_at = {dialect.LATER} WHERE account = ? AND token = ? AND pid <> 0"),
                    (self.ttl, self.account, self.token))
            renewed = cursor.rowcount == 1  # known once the transaction has ended (a pipeline)
            if renewed and self._marked is not conn:  # a new session (the last one was dropped): mark it
                self._marked = conn if dialect.mark_session(conn, self.account) else None
            return renewed

        with self._use:
            try:
                return self._own.attempt(work)  # a dropped session is opened again, and the renewal redone
            except StateError:
                self._marked = None
                return None

    def _renewing(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(self.interval):
            renewed = self.renew()
            now = time.monotonic()
            if renewed:
                last = now
                continue
            if renewed is False:
                with self._use:
                    try:
                        why = self._own.attempt(self.explain)
                    except StateError:
                        why = f"the run lease in {self.where} is no longer this run's"
                self.lose(why)
                return
            if now - last >= self.ttl / 2:
                self.lose(f"the run lease in {self.where} could not be renewed for {now - last:.0f}s (the ledger "
                          f"is unreachable): the run stopped writing before another host could take it over")
                return

    def release(self) -> None:
        """Give the lease back (never raises: an unreleased lease expires by itself)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        dialect = self._own.dialect

        def work(conn: Any) -> None:
            with dialect.transaction(conn):
                conn.execute(dialect.sql(f"UPDATE leases SET pid = 0, expires_at = {dialect.NOW}, run_id = NULL "
                                         "WHERE account = ? AND token = ?"), (self.account, self.token))

        with self._use:
            try:
                self._own.attempt(work)
            except StateError:
                pass  # the ledger is away: the lease expires a lease after its last renewal
            finally:
                self._own.close()  # ends the session, and its advisory lock with it
                if self._fd is not None:
                    os.close(self._fd)  # the flock goes last: the next holder finds the row released
                    self._fd = None


# -- granting -------------------------------------------------------------------------------------


class _Shared:
    """A PostgreSQL ledger: the row is the lock."""

    def __init__(self, ledger: Ledger) -> None:
        self.own = type(ledger)(ledger.dialect, ledger.account, name="psabill-lease")
        self.what = f"the run lease in {ledger.where}"
        self.granted = False

    def attempt(self, ttl: float) -> Tuple[Optional[Lease], Optional[Holder]]:
        dialect = self.own.dialect
        host, pid, account = hostname(), os.getpid(), self.own.account

        def work(conn: Any) -> Tuple[Optional[int], Holder, Any]:
            with dialect.transaction(conn):
                holder = _lock_row(self.own, conn)
                assert holder is not None
                marked = False
                free = holder.released or holder.expired
                if not free and holder.host == host and not _alive(holder.pid):
                    free = marked = dialect.mark_session(conn, account)  # its session is gone too: it died
                if not free:
                    return None, holder, None
                marked = marked or dialect.mark_session(conn, account)  # best effort: a lost session may hold it
                token = holder.token + 1
                conn.execute(dialect.sql(
                    f"UPDATE leases SET token = ?, host = ?, pid = ?, since = {dialect.NOW}, "
                    f"expires_at = {dialect.LATER}, run_id = NULL WHERE account = ?"), (token, host, pid, ttl, account))
                return token, holder, conn if marked else None

        token, holder, marked = self.own.attempt(work)
        if token is None:
            return None, holder
        self.granted = True
        return Lease(self.own, token, ttl, holder, renew=True, marked=marked), holder

    def close(self) -> None:
        if not self.granted:
            self.own.close()


class _Flocked:
    """A SQLite ledger in the state dir: the lease is granted under the flock on the run lock file."""

    def __init__(self, ledger: Ledger, path: Path) -> None:
        self.ledger = ledger
        self.path = path
        self.what = str(path)
        self.fd: Optional[int] = None

    def attempt(self, ttl: float) -> Tuple[Optional[Lease], Optional[Holder]]:
        if self.fd is None:
            make_private_dir(self.path.parent, StateError, "state dir", tighten=True)
            self.fd = open_private(self.path, os.O_RDWR | os.O_CREAT, StateError, "the run lock")
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # held: by a live process, whatever the row says
            return None, self.ledger.peek(lambda conn: _read(self.ledger, conn, live=True))
        own = type(self.ledger)(self.ledger.dialect, self.ledger.account)
        dialect = own.dialect
        host, pid, account = hostname(), os.getpid(), own.account

        def work(conn: Any) -> Tuple[int, Holder]:
            with dialect.transaction(conn):
                holder = _lock_row(own, conn)
                assert holder is not None
                conn.execute(dialect.sql(
                    f"UPDATE leases SET token = ?, host = ?, pid = ?, since = {dialect.NOW}, "
                    f"expires_at = {dialect.LATER}, run_id = NULL WHERE account = ?"),
                    (holder.token + 1, host, pid, ttl, account))
                return holder.token + 1, holder

        try:
            token, previous = own.attempt(work)
        except BaseException:
            own.close()
            raise  # the fd (and the flock) is closed by close()
        fd, self.fd = self.fd, None
        return Lease(own, token, ttl, previous, fd=fd), previous

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _lock_row(ledger: Ledger, conn: Any) -> Optional[Holder]:
    """Inside a write transaction: this config's lease row (made, released, if there is none), locked."""
    dialect = ledger.dialect
    conn.execute(dialect.sql(dialect.insert_new("leases", _COLUMNS, ("account",))),
                 (ledger.account, 0, "", 0, "", ""))
    return _read(ledger, conn, live=None, lock=True)


def _read(ledger: Ledger, conn: Any, *, live: Optional[bool], lock: bool = False) -> Optional[Holder]:
    dialect = ledger.dialect
    row = conn.execute(dialect.sql(_READ.format(now=dialect.NOW) + (dialect.FOR_UPDATE if lock else "")),
                       (ledger.account,)).fetchone()
    if row is None:
        return None
    token, host, pid, since, expires, run_id, trigger, occurrence, status, now = row
    holder = Holder(int(token), host or "", int(pid or 0), _parse(since), _parse(expires),
                    int(run_id) if run_id is not None else None, trigger, _parse(occurrence), status,
                    _parse(now) or datetime.now(timezone.utc), False)
    held = not holder.released and (not holder.expired if live is None else live)
    return holder._replace(live=held)


def hostname() -> str:
    import socket  # as psabill.ledger.history.hostname: the host a run records

    return socket.gethostname()


def _alive(pid: int) -> bool:
    """Whether process ``pid`` of this host still runs (this process is not "another holder")."""
    if pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # another user's process: alive
    return True


def _parse(value: Any) -> Optional[datetime]:
    if isinstance(value, datetime):
        return value
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None


def _shown(value: Optional[datetime]) -> str:
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") if value is not None else "an unknown time"
