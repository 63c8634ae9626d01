"""The history and once-only ledger: one test body, SQLite and a real PostgreSQL.

``ledger_url`` is None for SQLite in the state dir, or a fresh PostgreSQL
schema (exported as PSABILL_STATE_URL, so CLI runs and subprocesses use it too).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import List, Optional

import pytest

from psabill.errors import StateError
from psabill.ledger.history import SCHEMA_VERSION, Ledger
from psabill.outcomes import FAILED, INTERRUPTED, PARTIAL, PLANNED, SUCCESS, UPDATED
from psabill.report import Item, Run
from support.env import Env, write_old
from support.ledger import history_for, store_for

UTC = timezone.utc
SAVED = "2026-11-26T12:00:00+00:00"
OCC = datetime(2026, 11, 27, 6, tzinfo=UTC)


def scheduled(occurrence: datetime = OCC, started: Optional[datetime] = None) -> Run:
    return Run(trigger="scheduled", started_at=started or occurrence + timedelta(seconds=5),
                     occurrence=occurrence)


def finish(history: Ledger, report: Run, status: str = SUCCESS) -> None:
    report.status = status
    report.finished_at = report.started_at + timedelta(seconds=30)
    history.finish_run(report, retry=False)


def store_items(history: Ledger, report: Run, *items: Item) -> None:
    """Store ``items`` as ``report``'s plan (numbered from 1 unless they carry a seq)."""
    for n, item in enumerate(items, start=1):
        item.seq = item.seq or n
    report.items = list(items)
    history.store_plan(report, report.started_at)


