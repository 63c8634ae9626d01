"""The fault matrix (docs/faults.md, "Faults and what psabill does"): each row's proof.

Real processes, real files, real SQLite, the real loopback sandbox PSA and
Autotask stand-in. Nothing inside psabill is mocked.
"""

from __future__ import annotations

import base64
import json
import os
import random
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, List, Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from psabill.sandbox.autotask import AutotaskStandin
from support.env import SCHEDULED_NOW, Env, configure, edit_config, free_port, last_line, tomllib, write_old
from support.ledger import history_for
from psabill.config import edit, settings as config
from psabill.errors import PsabillError
from psabill.sandbox.connectwise import Sandbox
from psabill.ledger.lock import run_lock

PSABILL = [sys.executable, "-m", "psabill"]


def spawn(args: Sequence[str], **env: str) -> "subprocess.Popen[str]":
    return subprocess.Popen([*PSABILL, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **env})


def run(args: Sequence[str], **env: str) -> "subprocess.CompletedProcess[str]":
    return subprocess.run([*PSABILL, *args], capture_output=True, text=True, env={**os.environ, **env}, timeout=120)




def history(env: Env) -> List[dict]:
    return json.loads(env.run("history", "--days", "100000", "--json").output)


def lock_file(env: Env) -> Path:
    """The env config's run lock (each config has its own)."""
    from psabill.config.paths import Paths

    return Paths(env.config, env.state_dir, None).lock_for(config.load(env.config, check_addresses=False).account_id)


def file_outbox(env: Env) -> Dict[str, object]:
    return {"transport": "file", "file": {"dir": str(env.tmp / "outbox")}}


class TestConcurrency:
    def test_two_guards_started_together_on_a_due_occurrence_produce_exactly_one_run(
            self, env: Env, sandbox: Sandbox) -> None:
        sandbox.latency_ms = 30  # long enough for the two to overlap
        configure(env, sandbox, free_port())
        edit_config(env, notify=file_outbox(env))
        first, second = spawn(["run", "--scheduled"], PSABILL_NOW=SCHEDULED_NOW), \
            spawn(["run", "--scheduled"], PSABILL_NOW=SCHEDULED_NOW)
        results = sorted([first.wait(60), second.wait(60)])
        assert results == [0, 1]  # one ran (GLOBEX fails: exit 1), the other found it done: silent 0
        runs = history(env)
        assert len(runs) == 1 and runs[0]["occurrence"] == "2026-12-01T14:00:00+00:00"
        assert len(sandbox.patches()) == runs[0]["counts"]["updated"]

    def test_a_manual_and_a_scheduled_run_never_refresh_together(self, env: Env, sandbox: Sandbox) -> None:
        sandbox.latency_ms = 30
        configure(env, sandbox, free_port())
        edit_config(env, notify=file_outbox(env))
        procs = [spawn(["run", "--scheduled"], PSABILL_NOW=SCHEDULED_NOW), spawn(["run", "--yes"])]
        for proc in procs:
            proc.wait(60)
        events = [line.split(" run ", 1)[1].split(":")[0].split(" (")[0]
                  for line in (env.state_dir / "psabill.log").read_text().splitlines() if " run " in line]
        # "1 started", "1 finished", "2 started", "2 finished": never interleaved.
        assert [e.split()[1] for e in events] == ["started", "finished", "started", "finished"]
        assert events[0].split()[0] == events[1].split()[0] and events[2].split()[0] == events[3].split()[0]

    def test_a_run_that_cannot_get_the_lock_in_time_gives_up_with_one_line(self, env: Env, sandbox: Sandbox) -> None:
        configure(env, sandbox, free_port())
        edit_config(env, run={"lock_timeout": "1s"})
        before = env.snapshot()
        with run_lock(lock_file(env), timeout=1):
            result = run(["run", "--yes"])
        assert result.returncode == 7
        assert result.stderr.strip() == (
            f"Error: another psabill run still holds {lock_file(env)} after 1s; "
            "nothing was run (raise [run] lock_timeout to wait longer)")
        assert sandbox.patches() == [] and history(env) == [] and env.snapshot() == before

    def test_schedule_set_never_exposes_a_half_written_config_or_crontab(self, env: Env) -> None:
        env.crontab.write_text("# admin line\n")
        writer = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
            from psabill.cli import cli
            for i in range(40):
                try:
                    cli.main(["schedule", "set", "--daily", "--hour", str(i % 24), "--timezone", "UTC",
                              "--notify", "a@msp.example, b@msp.example"], standalone_mode=False)
                except SystemExit:
                    pass
        """)], env=dict(os.environ), stdout=subprocess.DEVNULL)
        seen = 0
        while writer.poll() is None:
            if env.config.exists():
                data = tomllib.loads(env.config.read_text())  # raises on a torn file
                assert data["notify"]["emails"] == ["a@msp.example", "b@msp.example"]
                lines = env.crontab.read_text().splitlines()
                assert lines[0] == "# admin line" and len(lines) == 4  # schedule, @reboot, hourly retry
                seen += 1
        assert writer.returncode == 0 and seen > 10


SAVER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from psabill.config import edit
    path = Path(sys.argv[1])
    versions = [{"account": {"name": "old " * 500, "timezone": "UTC"}},
                {"account": {"name": "new " * 2000, "timezone": "UTC"}, "products": {"LastPass": "LP"}}]
    print("ready", flush=True)
    i = 0
    while True:
        edit.save(path, versions[i % 2])
        i += 1
""")


