"""Nothing is lost, nothing is counted twice (issue 20): intents, kill -9, retries, unknowns, a second writer.

Each write is an intent row before it is sent and an outcome row after; the
next run reads back every intent that has no outcome. These tests kill
psabill with SIGKILL at random points of ConnectWise and Autotask runs and
check, after the next run, that every PSA line ends at its seats and that the
history accounts for every change exactly once. Then: a failed or partial
occurrence is retried hourly within catch-up, for the items that did not
finish; an unknown quantity is never a number; two installs on one host never
double-count Autotask.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest
import tomli_w

from psabill.errors import ExitCode
from psabill.sandbox.autotask import AutotaskStandin
from psabill.sandbox.connectwise import Sandbox
from support.book import Book
from support.env import Env, edit_config, write_old

PSABILL = [sys.executable, "-m", "psabill"]
TODAY = date(2026, 12, 1)
NOW = "2026-12-01T15:00:00Z"
KILL_POINTS = 20


def spawn(*args: str, env: Optional[Dict[str, str]] = None) -> "subprocess.Popen[str]":
    return subprocess.Popen([*PSABILL, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PSABILL_NOW": NOW, **(env or {})})


def updated_per_line(state_dir: Path) -> Counter:
    """How often each (customer, sku) appears as updated across every run of the ledger."""
    with sqlite3.connect(str(state_dir / "state.db")) as db:
        rows = db.execute("SELECT customer, sku FROM items WHERE outcome = 'updated'").fetchall()
    return Counter(rows)


class KillAt:
    """Kill the child psabill with SIGKILL at the n-th write request: before it is handled, or after
    the PSA applied it but before its answer leaves."""

    def __init__(self, server: Any, method: str, label: str, n: int, when: str) -> None:
        self.pid: Optional[int] = None
        self.seen = 0
        self.lock = threading.Lock()
        self.n, self.method, self.label = n, method, label

        def hook(m: str, endpoint: str) -> None:
            if m != self.method or self.label not in endpoint:
                return
            with self.lock:
                self.seen += 1
                fire = self.seen == self.n and self.pid is not None
            if fire:
                os.kill(self.pid, signal.SIGKILL)  # type: ignore[arg-type]

        setattr(server, "before" if when == "before" else "after", hook)


def _points(writes: int, seed: int) -> List[Tuple[int, str]]:
    rng = random.Random(seed)
    return sorted({(rng.randint(1, writes), rng.choice(("before", "after"))) for _ in range(KILL_POINTS * 3)})[
        :KILL_POINTS] if writes * 2 >= KILL_POINTS else []


def _kill_run(env: Env, server: Any, method: str, label: str, point: Tuple[int, str]) -> None:
    killer = KillAt(server, method, label, *point)
    child = spawn("run", "--yes")
    killer.pid = child.pid
    child.communicate(timeout=120)
    server.before = server.after = None
    assert child.returncode in (-signal.SIGKILL, 0, 1), child.returncode  # killed, or it finished first


CW_CUSTOMERS = 12


@pytest.mark.parametrize("point", _points(CW_CUSTOMERS, seed=20), ids=lambda p: f"{p[1]}-patch-{p[0]}")
def test_after_a_kill_9_mid_connectwise_run_the_next_run_reconciles_and_every_change_is_in_history_once(
        env: Env, point: Tuple[int, str]) -> None:
    with Sandbox() as sandbox:
        book = Book(env, sandbox, customers=CW_CUSTOMERS, seats=25, guard={"enabled": False})
        target = {c: 25 + n for n, c in enumerate(book.lines, start=1)}
        book.source(target)
        _kill_run(env, sandbox, "PATCH", "additions", point)
        again = spawn("run", "--yes")
        out, err = again.communicate(timeout=120)
        assert again.returncode == 0, err
        assert book.quantities() == {c: float(n) for c, n in target.items()}
    counts = updated_per_line(env.state_dir)
    assert set(counts) == {(c, "LastPass") for c in target} and set(counts.values()) == {1}, counts


AT_CUSTOMERS = 12


def _autotask_book(env: Env, at: AutotaskStandin, customers: int, units: int,
                   extra: Optional[Dict[str, Any]] = None) -> Dict[str, int]:
    csids = {}
    for n in range(1, customers + 1):
        contract = at.add_contract(at.add_company(f"Customer {n}", f"C{n:04d}"))
        csids[f"C{n:04d}"] = at.add_service(contract, 501, units)
    env.config.parent.mkdir(parents=True, exist_ok=True)
    key = env.config.parent / "at-secret"
    key.write_text(at.secret + "\n")
    os.chmod(key, 0o600)
    data = {
        "account": {"name": "Example MSP", "timezone": "UTC"},
        "notify": {"transport": "file", "file": {"dir": str(env.tmp / "outbox")}, "from": "psabill@msp.example"},
        "source": {"kind": "csv", "path": "usage.csv"},
        "products": {"LastPass": 501},
        "psa": {"kind": "autotask", "url": at.url + "/ATServicesRest/", "username": at.username,
                "integration_code": at.integration_code, "secret_file": "at-secret", "max_retries": 0},
        "guard": {"enabled": False},
        **(extra or {}),
    }
    env.config.write_text(tomli_w.dumps(data))
    os.chmod(env.config, 0o600)
    return csids


def _usage(env: Env, seats: Dict[str, int]) -> None:
    write_old(env.config.parent / "usage.csv",
              "customer,sku,seats\n" + "".join(f"{c},LastPass,{n}\n" for c, n in seats.items()))


@pytest.mark.parametrize("point", _points(AT_CUSTOMERS, seed=21), ids=lambda p: f"{p[1]}-post-{p[0]}")
def test_after_a_kill_9_mid_autotask_run_the_next_run_reconciles_and_never_double_counts(
        env: Env, point: Tuple[int, str]) -> None:
    with AutotaskStandin(today=TODAY) as at:
        csids = _autotask_book(env, at, AT_CUSTOMERS, 10)
        target = {c: 10 + n for n, c in enumerate(csids, start=1)}
        _usage(env, target)
        _kill_run(env, at, "POST", "ContractServiceAdjustments", point)
        again = spawn("run", "--yes")
        out, err = again.communicate(timeout=120)
        assert again.returncode == 0, err
        assert {c: at.units(csid, TODAY) for c, csid in csids.items()} == target  # no delta applied twice
    counts = updated_per_line(env.state_dir)
    assert set(counts) == {(c, "LastPass") for c in target} and set(counts.values()) == {1}, counts


def test_a_write_whose_answer_never_came_is_read_back_and_never_assumed(env: Env) -> None:
    with Sandbox() as sandbox:
        book = Book(env, sandbox, customers=3, guard={"enabled": False})
        edit_config(env, psa={"timeout": 0.3})
        book.source({"CUST0001": 30, "CUST0002": 25, "CUST0003": 25})
        sandbox.delay(2.0, late=True, method="PATCH")  # the write lands; its answer is lost
        code, run, _ = book.run("--yes")
        item = next(i for i in run["items"] if i["customer"] == "CUST0001")
        assert item["outcome"] == "updated" and "read back" in item["message"]
        assert book.quantity("CUST0001") == 30 and code == 0


# -- retries within catch-up -------------------------------------------------------------




def _scheduled(env: Env, now: str) -> Any:
    return env.run("run", "--scheduled", now=now)


class TestRetry:
    def test_transient_503s_on_writes_are_retried_at_the_next_hourly_firing_for_the_items_that_did_not_finish(
            self, env: Env) -> None:
        with Sandbox() as sandbox:
            book = Book(env, sandbox, customers=6, guard={"enabled": False})
            book.schedule()
            book.source({c: 30 for c in book.lines})
            sandbox.fail(503, times=3, method="PATCH")
            first = _scheduled(env, "2026-12-01T14:00:30Z")
            assert first.exit_code == ExitCode.PARTIAL
            assert sorted(book.quantities().values()) == [25.0] * 3 + [30.0] * 3
            status = json.loads(env.run("status", "--json", now="2026-12-01T14:30:00Z").output)
            assert status["retrying"]["items"] == 3 and status["retrying"]["next_attempt"]["utc"] == \
                "2026-12-01T15:00:00+00:00"
            text = env.run("status", now="2026-12-01T14:30:00Z").output
            assert "retrying: 3 item(s), next attempt at" in text
            second = _scheduled(env, "2026-12-01T15:00:30Z")
            assert second.exit_code == 0, second.output
            assert set(book.quantities().values()) == {30.0}
            third = _scheduled(env, "2026-12-01T16:00:30Z")
            assert third.exit_code == 0 and third.output == ""  # done: the occurrence counts once
        runs = json.loads(env.run("history", "--json").output)
        assert [(r["occurrence"], r["attempt"]) for r in runs] == [("2026-12-01T14:00:00+00:00", 2),
                                                                    ("2026-12-01T14:00:00+00:00", 1)]
        assert updated_per_line(env.state_dir).most_common(1)[0][1] == 1

    def test_a_key_file_unreadable_for_a_moment_is_retried_at_the_next_firing(self, env: Env) -> None:
        with Sandbox() as sandbox:
            book = Book(env, sandbox, customers=2, guard={"enabled": False})
            book.schedule()
            book.source({c: 30 for c in book.lines})
            key = env.config.parent / "cw-key"
            saved = key.read_bytes()
            key.unlink()  # being replaced by the admin's secret tooling
            first = _scheduled(env, "2026-12-01T14:00:30Z")
            assert first.exit_code == ExitCode.ABORTED and "cw-key" in first.output
            key.write_bytes(saved)
            os.chmod(key, 0o600)
            assert _scheduled(env, "2026-12-01T15:00:30Z").exit_code == 0
            assert set(book.quantities().values()) == {30.0}

    def test_mapping_failures_are_not_retried(self, env: Env) -> None:
        with Sandbox() as sandbox:
            book = Book(env, sandbox, customers=2, guard={"enabled": False})
            twice = sandbox.add_company("TWICE", "Twice Ltd")
            for name in ("A", "B"):
                sandbox.add_addition(sandbox.add_agreement(twice, name), "SEATS-STD", 3)
            book.schedule()
            book.source({"CUST0001": 30, "CUST0002": 25, "TWICE": 4})
            first = _scheduled(env, "2026-12-01T14:00:30Z")
            assert first.exit_code == ExitCode.PARTIAL
            retry = _scheduled(env, "2026-12-01T15:00:30Z")
            assert retry.exit_code == 0 and retry.output == ""  # nothing to retry: the failure needs a human
        runs = json.loads(env.run("history", "--json").output)
        assert len(runs) == 1

    def test_an_autotask_allowance_with_room_only_for_the_reads_is_continued_by_the_next_firing(
            self, env: Env) -> None:
        with AutotaskStandin(today=TODAY, threshold=10_000, used_this_hour=4_990) as at:
            csids = _autotask_book(env, at, 4, 10)
            assert env.run("schedule", "set", "--daily", "--hour", "9", "--timezone", "UTC", "--no-cron",
                           now="2026-11-20T00:00:00Z").exit_code == 0
            _usage(env, {c: 20 for c in csids})
            first = _scheduled(env, "2026-12-01T09:00:30Z")
            assert first.exit_code == ExitCode.PARTIAL
            assert "hourly allowance" in first.output and "continues" in first.output
            assert all(at.units(csid, TODAY) == 10 for csid in csids.values())
            at.used_this_hour = -at.total  # an hour later, the allowance is back
            second = _scheduled(env, "2026-12-01T10:00:30Z")
            assert second.exit_code == 0, second.output
            assert all(at.units(csid, TODAY) == 20 for csid in csids.values())

    def test_an_autotask_run_stopped_by_its_budget_continues_on_the_next_firing_until_every_item_is_done(
            self, env: Env) -> None:
        with AutotaskStandin(today=TODAY, threshold=10_000, used_this_hour=4_970) as at:
            csids = _autotask_book(env, at, 40, 10)
            assert env.run("schedule", "set", "--daily", "--hour", "9", "--timezone", "UTC", "--no-cron",
                           now="2026-11-20T00:00:00Z").exit_code == 0
            _usage(env, {c: 20 for c in csids})
            done_by_firing = []
            for hour in range(9, 16):
                result = _scheduled(env, f"2026-12-01T{hour:02d}:00:30Z")
                done_by_firing.append(sum(at.units(csid, TODAY) == 20 for csid in csids.values()))
                at.used_this_hour = 4_970 - at.total  # each hour the other integrations use as much again
                if done_by_firing[-1] == len(csids):
                    assert result.exit_code == 0
                    break
            assert done_by_firing[-1] == len(csids) and len(done_by_firing) > 1, done_by_firing
            assert done_by_firing == sorted(done_by_firing)


# -- unknowns and a second writer -----------------------------------------------------------------


def test_autotask_units_answered_as_null_fail_the_item_and_nothing_is_written_to_it(env: Env) -> None:
    with AutotaskStandin(today=TODAY) as at:
        csids = _autotask_book(env, at, 2, 10)
        for row in at.tables["ContractServiceUnits"].values():
            if row["contractServiceID"] == csids["C0001"]:
                row["units"] = None
        _usage(env, {"C0001": 12, "C0002": 12})
        code, out = _run_json(env)
        items = {i["customer"]: i for i in out["items"]}
        assert items["C0001"]["outcome"] == "failed" and "null" in items["C0001"]["message"]
        assert items["C0002"]["outcome"] == "updated" and code == ExitCode.PARTIAL
        assert [a["contractServiceID"] for a in at.adjustments] == [csids["C0002"]]


def _run_json(env: Env, *args: str) -> Tuple[int, Dict[str, Any]]:
    result = env.run("run", "--yes", "--json", *args)
    out = result.output
    return result.exit_code, json.loads(out[out.index("{"):out.rindex("}") + 1])


def test_two_installs_on_one_host_with_different_state_dirs_never_double_count_one_autotask_tenant(
        env: Env, tmp_path: Path) -> None:
    with AutotaskStandin(today=TODAY, latency_ms=20) as at:
        csids = _autotask_book(env, at, 10, 10)
        _usage(env, {c: 25 for c in csids})
        other = tmp_path / "second"
        other.mkdir()
        for name in ("config.toml", "usage.csv", "at-secret"):
            (other / name).write_bytes((env.config.parent / name).read_bytes())
            os.chmod(other / name, 0o600)
        os.utime(other / "usage.csv", (1_000_000_000, 1_000_000_000))
        first = spawn("run", "--yes")
        second = spawn("--config", str(other / "config.toml"), "--state-dir", str(other / "state"), "run", "--yes")
        for child in (first, second):
            child.communicate(timeout=120)
            assert child.returncode == 0
        assert {c: at.units(csid, TODAY) for c, csid in csids.items()} == {c: 25 for c in csids}
        assert len(at.adjustments) == len(csids)  # one writer planned and wrote; the other found them at 25


def _meddle(at: AutotaskStandin, csid: int, by: int) -> Callable[[str, str], None]:
    """Another writer adds ``by`` units while psabill's adjustment is on the wire."""
    done: List[int] = []

    def hook(method: str, endpoint: str) -> None:
        if method == "POST" and endpoint == "ContractServiceAdjustments" and not done:
            done.append(1)
            for row in at.tables["ContractServiceUnits"].values():
                if row["contractServiceID"] == csid:
                    row["units"] += by

    return hook