class TestHistory:
    def test_a_run_round_trips_with_its_items_email_and_host(self, tmp_path: Path, ledger_url: Optional[str]) -> None:
        with history_for(tmp_path / "state", ledger_url) as history:
            report = scheduled()
            run_id = history.start_run(report)
            acme, globex = Item("Acme", "LastPass", old=3, new=5), Item("Globex", "MFA", old=1, new=2, psa_company="G")
            store_items(history, report, acme, globex)  # the plan, before any write
            assert [i.outcome for i in history.items(run_id)] == [PLANNED, PLANNED]
            acme.outcome, acme.message = FAILED, "first try"
            history.settle(run_id, [acme])
            acme.outcome, acme.message, globex.outcome = UPDATED, "", UPDATED
            history.settle(run_id, [acme, globex])  # replaces seq 1's outcome
            report.items = history.items(run_id)
            report.api_requests = 9
            finish(history, report, PARTIAL)
            history.set_email(run_id, "sent", "to 2 addresses")
            row = history.run(run_id)
            latest = history.last_run()
            assert row is not None and latest is not None and latest.to_json(items=False) == row.to_json(items=False)
            assert (row.status, row.api_requests, row.count(UPDATED), row.email.status) == (PARTIAL, 9, 2, "sent")
            assert latest.counts == {UPDATED: 2}  # a run read without its items: counted from them
            assert row.host == socket.gethostname() and row.to_json()["host"] == socket.gethostname()
            assert [(i.customer, i.outcome, i.old, i.new, i.message) for i in history.items(run_id)] == [
                ("Acme", UPDATED, 3, 5, ""), ("Globex", UPDATED, 1, 2, "")]
            rebuilt = history.run(run_id)
            assert rebuilt is not None and rebuilt.occurrence == OCC and len(rebuilt.items) == 2
            assert [r.id for r in history.runs(OCC - timedelta(days=1))] == [run_id]
            assert history.run(run_id + 100) is None and history.items(run_id + 100) == []
            assert history.hosts() == [socket.gethostname()]

    def test_every_field_of_an_item_round_trips_exactly(self, tmp_path: Path, ledger_url: Optional[str]) -> None:
        """Every Item field comes back as stored: decimals exact, whole numbers as int, None as None."""
        from dataclasses import fields
        from decimal import Decimal

        with history_for(tmp_path / "state", ledger_url) as history:
            report = scheduled()
            run_id = history.start_run(report)
            full = Item("Zürich AG", "LastPass+MFA", outcome=FAILED, seq=7, psa_company="ZUR", agreement="101",
                        line="202", product="SEATS-MFA", old=Decimal("2.5"), new=3, message="refused",
                        hint="fix it", rule="max_seats", transient=True)
            bare = Item("Bare", "LastPass", outcome=PLANNED, seq=8)
            store_items(history, report, full, bare)
            history.settle(run_id, [full])
            back = {i.seq: i for i in history.items(run_id)}
            for name in (f.name for f in fields(Item)):
                assert getattr(back[7], name) == getattr(full, name), name
                assert getattr(back[8], name) == getattr(bare, name), name
            assert type(back[7].old) is Decimal and type(back[7].new) is int and back[8].old is None

    def test_an_occurrence_is_done_only_once_a_run_for_it_ends_other_than_interrupted(
            self, tmp_path: Path, ledger_url: Optional[str]) -> None:
        with history_for(tmp_path / "state", ledger_url) as history:
            assert history.occurrence_done_readonly(OCC) is False
            report = scheduled()
            history.start_run(report)
            assert not history.occurrence_done(OCC) and not history.occurrence_done_readonly(OCC)
            assert history.mark_interrupted() == 1
            assert history.run(report.id or 0).status == INTERRUPTED  # type: ignore[union-attr]
            assert not history.occurrence_done(OCC)
            again = scheduled()
            history.start_run(again)
            finish(history, again)
            assert history.occurrence_done(OCC) and history.occurrence_done_readonly(OCC)
            assert history.done_occurrences(OCC - timedelta(days=1)) == [OCC.isoformat()]
            assert history.mark_interrupted() == 0

    def test_a_scheduled_run_cannot_claim_an_occurrence_that_already_ran(
            self, tmp_path: Path, ledger_url: Optional[str]) -> None:
        with history_for(tmp_path / "state", ledger_url) as history:
            first = scheduled()
            history.start_run(first)
            finish(history, first)
            with pytest.raises(StateError, match="already ran"):
                history.start_run(scheduled())
            assert len(history.runs()) == 1
            manual = Run(trigger="manual", started_at=OCC)
            assert history.start_run(manual) > (first.id or 0)  # manual runs claim nothing

    def test_retention_deletes_old_runs_with_their_items_and_keeps_the_newest(
            self, tmp_path: Path, ledger_url: Optional[str]) -> None:
        with history_for(tmp_path / "state", ledger_url) as history:
            ids = []
            for day in range(3):
                report = scheduled(OCC + timedelta(days=day))
                ids.append(history.start_run(report))
                store_items(history, report, Item("Acme", "LastPass", UPDATED, old=day, new=day + 1))
                finish(history, report)
            # The window runs back from the newest record (OCC + 2 days), never from a "now".
            assert history.prune(timedelta(days=1), keep=timedelta(hours=27)) == 1
            assert [r.id for r in history.runs()] == ids[:0:-1]
            assert history.items(ids[0]) == []
            assert history.prune(timedelta(hours=1), keep=timedelta(0)) == 1
            assert [r.id for r in history.runs()] == [ids[2]]

    def test_a_reader_never_creates_the_ledger(self, tmp_path: Path, ledger_url: Optional[str]) -> None:
        history = history_for(tmp_path / "state", ledger_url)
        assert history.occurrence_done_readonly(OCC) is False
        assert not (tmp_path / "state").exists()

    def test_processes_opening_a_fresh_ledger_together_all_see_one_schema(
            self, tmp_path: Path, ledger_url: Optional[str]) -> None:
        # SQLite: 40 fresh files, 8 openers each. Switching a fresh file to WAL used to fail now and then
        # with "database is locked" (about one round in 15) instead of waiting for the other openers.
        rounds = 1 if ledger_url else 40
        for round_ in range(rounds):
            state = tmp_path / f"state{round_}"
            errors: List[BaseException] = []
            barrier = threading.Barrier(8)

            def open_one() -> None:
                try:
                    barrier.wait()
                    with history_for(state, ledger_url) as history:
                        history.start_run(Run(trigger="manual", started_at=OCC))
                except BaseException as exc:  # noqa: BLE001 - reported below
                    errors.append(exc)

            threads = [threading.Thread(target=open_one) for _ in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert errors == []
            with history_for(state, ledger_url) as history:
                assert len(history.runs()) == 8
            assert history._query("SELECT value FROM meta WHERE key = 'schema_version'") == [(str(SCHEMA_VERSION),)]


class TestRunLock:
    def test_a_second_holder_waits_then_gives_up_with_one_line(self, tmp_path: Path, ledger_url: Optional[str]) -> None:
        store = store_for(tmp_path / "state", ledger_url)
        with store.lock(1):
            started = time.monotonic()
            with pytest.raises(StateError) as caught:
                with store_for(tmp_path / "state", ledger_url).lock(0.3):
                    pass
            assert time.monotonic() - started >= 0.3
        assert "nothing was run (raise [run] lock_timeout to wait longer)" in caught.value.message
        assert caught.value.message.startswith("another psabill run still holds ")
        with store.lock(0.1):  # released
            pass

    def test_a_killed_holder_loses_the_lock_and_the_next_guard_marks_its_run_interrupted(
            self, env: Env, ledger_url: Optional[str]) -> None:
        env.run("schedule", "set", "--daily", "--hour", "6", "--timezone", "UTC", now=SAVED)
        env.make_ready()
        holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from datetime import datetime, timezone
            sys.path.insert(0, {str(Path(__file__).parent)!r})
            from support.ledger import store_for
            from psabill.report import Run
            from pathlib import Path
            store = store_for(Path({str(env.state_dir)!r}), {ledger_url!r})
            with store.lock(5), store.ledger as history:
                occ = datetime(2026, 11, 27, 6, tzinfo=timezone.utc)
                history.start_run(Run(trigger="scheduled", started_at=occ, occurrence=occ))
                print("holding", flush=True)
                time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
            with pytest.raises(StateError):
                with store_for(env.state_dir, ledger_url).lock(0.2):
                    pass
        finally:
            holder.send_signal(signal.SIGKILL)
            holder.wait()
        result = env.run("run", "--scheduled", now="2026-11-27T06:05:00Z")
        assert result.exit_code == 0, result.output
        runs = json.loads(env.run("history", "--json").output)
        assert [(r["status"], r["host"]) for r in runs] == [
            (SUCCESS, socket.gethostname()), (INTERRUPTED, socket.gethostname())]


class TestHostsAndStatus:
    def test_status_and_history_show_the_host(self, env: Env, ledger_url: Optional[str]) -> None:
        env.run("schedule", "set", "--daily", "--hour", "6", "--timezone", "UTC", now=SAVED)
        env.make_ready()
        env.run("run", "--scheduled", now="2026-11-27T06:00:00Z")
        status = json.loads(env.run("status", "--json", now="2026-11-27T07:00:00Z").output)
        assert status["last_run"]["host"] == socket.gethostname()
        assert status["ledger"]["kind"] == ("postgresql" if ledger_url else "sqlite")
        assert status["ledger"]["shared"] is bool(ledger_url) and status["warnings"] == []
        text = env.run("history").output
        assert text.splitlines()[0].split()[-1] == "HOST" and socket.gethostname() in text.splitlines()[1]
        assert f"Host: {socket.gethostname()}" in env.run("history", "show", "1").output
        assert f"on host {socket.gethostname()}" in env.run("status", now="2026-11-27T07:00:00Z").output

    def test_runs_from_two_hosts_warn_only_without_a_shared_ledger(self, env: Env, ledger_url: Optional[str]) -> None:
        env.run("schedule", "set", "--daily", "--hour", "6", "--timezone", "UTC", now=SAVED)
        env.make_ready()
        env.run("run", "--scheduled", now="2026-11-27T06:00:00Z")
        env.run("run", "--scheduled", now="2026-11-28T06:00:00Z")
        with history_for(env.state_dir, ledger_url) as history:
            history._execute("UPDATE runs SET host = ? WHERE id = ?", ("other-host", 1))
        status = json.loads(env.run("status", "--json", now="2026-11-28T07:00:00Z").output)
        assert sorted(status["ledger"]["hosts"]) == sorted(["other-host", socket.gethostname()])
        if ledger_url:
            assert status["warnings"] == []
        else:
            assert len(status["warnings"]) == 1 and "one scheduler per config" in status["warnings"][0]
            assert "Warning:" in env.run("status", now="2026-11-28T07:00:00Z").output


@pytest.mark.parametrize("version", [1, 2])
def test_a_version_1_sqlite_history_migrates_to_record_the_host(tmp_path: Path, version: int) -> None:
    # Version 1 had no host; version 2 added it. Both stored counts on the run; version 3 counts the items.
    db = tmp_path / "state" / "state.db"
    db.parent.mkdir()
    conn = sqlite3.connect(str(db))
    conn.executescript(f"""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, trigger TEXT NOT NULL, occurrence TEXT,
            started_at TEXT NOT NULL, finished_at TEXT, status TEXT NOT NULL, late_seconds INTEGER,
            message TEXT NOT NULL DEFAULT '', psa_kind TEXT, api_requests INTEGER NOT NULL DEFAULT 0,
            updated INTEGER NOT NULL DEFAULT 0, unchanged INTEGER NOT NULL DEFAULT 0,
            failed INTEGER NOT NULL DEFAULT 0, unmapped INTEGER NOT NULL DEFAULT 0, email_status TEXT,
            email_message TEXT NOT NULL DEFAULT '', pid INTEGER{", host TEXT" if version >= 2 else ""});
        CREATE TABLE items (run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE, seq INTEGER NOT NULL,
            customer TEXT NOT NULL, sku TEXT NOT NULL, psa_company TEXT, agreement TEXT, line TEXT, old INTEGER,
            new INTEGER, outcome TEXT NOT NULL, message TEXT NOT NULL DEFAULT '', hint TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (run_id, seq));
        INSERT INTO meta VALUES ('schema_version', '{version}');
        INSERT INTO runs (trigger, occurrence, started_at, finished_at, status, updated, unchanged, email_status)
            VALUES ('scheduled', '2026-11-27T06:00:00+00:00', '2026-11-27T06:00:05+00:00',
                    '2026-11-27T06:00:35+00:00', 'success', 2, 1, 'sent');
        INSERT INTO items (run_id, seq, customer, sku, psa_company, old, new, outcome) VALUES
            (1, 1, 'Acme', 'LastPass', 'ACME', 3, 5, 'updated'),
            (1, 2, 'Globex', 'LastPass', 'GLOBEX', 7, 9, 'updated'),
            (1, 3, 'Initech', 'LastPass', 'INITECH', 4, 4, 'unchanged');
    """)
    conn.commit()
    conn.close()
    history = Ledger(db)
    assert history.occurrence_done_readonly(OCC)  # an old schema is readable before any writer migrates it
    with history:
        old = history.runs()[0]
        assert old.host is None
        # The run keeps its history: its status, email and items; its counts now come from those items.
        assert (old.id, old.status, old.occurrence, old.email.status) == (1, SUCCESS, OCC, "sent")
        assert old.counts == {UPDATED: 2, "unchanged": 1}
        kept = history.run(1)
        assert kept is not None and [(i.customer, i.outcome, i.old, i.new) for i in kept.items] == [
            ("Acme", UPDATED, 3, 5), ("Globex", UPDATED, 7, 9), ("Initech", "unchanged", 4, 4)]
        assert history.occurrence_done(OCC)  # still done: the migrated run is not run again
        report = scheduled(OCC + timedelta(days=1))
        history.start_run(report)
        assert history.run(report.id or 0).host == socket.gethostname()  # type: ignore[union-attr]
        assert history._query("SELECT value FROM meta WHERE key = 'schema_version'") == [(str(SCHEMA_VERSION),)]
    assert SCHEMA_VERSION == 4
    with sqlite3.connect(str(db)) as conn:  # the migrated file has the customer index the history site reads by
        assert "items_customer" in {row[1] for row in conn.execute("PRAGMA index_list(items)")}


def test_a_version_3_ledger_is_read_as_it_is_and_its_first_writer_adds_the_customer_index(tmp_path: Path) -> None:
    """Version 4 only adds an index: a reader (the not-due path, status) reads a version 3 ledger with its
    config identities as they are, before any writer migrates it."""
    db = tmp_path / "state" / "state.db"
    with Ledger(db, "brand-a") as history:
        report = scheduled(OCC)
        history.start_run(report)
        finish(history, report)
        history._execute("DROP INDEX items_customer")
        history._execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    assert Ledger(db, "brand-a").occurrence_done_readonly(OCC)  # this config's run, read by its identity
    assert not Ledger(db, "brand-b").occurrence_done_readonly(OCC)  # not another config's
    with Ledger(db, "brand-a") as history:
        assert history.occurrence_done(OCC)
        assert history._query("SELECT value FROM meta WHERE key = 'schema_version'") == [("4",)]
        assert ("items_customer",) in history._query("SELECT name FROM sqlite_master WHERE type = 'index'")


def test_a_newer_schema_is_refused_and_left_alone(tmp_path: Path) -> None:
    with Ledger(tmp_path / "state" / "state.db") as history:
        history._execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StateError, match="schema version 99"):
        Ledger(tmp_path / "state" / "state.db").conn