class TestCrashSafety:
    def test_kill_9_during_config_writes_leaves_the_old_file_or_the_new_one(self, tmp_path: Path) -> None:
        path = tmp_path / "config.toml"
        names = {"old " * 500, "new " * 2000}
        rng = random.Random(5)
        for _ in range(40):
            proc = subprocess.Popen([sys.executable, "-c", SAVER, str(path)], stdout=subprocess.PIPE, text=True)
            assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
            time.sleep(rng.uniform(0.0, 0.03))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            if path.exists():
                assert config.load(path).account.name in names
        assert path.exists()

    @pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
    def test_kill_9_mid_run_leaves_an_interrupted_record_and_the_next_run_finishes(
            self, env: Env, sandbox: Sandbox, signum: int) -> None:
        sandbox.latency_ms = 40
        configure(env, sandbox, free_port(), concurrency=1)
        edit_config(env, notify=file_outbox(env))
        victim = spawn(["run", "--yes"])
        deadline = time.monotonic() + 30
        while len(sandbox.patches()) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        victim.send_signal(signum)
        assert victim.wait() == (-signal.SIGKILL if signum == signal.SIGKILL else 143)
        time.sleep(0.3)  # a PATCH already on the wire still lands (after the 40 ms latency)
        written_before = len(sandbox.patches())
        assert written_before >= 2
        assert run(["run", "--yes"]).returncode == 1  # GLOBEX still fails; everything else is done
        runs = history(env)
        assert [r["status"] for r in runs] == ["partial", "interrupted"]
        # Absolute quantities: the second run wrote only what the first had not.
        updated = {(r["customer"], r["sku"]) for r in
                   json.loads(env.run("history", "show", str(runs[0]["id"]), "--json").output)["items"]
                   if r["outcome"] == "updated"}
        assert len(sandbox.patches()) == written_before + len(updated)
        # The killed run's open writes were read back by the next run: each line it wrote before the kill
        # is "updated" in its own items, never assumed and never counted again by the second run.
        killed = json.loads(env.run("history", "show", str(runs[1]["id"]), "--json").output)["items"]
        assert killed
        written = {(i["customer"], i["sku"]) for i in killed if i["outcome"] == "updated"}
        assert len(written) == written_before
        assert not written & updated
        assert all(i["outcome"] != "unknown" for i in killed)

    def test_kill_9_mid_autotask_run_never_double_counts(self, env: Env) -> None:
        today = datetime.now(timezone.utc).date()
        with AutotaskStandin(today=today, latency_ms=40) as at:
            targets: Dict[int, int] = {}
            initial: Dict[int, int] = {}
            rows = ["customer,sku,seats"]
            for n in range(12):
                contract = at.add_contract(at.add_company(f"Customer {n}", f"C{n:03d}"))
                csid = at.add_service(contract, 301, 10)
                initial[csid], targets[csid] = 10, 10 + n + 1
                rows.append(f"C{n:03d},LastPass,{targets[csid]}")
            env.config.parent.mkdir(parents=True, exist_ok=True)
            write_old(env.config.parent / "usage.csv", "\n".join(rows) + "\n")
            edit.save(env.config, {
                "account": {"timezone": "UTC"},
                "source": {"kind": "csv", "path": "usage.csv"},
                "products": {"LastPass": "301"},
                "psa": {"kind": "autotask", "url": at.url + "/ATServicesRest/", "username": at.username,
                        "integration_code": at.integration_code, "secret_env": "AT_SECRET", "concurrency": 1},
            })
            victim = spawn(["run", "--yes"], AT_SECRET=at.secret)
            deadline = time.monotonic() + 30
            while len(at.adjustments) < 3 and time.monotonic() < deadline:
                time.sleep(0.01)
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            time.sleep(0.3)  # a post already on the wire still lands (after the 40 ms latency)
            posted_before = len(at.adjustments)
            assert 3 <= posted_before < 12
            assert run(["run", "--yes"], AT_SECRET=at.secret).returncode == 0
            for csid, target in targets.items():
                assert at.units(csid) == target
                posted = sum(a["unitChange"] for a in at.adjustments
                             if a["contractID"] == at.tables["ContractServices"][csid]["contractID"])
                assert posted == target - initial[csid]
        runs = history(env)
        assert [r["status"] for r in runs] == ["success", "interrupted"]
        # What the killed run posted was read back into its own items; the second run wrote only the rest.
        killed = json.loads(env.run("history", "show", str(runs[1]["id"]), "--json").output)["items"]
        finished = json.loads(env.run("history", "show", str(runs[0]["id"]), "--json").output)["items"]
        written = {i["customer"] for i in killed if i["outcome"] == "updated"}
        assert len(written) == posted_before
        assert written.isdisjoint(i["customer"] for i in finished if i["outcome"] == "updated")
        assert len([i for i in finished if i["outcome"] == "updated"]) == 12 - posted_before

    def test_a_corrupt_history_database_is_an_error_and_is_left_as_found(self, env: Env) -> None:
        env.run("schedule", "set", "--daily", "--hour", "6", "--timezone", "UTC", now="2026-11-26T12:00:00Z")
        env.state_dir.mkdir(parents=True)
        db = env.state_dir / "state.db"
        db.write_bytes(b"this is not a database" * 100)
        before = db.read_bytes()
        for args, now in ((["status"], "2026-11-26T13:00:00Z"), (["run", "--scheduled"], "2026-11-27T06:00:00Z")):
            result = env.run(*args, now=now)
            assert result.exit_code == 7
            assert last_line(result.output) == (
                f"Error: history database {db} is corrupt (file is not a database); it was left unchanged. "
                "Moving it aside starts a fresh history, but loses the record of which occurrences already ran")
        assert db.read_bytes() == before

    def test_a_locked_history_database_is_a_one_line_error_and_nothing_runs(self, env: Env, sandbox: Sandbox) -> None:
        configure(env, sandbox, free_port())
        history_for(env.state_dir, None).conn.close()  # create it
        blocker = sqlite3.connect(str(env.state_dir / "state.db"))
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            result = run(["run", "--yes"])
        finally:
            blocker.rollback()
            blocker.close()
        assert result.returncode == 7
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"Error: history database {env.state_dir / 'state.db'} is locked")
        assert sandbox.patches() == [] and history(env) == []