def test_a_service_another_writer_moved_by_an_amount_our_writes_do_not_explain_is_held_and_approve_sets_it(
        env: Env) -> None:
    with AutotaskStandin(today=TODAY) as at:
        csids = _autotask_book(env, at, 2, 10)
        _usage(env, {"C0001": 25, "C0002": 10})
        at.after = _meddle(at, csids["C0001"], 7)  # someone adds 7 by hand while psabill posts +15
        code, run = _run_json(env)
        item = next(i for i in run["items"] if i["customer"] == "C0001")
        assert code == ExitCode.HELD and item["outcome"] == "held" and item["rule"] == "another_writer", item
        assert "another writer" in item["message"] and at.units(csids["C0001"], TODAY) == 32
        at.after = None
        approved = env.run("approve", str(run["id"]), "--yes")
        assert approved.exit_code == 0, approved.output
        assert at.units(csids["C0001"], TODAY) == 25


def test_a_second_psabill_posting_the_same_delta_at_once_is_corrected_by_the_verify_read(env: Env) -> None:
    """Issue 20: two installs both read 10 and posted +15, leaving 40 against 25; the verify read corrects it."""
    with AutotaskStandin(today=TODAY) as at:
        csids = _autotask_book(env, at, 1, 10)
        _usage(env, {"C0001": 25})
        at.after = _meddle(at, csids["C0001"], 15)  # the other install's +15 lands beside ours
        code, run = _run_json(env)
        item = run["items"][0]
        assert code == 0 and item["outcome"] == "updated" and "corrected" in item["message"]
        assert at.units(csids["C0001"], TODAY) == 25