class TestPostgresErrors:
    def test_an_unreachable_server_is_one_line_without_the_password(self, env: Env, tmp_path: Path) -> None:
        env.run("schedule", "set", "--daily", "--hour", "6", "--timezone", "UTC", now=SAVED)
        url = f"postgresql://billing:s3cr%40t-pw@/psabill?host={tmp_path}/nosock&password=also-s3cret"
        for args, now in ((["status"], SAVED), (["run", "--scheduled"], "2026-11-27T06:00:00Z"), (["history"], None)):
            result = env.run(*args, now=now, env={"PSABILL_STATE_URL": url})
            assert result.exit_code == 7, result.output
            line = result.output.strip()
            assert "\n" not in line and line.startswith("Error: cannot reach the history database postgresql://billing:***@/")
            assert "s3cr" not in line and "also-s3cret" not in line

    def test_a_bad_state_url_in_the_config_never_shows_its_password(self, env: Env) -> None:
        env.run("schedule", "set", "--daily", "--hour", "6", "--timezone", "UTC", now=SAVED)
        with env.config.open("a") as fh:
            fh.write('\n[state]\nurl = "mysql://root:hunter2@db/psabill"\n')
        result = env.run("status")
        assert result.exit_code == 3
        assert "hunter2" not in result.output and "mysql://root:***@db/psabill" in result.output  # masked, not dropped

    def test_the_lock_message_names_the_database_without_the_password(self, tmp_path: Path, pg_url: str) -> None:
        secret_url = pg_url.replace("psabill@", "psabill:pw-not-shown@")  # trust auth ignores it
        with store_for(tmp_path / "state", secret_url).lock(1):
            with pytest.raises(StateError) as caught:
                with store_for(tmp_path / "state", secret_url).lock(0.1):
                    pass
        assert "pw-not-shown" not in caught.value.message
        assert "postgresql://psabill:***@/postgres" in caught.value.message  # masked, not dropped
        assert f"running on {socket.gethostname()} since " in caught.value.message  # who holds it

    def test_ledgers_in_different_schemas_do_not_share_a_lease(self, tmp_path: Path, pg_server: str) -> None:
        from support.pg import fresh_schema

        with store_for(tmp_path / "a", fresh_schema(pg_server)).lock(1):
            with store_for(tmp_path / "b", fresh_schema(pg_server)).lock(0.1):
                pass