SECRET_KEY = "PRIV-9f3b2c-do-not-leak"
SMTP_PASSWORD = "smtp-pw-71c4e0-do-not-leak"
WRONG_KEY = "WRONG-5e8a1d-do-not-leak"


class TestSecrets:
    def test_no_secret_reaches_output_logs_history_email_json_or_crontab(self, env: Env) -> None:
        with Sandbox.sample(customers=6, seed=3, private_key=SECRET_KEY) as sandbox:
            configure(env, sandbox, free_port())
            basic = base64.b64encode(f"{sandbox.company}+{sandbox.public_key}:{SECRET_KEY}".encode()).decode()
            edit_config(env, notify={"smtp": {"username": "psabill", "password_env": "SMTP_PW", "security": "none"}})
            outputs: List[str] = []

            def record(args: Sequence[str], **extra: str) -> None:
                proc = run(["--verbose", *args], SMTP_PW=SMTP_PASSWORD, **extra)
                outputs.extend([proc.stdout, proc.stderr])

            record(["run", "--scheduled"], PSABILL_NOW=SCHEDULED_NOW)  # runs; the email fails (no SMTP)
            record(["run", "--yes", "--json"])
            record(["run", "--dry-run"])
            record(["check", "--json"])
            for args in (["status", "--json"], ["history", "--json"], ["history", "show", "1", "--json"],
                         ["history", "show", "1", "--csv"], ["email", "preview"], ["email", "resend", "1"],
                         ["cron", "show"], ["schedule", "show", "--json"]):
                record(args)
            (env.config.parent / "cw-key").write_text(WRONG_KEY)
            record(["run", "--yes"])  # authentication refused
            record(["check"])
            (env.config.parent / "cw-key").write_text(SECRET_KEY)
            sandbox.die_after(0)
            record(["run", "--yes"])  # unreachable
        edit_config(env, notify=file_outbox(env))
        record(["email", "resend", "1"])
        record(["email", "test"])
        written = _everything_written(env)
        names = {p.name for p in written}
        assert {"config.toml", "crontab", "state.db", "psabill.log"} <= names
        assert any(name.endswith(".eml") for name in names)
        haystacks = outputs + [p.read_bytes().decode("utf-8", "replace") for p in written]
        for secret in (SECRET_KEY, basic, SMTP_PASSWORD, WRONG_KEY):
            leaks = [h[:200] for h in haystacks if secret in h]
            assert leaks == [], f"{secret!r} leaked"

    def test_the_state_dir_is_0700_and_the_config_0600_owned_by_the_user(self, env: Env) -> None:
        env.run("schedule", "set", "--daily", "--hour", "6", "--timezone", "UTC", now="2026-11-26T12:00:00Z")
        env.make_ready()
        env.run("run", "--scheduled", now="2026-11-27T06:00:00Z")
        assert stat.S_IMODE(env.state_dir.stat().st_mode) == 0o700
        assert stat.S_IMODE(env.config.stat().st_mode) == 0o600
        assert env.config.stat().st_uid == os.getuid() and env.state_dir.stat().st_uid == os.getuid()
        assert stat.S_IMODE((env.state_dir / "state.db").stat().st_mode) == 0o600


