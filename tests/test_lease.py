"""The run lease (issue 26, points 1 and 3): a fencing token in the ledger, kept across lost sessions.

Against a real PostgreSQL on a Unix socket (and SQLite where the rule applies to it too). "Another host"
is a psabill process whose ``socket.gethostname()`` answers another name: the lease, the runs and the
log all take the host from there, so to the ledger it is another machine.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pytest

from psabill.ledger.history import LeaseLost
from psabill.outcomes import INTERRUPTED, SUCCESS, UPDATED
from psabill.report import Item, Run
from psabill.sandbox.connectwise import Sandbox
from support.book import Book
from support.env import Env, edit_config
from support.ledger import store_for

UTC = timezone.utc
OCC = datetime(2026, 12, 1, 14, tzinfo=UTC)  # Book.schedule(): Tuesdays 09:00 New York
NOW = "2026-12-01T14:00:30Z"
TESTS = Path(__file__).parent
AS_HOST = textwrap.dedent("""
    import socket, sys
    socket.gethostname = lambda: sys.argv[1]
    from psabill.cli import cli
    cli.main(sys.argv[2:], prog_name="psabill")
""")




def on_host(name: str, env: Env, *args: str, url: Optional[str] = None, now: str = NOW) -> "subprocess.Popen[str]":
    """``psabill ARGS`` as host ``name`` runs it: the env's config, the host's own state dir."""
    environ = {**os.environ, "PSABILL_NOW": now, "PSABILL_STATE_DIR": str(env.tmp / name / "state")}
    if url:
        environ["PSABILL_STATE_URL"] = url
    return subprocess.Popen([sys.executable, "-c", AS_HOST, name, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=environ)


def runs_of(env: Env, url: Optional[str], state: Optional[Path] = None) -> List[Dict[str, Any]]:
    extra = {"PSABILL_STATE_URL": url} if url else {}
    if state is not None:
        extra["PSABILL_STATE_DIR"] = str(state)
    result = env.run("history", "--days", "100000", "--json", env=extra)
    return json.loads(result.output)


def terminate(url: str) -> List[str]:
    """pg_terminate_backend every psabill session (the run's ledger and its lease): their names."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as admin:
        rows = admin.execute("SELECT application_name FROM pg_stat_activity WHERE application_name LIKE 'psabill%%' "
                             "AND pid <> pg_backend_pid() AND pg_terminate_backend(pid)").fetchall()
    return sorted(r[0] for r in rows)


def book_for(env: Env, sandbox: Sandbox, customers: int) -> Tuple[Book, Dict[str, int]]:
    """A scheduled config (one identity on every host) for a book whose every line changes."""
    book = Book(env, sandbox, customers=customers, guard={"enabled": False})
    book.schedule()
    edit_config(env, account={"id": "msp-connectwise"}, psa={"concurrency": 1})
    target = {c: 30 + n for n, c in enumerate(book.lines, start=1)}
    book.source(target)
    return book, target


# -- the fence -------------------------------------------------------------------------------------


def test_intents_are_recorded_only_while_the_lease_is_still_the_runs(tmp_path: Path,
                                                                      ledger_url: Optional[str]) -> None:
    """The fencing token: a batch's intents go in with the lease renewed and checked in one transaction."""
    store = store_for(tmp_path / "state", ledger_url)
    with store.lock(1) as lease, store.ledger as ledger:
        run = Run(trigger="manual", started_at=OCC)
        ledger.start_run(run)
        assert run.id is not None
        run.items = [Item(f"C{n}", "LastPass", seq=n, old=1, new=2, line=str(n), agreement="9") for n in (1, 2, 3)]
        ledger.store_plan(run, OCC)
        ledger.intend(run.id, [1], OCC)
        # Another run was granted the lease behind this one's back (it found it expired).
        ledger._execute("UPDATE leases SET token = token + 1, host = 'host-b', pid = 77 WHERE account = ?",
                        (ledger.account,))
        first = run.items[0]
        first.outcome = UPDATED
        with pytest.raises(LeaseLost) as caught:
            ledger.intend(run.id, [2, 3], OCC, settled=[first])
        assert "was taken over: another run is running on host-b since " in caught.value.message
        assert lease.lost == caught.value.message
        rows = ledger._query("SELECT seq, outcome, intent_at IS NOT NULL FROM items WHERE run_id = ? ORDER BY seq",
                             (run.id,))
    # Seq 1's intent (before the takeover) and its outcome are recorded; 2 and 3 were never intended.
    assert [tuple(r) for r in rows] == [(1, UPDATED, True), (2, "planned", False), (3, "planned", False)]


def test_a_lease_too_short_is_refused_with_one_line(env: Env) -> None:
    env.run("schedule", "set", "--daily", "--hour", "6", "--timezone", "UTC", now="2026-11-26T12:00:00Z")
    edit_config(env, run={"lease": "1s"})
    result = env.run("status")
    assert result.exit_code == 3
    assert result.output.strip() == f"Error: {env.config}: run.lease = '1s': must be from 2s to 1d"


# -- a live lease elsewhere, and an expired one ---------------------------------------------------------

HOLD = textwrap.dedent("""
    import socket, sys, time
    socket.gethostname = lambda: "host-a"
    sys.path.insert(0, {tests!r})
    from datetime import datetime, timezone
    from pathlib import Path
    from support.ledger import store_for
    from psabill.report import Run
    store = store_for(Path({state!r}), {url!r}, Path({config!r}))
    occ = datetime(2026, 12, 1, 14, tzinfo=timezone.utc)
    with store.lock(5, ttl=3) as lease, store.ledger as ledger:
        ledger.start_run(Run(trigger="scheduled", started_at=occ, occurrence=occ))
        print("holding", lease.token, flush=True)
        time.sleep(120)
""")


def test_a_live_lease_for_the_occurrence_makes_another_firing_exit_0_at_once_and_an_expired_one_is_taken_over(
        env: Env, ledger_url: Optional[str]) -> None:
    """Issue 26, point 3. Host A holds the lease for the occurrence (with a run for it) and is then killed:

    * while its lease is live, a firing of that occurrence exits 0 at once (not after [run] lock_timeout),
      and under -v says "running on host-a since ...";
    * once it has expired unfinished (PostgreSQL: three seconds; SQLite: at once, the flock died with the
      process), the next firing takes the lease over, marks A's run interrupted and finishes the occurrence.
    """
    with Sandbox() as sandbox:
        book, target = book_for(env, sandbox, customers=3)
        # SQLite is one host's: the holder shares this host's state dir. PostgreSQL: its own.
        state = env.state_dir if ledger_url is None else env.tmp / "host-a" / "state"
        holder = subprocess.Popen([sys.executable, "-c", HOLD.format(tests=str(TESTS), state=str(state),
                                                                     url=ledger_url, config=str(env.config))],
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout is not None and holder.stdout.readline().startswith("holding")
            started = time.monotonic()
            busy = env.run("-v", "run", "--scheduled", now=NOW)
            took = time.monotonic() - started
            assert busy.exit_code == 0, busy.output
            assert took < 5, took  # [run] lock_timeout is 10 minutes: it did not wait
            assert "occurrence 2026-12-01 14:00:00 UTC is running on host-a since " in busy.output
            assert "this firing leaves it to that run" in busy.output
            assert [(r["status"], r["host"]) for r in runs_of(env, ledger_url)] == [("running", "host-a")]
            assert book.writes() == 0
        finally:
            holder.send_signal(signal.SIGKILL)
            holder.wait()
        if ledger_url is not None:
            # On another host, a dead holder is not known dead: its lease holds until it expires.
            early = env.run("run", "--scheduled", now=NOW)
            assert early.exit_code == 0 and book.writes() == 0
            time.sleep(3.5)
        taken = env.run("run", "--scheduled", now="2026-12-01T14:01:00Z")
        assert taken.exit_code == 0, taken.output
        assert "took over the run lease: it was running on host-a since " in (env.state_dir / "psabill.log").read_text()
    history = runs_of(env, ledger_url)
    assert [(r["status"], r["host"], r["occurrence"]) for r in history] == [
        (SUCCESS, socket.gethostname(), OCC.isoformat()), (INTERRUPTED, "host-a", OCC.isoformat())]
    assert history[0]["counts"]["updated"] == len(target)
    assert book.quantities() == {c: float(n) for c, n in target.items()}


# -- a lost session, a short idle timeout, a second host meanwhile ------------------------------------------


def test_a_lease_whose_sessions_are_terminated_mid_run_is_kept_and_no_second_host_runs_while_it_writes(
        env: Env, pg_url: str) -> None:
    """Issue 26, point 1: pg_terminate_backend of the lease's session (and the ledger's) while host A
    writes; host B fires meanwhile, twice. A's lease is a row, not a session: A reconnects and keeps it,
    B exits 0 at once each time, and every line is written once, by A's one run."""
    with Sandbox(latency_ms=40) as sandbox:
        book, target = book_for(env, sandbox, customers=60)
        events: "queue.Queue[int]" = queue.Queue()

        thresholds = [3, 30]

        def hook(method: str, endpoint: str) -> None:
            if method == "PATCH" and thresholds and len(sandbox.patches()) >= thresholds[0]:
                events.put(thresholds.pop(0))

        sandbox.after = hook
        first = on_host("host-a", env, "run", "--scheduled", url=pg_url)
        killed: List[List[str]] = []
        seconds: List[Tuple[int, float, int, str]] = []
        while first.poll() is None:
            try:
                events.get(timeout=0.2)
            except queue.Empty:
                continue
            killed.append(terminate(pg_url))
            started = time.monotonic()
            second = on_host("host-b", env, "-v", "run", "--scheduled", url=pg_url)
            _, err = second.communicate(timeout=60)
            seconds.append((second.returncode, time.monotonic() - started, len(sandbox.patches()), err))
        _, err_a = first.communicate(timeout=120)
        sandbox.after = None
    assert first.returncode == 0 and err_a == "", err_a
    # The first cut took the lease's session and the ledger's; the lease's opens again at its next renewal.
    assert len(killed) == 2 and killed[0] == ["psabill", "psabill-lease"] and "psabill" in killed[1], killed
    assert len(seconds) == 2
    for code, took, patches, err in seconds:
        assert code == 0 and took < 10, (code, took, err)
        assert patches < len(target)  # B had finished while A was still writing
        assert "is running on host-a since " in err and "this firing leaves it to that run" in err
    history = runs_of(env, pg_url)
    assert [(r["status"], r["host"], r["counts"]["updated"]) for r in history] == [(SUCCESS, "host-a", len(target))]
    assert len(sandbox.patches()) == len(target)
    assert book.quantities() == {c: float(n) for c, n in target.items()}


def test_a_short_idle_session_timeout_during_a_long_read_phase_neither_fails_the_run_nor_frees_the_lease(
        env: Env, pg_url: str) -> None:
    """Issue 26, point 1: idle_session_timeout = 1s (set for psabill's sessions) while host A reads the PSA
    for several seconds. The server ends A's idle ledger session (pg_stat_database.sessions_fatal counts
    it); A opens it again and finishes. The lease, renewed within half the timeout, stays live: host B,
    firing in the middle of the read phase, exits 0 at once."""
    import psycopg

    url = pg_url.replace("options=", "options=-cidle_session_timeout%3D1000%20")  # psabill's sessions only

    def fatal() -> int:
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute("SELECT pg_stat_force_next_flush()")
            return int(admin.execute("SELECT sessions_fatal FROM pg_stat_database "
                                     "WHERE datname = current_database()").fetchone()[0])

    with psycopg.connect(url, autocommit=True) as probe:
        assert probe.execute("SHOW idle_session_timeout").fetchone()[0] == "1s"
    with Sandbox(latency_ms=60) as sandbox:
        book, target = book_for(env, sandbox, customers=50)
        reads: "queue.Queue[int]" = queue.Queue()
        count = [0]

        def hook(method: str, endpoint: str) -> None:
            if method == "GET" and "additions" in endpoint:
                count[0] += 1
                if count[0] == 25:
                    reads.put(count[0])

        sandbox.before = hook
        before = fatal()
        first = on_host("host-a", env, "run", "--scheduled", url=url)
        second_result: Optional[Tuple[int, float, str, int]] = None
        while first.poll() is None:
            try:
                reads.get(timeout=0.2)
            except queue.Empty:
                continue
            started = time.monotonic()
            second = on_host("host-b", env, "-v", "run", "--scheduled", url=url)
            _, err = second.communicate(timeout=60)
            second_result = (second.returncode, time.monotonic() - started, err, len(sandbox.patches()))
        _, err_a = first.communicate(timeout=180)
        sandbox.before = None
        time.sleep(0.5)
        after = fatal()
    assert first.returncode == 0 and err_a == "", err_a
    assert after - before >= 1, "no session ended on the idle timeout: the read phase did not outlast it"
    assert second_result is not None
    code, took, err, patches = second_result
    assert code == 0 and took < 10 and patches == 0, (code, took, err)  # during the read phase
    assert "is running on host-a since " in err
    history = runs_of(env, pg_url)
    assert [(r["status"], r["host"], r["counts"]["updated"]) for r in history] == [(SUCCESS, "host-a", len(target))]
    assert len(sandbox.patches()) == len(target)


def test_a_run_that_loses_its_lease_stops_writing_at_once_records_why_and_the_retry_finishes_the_rest(
        env: Env, pg_url: str) -> None:
    """Issue 26, point 1: the lease is taken from host A mid-run (as a host that found it expired would).
    A's next batch finds the token gone: A sends nothing more, records why on the run and on each line
    it did not write, and leaves the occurrence to retry; the hourly retry firing writes the rest, and
    every line is written exactly once."""
    import psycopg

    with Sandbox(latency_ms=30) as sandbox:
        book, target = book_for(env, sandbox, customers=40)
        edit_config(env, run={"lease": "2s"})
        taken: List[int] = []

        def hook(method: str, endpoint: str) -> None:
            if method == "PATCH" and not taken and len(sandbox.patches()) >= 10:
                with psycopg.connect(pg_url, autocommit=True) as admin:
                    admin.execute("UPDATE leases SET token = token + 1, host = 'host-b', pid = 4242, "
                                  "expires_at = '2999-01-01T00:00:00.000000+00:00'")
                taken.append(len(sandbox.patches()))

        sandbox.after = hook
        first = on_host("host-a", env, "run", "--scheduled", url=pg_url)
        _, err = first.communicate(timeout=120)
        sandbox.after = None
        written = len(sandbox.patches())
        assert taken and 10 <= written <= taken[0] + 4, (taken, written)  # at most the batch then in flight
        assert first.returncode == 1, err
        [run] = runs_of(env, pg_url)
        assert run["status"] == "partial" and run["message"].startswith(
            "the run lost its lease (the run lease in postgresql://")
        assert "was taken over: another run is running on host-b since " in run["message"]
        full = json.loads(env.run("history", "show", str(run["id"]), "--json",
                                  env={"PSABILL_STATE_URL": pg_url}).output)
        left = [i for i in full["items"] if i["outcome"] != UPDATED]
        assert len(left) == len(target) - written
        assert all(i["message"].startswith("not written: the run lost its lease (") for i in left), {i["message"] for i in left}
        status = json.loads(env.run("status", "--json", now="2026-12-01T14:10:00Z",
                                    env={"PSABILL_STATE_URL": pg_url}).output)
        assert status["retrying"]["occurrence"] == OCC.isoformat()
        with psycopg.connect(pg_url, autocommit=True) as admin:  # host B finished and released it
            admin.execute("UPDATE leases SET pid = 0")
        retry = on_host("host-a", env, "run", "--scheduled", url=pg_url, now="2026-12-01T15:00:00Z")
        _, err = retry.communicate(timeout=120)
        assert retry.returncode == 0, err
    assert len(sandbox.patches()) == len(target)  # each line once, over both runs
    assert book.quantities() == {c: float(n) for c, n in target.items()}
    assert [r["status"] for r in runs_of(env, pg_url)] == [SUCCESS, "partial"]