def test_the_postgres_driver_stays_off_the_sqlite_path(env: Env) -> None:
    env.run("schedule", "set", "--daily", "--hour", "6", "--timezone", "UTC", now=SAVED)
    env.make_ready()
    code = ("import sys; from psabill.cli import cli\n"
            "try: cli.main(['run', '--scheduled'], prog_name='psabill')\n"
            "except SystemExit: pass\n"
            "print('psycopg' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PSABILL_NOW": "2026-11-27T06:00:00Z"}, timeout=60)
    assert out.stdout.strip().splitlines()[-1] == "False", (out.stdout, out.stderr)
    assert len(json.loads(env.run("history", "--json").output)) == 1  # it did run


class TestTwoHosts:
    def test_two_installs_sharing_one_ledger_run_each_occurrence_exactly_once(
            self, env: Env, pg_url: str) -> None:
        """Two psabill installs (own config copy and state dir, one [state] url) fire together, 8 rounds."""
        import shutil
        from datetime import date

        import tomli_w

        from psabill.sandbox.autotask import AutotaskStandin
        from support.env import tomllib

        env.run("schedule", "set", "--daily", "--hour", "6", "--timezone", "UTC", now=SAVED)
        with AutotaskStandin(today=date(2026, 12, 5), latency_ms=15) as at:
            services = {}
            for n in range(10):
                services[f"C{n:03d}"] = at.add_service(at.add_contract(at.add_company(f"Customer {n}", f"C{n:03d}")),
                                                       301, 10)
            data = tomllib.loads(env.config.read_text())
            data["account"]["id"] = "msp-autotask"  # one config on two hosts: one identity in the shared ledger
            data.update({
                "source": {"kind": "csv", "path": "usage.csv"},
                "products": {"LastPass": "301"},
                "psa": {"kind": "autotask", "url": at.url + "/ATServicesRest/", "username": at.username,
                        "integration_code": at.integration_code, "secret_env": "AT_SECRET", "concurrency": 2,
                        "max_retries": 0},
                "state": {"url": pg_url},
            })
            installs = [env.tmp / "host-a", env.tmp / "host-b"]
            for root in installs:
                (root / "conf").mkdir(parents=True)
                (root / "conf" / "config.toml").write_text(tomli_w.dumps(data))
                os.chmod(root / "conf" / "config.toml", 0o600)
                shutil.copy(env.crontab, root / "crontab")
            base = {k: v for k, v in os.environ.items() if k != "PSABILL_STATE_URL"}
            seats = {customer: 10 for customer in services}
            for round_no in range(1, 9):
                seats = {customer: 10 + round_no + i for i, customer in enumerate(services)}
                usage = "customer,sku,seats\n" + "".join(f"{c},LastPass,{n}\n" for c, n in seats.items())
                for root in installs:
                    write_old(root / "conf" / "usage.csv", usage)
                now = f"2026-12-{round_no:02d}T06:00:{round_no:02d}Z"
                before = len(at.adjustments)
                procs = [subprocess.Popen(
                    [sys.executable, "-m", "psabill", "run", "--scheduled"], stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE, text=True,
                    env={**base, "PSABILL_CONFIG": str(root / "conf" / "config.toml"),
                         "PSABILL_STATE_DIR": str(root / "state"), "PSABILL_CRONTAB": str(root / "crontab"),
                         "PSABILL_NOW": now, "AT_SECRET": at.secret}) for root in installs]
                outputs = [proc.communicate(timeout=120) for proc in procs]
                assert [proc.returncode for proc in procs] == [0, 0], outputs
                runs = json.loads(env.run("history", "--days", "100000", "--json", env={
                    "PSABILL_STATE_URL": pg_url, "PSABILL_CONFIG": str(installs[0] / "conf" / "config.toml")}).output)
                assert len(runs) == round_no, (round_no, outputs)
                assert runs[0]["occurrence"] == f"2026-12-{round_no:02d}T06:00:00+00:00"
                assert runs[0]["status"] == SUCCESS and runs[0]["counts"]["updated"] == len(services)
                assert len(at.adjustments) - before == len(services)  # one adjustment per service, never two
                for customer, csid in services.items():
                    assert at.units(csid) == seats[customer]
            # Each install logged locally; between them, exactly one run per round.
            started = sum((root / "state" / "psabill.log").read_text().count(" started (scheduled")
                          for root in installs if (root / "state" / "psabill.log").exists())
            assert started == 8
            for customer, csid in services.items():
                contract = at.tables["ContractServices"][csid]["contractID"]
                assert sum(a["unitChange"] for a in at.adjustments if a["contractID"] == contract) == seats[customer] - 10