def _everything_written(env: Env) -> List[Path]:
    skip = {env.config.parent / "cw-key"}  # the secret's own file
    return [p for p in env.tmp.rglob("*") if p.is_file() and p not in skip and "home" not in p.parts]


class TestHostileInput:
    @pytest.mark.parametrize(
        "notify, message",
        [
            ("a@msp.example\r\nBcc: x@evil.example", "Error: address list 'a@msp.example\\r\\nBcc: x@evil.example' "
                                                     "contains a line break"),
            ("a@msp.example\nb@msp.example", "Error: address list 'a@msp.example\\nb@msp.example' contains a line break"),
        ],
        ids=["crlf_header_injection", "bare_lf"],
    )
    def test_an_address_with_a_line_break_is_refused(self, env: Env, notify: str, message: str) -> None:
        result = env.run("schedule", "set", "--daily", "--hour", "6", "--timezone", "UTC", "--notify", notify)
        assert result.exit_code == 2
        assert result.output.strip() == message
        assert env.snapshot() == {"config": None, "crontab": None}

    def test_customer_names_stay_inert_in_the_csv_export(self, env: Env, sandbox: Sandbox) -> None:
        configure(env, sandbox, free_port())
        usage = env.config.parent / "usage.csv"
        write_old(usage, usage.read_text() + '=HYPERLINK("http://evil.example"),LastPass,3,\n'
                                              "+cmd,LastPass,2,\n@SUM(A1),LastPass,1,\n")
        env.run("run", "--dry-run", now=SCHEDULED_NOW)
        out = env.run("history", "show", "1", "--csv").output
        assert "'=HYPERLINK" in out and "'+cmd" in out and "'@SUM(A1)" in out
        import csv
        import io

        cells = [row[0] for row in csv.reader(io.StringIO(out))]
        assert not any(cell[:1] in "=+-@" for cell in cells if cell)
        assert "\"<b>Acme & Co</b>\"" in out or "<b>Acme & Co</b>" in out

    def test_a_zone_this_hosts_tzdata_does_not_know_is_named(self, env: Env) -> None:
        env.config.parent.mkdir(parents=True)
        env.config.write_text('[account]\ntimezone = "America/Atlantis"\n')
        result = env.run("status")
        assert result.exit_code == 3
        assert last_line(result.output) == (
            f"Error: {env.config}: account.timezone = 'America/Atlantis': unknown time zone "
            "(use an IANA name such as America/New_York)")