# -- the ledger goes away mid-run -----------------------------------------------------------------


def _fill(directory: Path) -> Path:
    """Fill the file system holding ``directory`` to its last byte; the filler file."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (65536, 4096, 512, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


def _mount_small_tmpfs(path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs for the state dir needs root")
    path.mkdir(mode=0o700, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        message = f"cannot mount a tmpfs for the full-disk test: {mounted.stderr.strip()}"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


def test_a_disk_that_fills_mid_run_stops_the_writes_and_the_next_run_accounts_for_each_change_once(
        env: Env) -> None:
    """Issue 20, point 5: every write is recorded before it is sent, so a full disk stops the writes
    it cannot record; after the disk is freed the next run reconciles and finishes."""
    _mount_small_tmpfs(env.state_dir)
    try:
        with Sandbox() as sandbox:
            book = Book(env, sandbox, customers=CW_CUSTOMERS, seats=25, guard={"enabled": False})
            edit_config(env, psa={"concurrency": 1})  # intents are recorded a window (4 writes) at a time
            target = {c: 30 + n for n, c in enumerate(book.lines, start=1)}
            book.source(target)
            filled: List[Path] = []

            def hook(method: str, endpoint: str) -> None:
                if method == "PATCH" and not filled and len(sandbox.patches()) >= 3:
                    filled.append(_fill(env.state_dir))

            sandbox.after = hook
            first = spawn("run", "--yes")
            out, err = first.communicate(timeout=120)
            sandbox.after = None
            assert filled, "the disk was never filled: the run wrote fewer than 3 lines"
            assert first.returncode not in (0, -signal.SIGKILL), (first.returncode, err)
            assert "Traceback" not in out + err
            sent = len(sandbox.patches())
            assert sent < len(target), "every write went out although none could be recorded"
            filled[0].unlink()
            again = spawn("run", "--yes")
            out, err = again.communicate(timeout=120)
            assert again.returncode == 0, err
            assert book.quantities() == {c: float(n) for c, n in target.items()}
        counts = updated_per_line(env.state_dir)
        assert set(counts) == {(c, "LastPass") for c in target} and set(counts.values()) == {1}, counts
    finally:
        subprocess.run(["umount", "--lazy", str(env.state_dir)], check=True)


def test_a_postgresql_ledger_lost_mid_run_stops_the_writes_and_the_next_run_accounts_for_each_change_once(
        env: Env, pg_url: str) -> None:
    """Issue 20, point 5, and issue 26, point 1: the ledger's sessions are terminated mid-run (a failover,
    pg_terminate_backend). The ledger opens its session again and records each intent before its write
    (the lease is a row, not a session: nothing is lost), so the run finishes every change, once, and says
    nothing on stderr; the next run has nothing left to do."""
    psycopg = pytest.importorskip("psycopg")
    with Sandbox() as sandbox:
        book = Book(env, sandbox, customers=CW_CUSTOMERS, seats=25, guard={"enabled": False})
        edit_config(env, psa={"concurrency": 1})  # intents are recorded a window (4 writes) at a time
        target = {c: 30 + n for n, c in enumerate(book.lines, start=1)}
        book.source(target)
        cut: List[int] = []

        def hook(method: str, endpoint: str) -> None:
            if method == "PATCH" and not cut and len(sandbox.patches()) >= 3:
                with psycopg.connect(pg_url, autocommit=True) as admin:
                    rows = admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                         "WHERE datname = current_database() AND pid <> pg_backend_pid()").fetchall()
                cut.append(len(rows))

        sandbox.after = hook
        ledger = {"PSABILL_STATE_URL": pg_url}
        first = spawn("run", "--yes", env=ledger)
        out, err = first.communicate(timeout=120)
        sandbox.after = None
        assert cut and cut[0] >= 1, "no ledger session was terminated"
        assert "Traceback" not in out + err
        assert first.returncode == ExitCode.OK and err.strip() == "", (first.returncode, err)
        assert book.quantities() == {c: float(n) for c, n in target.items()}
        assert len(sandbox.patches()) == len(target)  # each write sent once
        again = spawn("run", "--yes", env=ledger)
        out, err = again.communicate(timeout=120)
        assert again.returncode == 0, err
        assert len(sandbox.patches()) == len(target)  # nothing left to write
        assert book.quantities() == {c: float(n) for c, n in target.items()}
    with psycopg.connect(pg_url) as db:
        rows = db.execute("SELECT customer, sku FROM items WHERE outcome = 'updated'").fetchall()
    counts = Counter(tuple(r) for r in rows)
    assert set(counts) == {(c, "LastPass") for c in target} and set(counts.values()) == {1}, counts