def test_a_state_url_with_a_password_needs_a_private_config(env: Env) -> None:
    env.run("schedule", "set", "--daily", "--hour", "6", "--timezone", "UTC", now=SAVED)
    with env.config.open("a") as fh:
        fh.write('\n[state]\nurl = "postgresql://billing:hunter2@db.example/psabill"\n')
    os.chmod(env.config, 0o644)
    result = env.run("status")
    assert result.exit_code == 3 and "state.url (its password)" in result.output and "hunter2" not in result.output


def test_the_fast_path_asks_the_shared_ledger_not_a_stale_local_one(env: Env, pg_url: str) -> None:
    """A local state.db from before the switch to PostgreSQL must not answer for the shared ledger."""
    from psabill.entry import nothing_due
    from psabill.config.paths import Paths

    env.run("schedule", "set", "--daily", "--hour", "6", "--timezone", "UTC", now=SAVED)
    env.make_ready()
    env.run("run", "--scheduled", now="2026-11-27T06:00:00Z")  # recorded in the local SQLite ledger
    env.monkeypatch.setenv("PSABILL_STATE_URL", pg_url)
    env.monkeypatch.setenv("PSABILL_NOW", "2026-11-27T06:30:00Z")
    paths = Paths.resolve(str(env.config), str(env.state_dir))
    assert nothing_due(paths) is False  # the shared ledger has not seen this occurrence yet