_TOML_KEYS = st.sampled_from(["version", "account", "schedule", "notify", "psa", "products", "hour", "mode",
                              "timezone", "emails", "day", "x", "source", "catch_up"])
_TOML_VALUES = st.one_of(st.integers(-5, 40), st.booleans(), st.text(max_size=12),
                         st.lists(st.text(max_size=8), max_size=3), st.just("last"), st.just("America/New_York"))


class TestFuzz:
    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.text(max_size=300))
    def test_arbitrary_text_gives_a_config_or_a_one_line_error(self, tmp_path: Path, text: str) -> None:
        _load_or_clean_error(tmp_path, text.encode("utf-8", "surrogatepass"))

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.dictionaries(_TOML_KEYS, st.one_of(_TOML_VALUES, st.dictionaries(_TOML_KEYS, _TOML_VALUES)),
                           max_size=5))
    def test_toml_shaped_noise_gives_a_config_or_a_one_line_error(self, tmp_path: Path, doc: dict) -> None:
        import tomli_w

        _load_or_clean_error(tmp_path, tomli_w.dumps(doc).encode())


def _load_or_clean_error(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "fuzz.toml"
    path.write_bytes(data)
    os.chmod(path, 0o600)
    try:
        loaded = config.load(path)
    except PsabillError as exc:
        assert "\n" not in exc.message and str(path) in exc.message
        return
    try:  # a config that loads must also give a schedule or a clean error
        loaded.when
    except PsabillError as exc:
        assert "\n" not in exc.message


class TestLogging:
    def test_the_log_rotates_by_size_and_verbose_echoes_it(self, env: Env, sandbox: Sandbox) -> None:
        configure(env, sandbox, free_port())
        edit_config(env, log={"max_bytes": 300, "backups": 2})
        for _ in range(6):  # about 200 bytes a run: enough to rotate past both backups
            proc = run(["--verbose", "run", "--dry-run"])
            assert "psabill: run " in proc.stderr
        logs = sorted(p.name for p in env.state_dir.glob("psabill.log*"))
        assert logs == ["psabill.log", "psabill.log.1", "psabill.log.2"]

    def test_under_cron_a_clean_run_prints_nothing_and_a_failing_one_speaks(self, env: Env, sandbox: Sandbox) -> None:
        configure(env, sandbox, free_port())
        edit_config(env, notify=file_outbox(env))
        usage = env.config.parent / "usage.csv"
        write_old(usage, "customer,sku,seats,psa_company\nCUST00001,LastPass,5,\n")
        clean = run(["run", "--scheduled"], PSABILL_NOW=SCHEDULED_NOW)
        assert (clean.returncode, clean.stdout, clean.stderr) == (0, "", "")
        write_old(usage, "customer,sku,seats,psa_company\nGLOBEX,LastPass,5,\n")
        failing = run(["run", "--scheduled"], PSABILL_NOW="2026-12-08T14:00:00Z")
        assert failing.returncode == 1
        assert "FAILED GLOBEX / LastPass" in failing.stdout