@pytest.mark.parametrize("ledger", ["sqlite", "postgresql"])
def test_a_not_due_firing_opens_the_ledger_once(env: Env, ledger: str, request: pytest.FixtureRequest) -> None:
    """A daily schedule: every firing is within catch-up of the last occurrence, so a not-due one asks
    the ledger twice (did the occurrence run; does a report wait to be re-sent), on one connection."""
    from psabill.config.paths import Paths
    from psabill.entry import nothing_due
    from psabill.ledger import dialect

    if ledger == "postgresql":
        env.monkeypatch.setenv("PSABILL_STATE_URL", request.getfixturevalue("pg_url"))
    env.run("schedule", "set", "--daily", "--hour", "6", "--timezone", "UTC", now=SAVED)
    env.make_ready()
    assert env.run("run", "--scheduled", now="2026-11-27T06:00:00Z").exit_code == 0
    kind = dialect.PostgresDialect if ledger == "postgresql" else dialect.SqliteDialect
    opened: List[bool] = []
    connect = kind.connect

    def counting(self: object, *args: object, **kwargs: object) -> object:
        opened.append(bool(kwargs.get("readonly")))
        return connect(self, *args, **kwargs)  # type: ignore[arg-type]

    env.monkeypatch.setattr(kind, "connect", counting)
    env.monkeypatch.setenv("PSABILL_NOW", "2026-11-27T09:00:00Z")
    assert nothing_due(Paths.resolve(str(env.config), str(env.state_dir))) is True
    assert opened == [True]


def test_a_pruned_sqlite_ledger_stops_growing_and_hands_its_free_pages_back(tmp_path: Path) -> None:
    """Issue 26, point 8: daily runs of 300 lines with a 20-day retention. Until day 20 the file grows by
    a day's runs each day; from then on each prune frees a day's pages (in batches, then an incremental
    vacuum hands them back) and the next day's run takes as many: the file stays within a day's pages."""
    db = tmp_path / "state" / "state.db"
    day0 = datetime(2026, 1, 1, 6, tzinfo=UTC)
    sizes: List[int] = []
    free: List[int] = []
    with Ledger(db) as history:
        assert history._query("PRAGMA auto_vacuum") == [(2,)]  # incremental, from the first table on
        for day in range(60):
            started = day0 + timedelta(days=day)
            report = scheduled(started, started)
            run_id = history.start_run(report)
            items = [Item(f"Customer {n:05d} Ltd", "LastPass", psa_company=f"CUST{n:05d}", agreement=str(1000 + n),
                          line=str(50000 + n), product="SEATS-STD", old=n, new=n + day % 3, seq=n)
                     for n in range(1, 301)]
            store_items(history, report, *items)
            history.intend(run_id, [i.seq for i in items], started)
            for item in items:
                item.outcome = UPDATED
            history.settle(run_id, items)
            finish(history, report)
            history.prune(timedelta(days=20), keep=timedelta(hours=27))
            # The file's size once checkpointed (WAL holds the newest pages until then).
            sizes.append(history._query("PRAGMA page_count")[0][0])
            free.append(history._query("PRAGMA freelist_count")[0][0])
        history._query("PRAGMA wal_checkpoint(TRUNCATE)")
        page = history._query("PRAGMA page_size")[0][0]
    day = (sizes[20] - sizes[10]) / 10  # the pages a day's runs take, before any pruning
    assert day > 0 and sizes[20] > 1.5 * sizes[10]  # it did grow while nothing was old enough to prune
    assert max(sizes[25:]) - min(sizes[25:]) <= 2 * day, (sizes[25:], day)  # then it stopped growing
    assert sizes[-1] <= sizes[21] + day, (sizes[21], sizes[-1])
    assert max(free[25:]) <= day / 2, free[25:]  # the pruned pages went back: few free pages left over
    assert db.stat().st_size == sizes[-1] * page  # and the file on disk is that size
