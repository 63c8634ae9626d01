"""Issue 23, "hostile input, secrets and hangs, round three": one test per point, named after its rule.

Every test drives the real CLI (in process through Click's runner, or as a
real ``python -m psabill`` process where a signal, a kill or the cron fast
path matters) against real files, real SQLite or PostgreSQL, the loopback
ConnectWise sandbox, a loopback HTTP stand-in for hostile answers and an
aiosmtpd server. Secrets are looked for with :mod:`support.leaks`: the secret
and every 12-character piece of it, plain, base64 and percent-encoded, in
stdout, stderr, ``--json``, the log, the ledger rows and the emails.
"""

from __future__ import annotations

import asyncio
import csv
import email
import email.policy
import io
import json
import os
import pwd
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from datetime import date, datetime
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import pytest
import tomli_w

from psabill.cli import cli as psabill_cli
from support.env import SCHEDULED_NOW, Env, free_port, separate_runner, tomllib, write_old
from support.leaks import Leaks, assert_no_leak, outputs_of
from support.rawpsa import RawPsa

PSABILL = [sys.executable, "-m", "psabill"]
DOCUMENTED = {0, 1, 2, 3, 4, 5, 6, 7, 8, 130, 143}
SAVED = "2026-11-26T12:00:00Z"
DUE = SCHEDULED_NOW  # the daily 14:00 UTC occurrence
NEXT_FIRING = "2026-12-01T15:00:00Z"  # the hourly retry line, within catch-up (24 h)
LATER_FIRING = "2026-12-01T16:00:00Z"


# -- helpers ---------------------------------------------------------------------------------------------


def run(args: Sequence[str], *, timeout: float = 120, **env: str) -> "subprocess.CompletedProcess[str]":
    return subprocess.run([*PSABILL, *args], capture_output=True, text=True, env={**os.environ, **env},
                          timeout=timeout)


def one_error_line(stderr: str, code: int) -> str:
    assert code in DOCUMENTED - {0}, (code, stderr)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


def cli(env: Env, *args: str, now: Optional[str] = None) -> Any:
    """The CLI in process, with stderr apart from stdout."""
    extra = {"PSABILL_NOW": now} if now else {}
    return separate_runner().invoke(psabill_cli, list(args), env=extra, catch_exceptions=False)


def edit(env: Env, **sections: Dict[str, Any]) -> None:
    """Merge ``sections`` into the config (dotted names for sub-tables: ``notify.smtp``)."""
    data = tomllib.loads(env.config.read_text()) if env.config.exists() else {}
    for name, values in sections.items():
        table = data
        for part in name.split("."):
            table = table.setdefault(part, {})
        table.update(values)
    env.config.parent.mkdir(parents=True, exist_ok=True)
    env.config.write_text(tomli_w.dumps(data))
    os.chmod(env.config, 0o600)


def daily(env: Env) -> None:
    """A daily 14:00 UTC schedule (due at DUE) with the one-customer sandbox and a file outbox."""
    result = env.run("schedule", "set", "--daily", "--hour", "14", "--timezone", "UTC", now=SAVED)
    assert result.exit_code == 0, result.output
    env.make_ready()


def ledger_rows(env: Env) -> List[Dict[str, Any]]:
    conn = sqlite3.connect(env.state_dir / "state.db")
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM runs ORDER BY id")]
    finally:
        conn.close()


def written(env: Env) -> List[Path]:
    """Where psabill writes: the state dir (ledger, log, outbox) and the test's outbox."""
    return [env.state_dir, env.tmp / "outbox"]


# -- 9. a report that was never delivered ----------------------------------------------------------------


class StallingSink:
    """aiosmtpd handler: the first DATA stalls (psabill is killed meanwhile); later ones are kept."""

    def __init__(self) -> None:
        self.in_data = threading.Event()
        self.messages: List[bytes] = []
        self.stalls = 1

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.stalls:
            self.stalls -= 1
            self.in_data.set()
            await asyncio.sleep(60)
            return "451 too late"
        self.messages.append(envelope.original_content or envelope.content)
        return "250 OK"


@pytest.fixture
def stalling_smtp() -> Iterator[Tuple[int, StallingSink]]:
    from aiosmtpd.controller import Controller

    sink = StallingSink()
    controller = Controller(sink, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield controller.port, sink
    finally:
        controller.stop()


class TestPoint9AnUndeliveredReportIsShownAndResent:
    def test_a_report_whose_delivery_was_never_confirmed_is_shown_undelivered_and_resent_within_catch_up(
            self, env: Env, stalling_smtp: Tuple[int, StallingSink]) -> None:
        """kill -9 during SMTP DATA: ``status`` (text and --json) shows the report undelivered, and the next
        firing of the hourly crontab line (through the cron fast path, ``python -m psabill run --scheduled``)
        re-sends it with the same Message-ID; later firings send nothing more."""
        port, sink = stalling_smtp
        daily(env)
        edit(env, notify={"emails": ["billing@msp.example"], "transport": "smtp"},
             **{"notify.smtp": {"host": "127.0.0.1", "port": port, "security": "none", "timeout": 60}})
        assert env.run("cron", "install", now=SAVED).exit_code == 0
        lines = [line for line in env.crontab.read_text().splitlines() if "run --scheduled" in line]
        assert any(line.split()[1] == "*" for line in lines), lines  # the hourly retry line fires at 15:00

        proc = subprocess.Popen([*PSABILL, "run", "--scheduled"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env={**os.environ, "PSABILL_NOW": DUE})
        try:
            assert sink.in_data.wait(60), "psabill never reached SMTP DATA"
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == -signal.SIGKILL
        [row] = ledger_rows(env)
        assert (row["status"], row["email_status"]) == ("success", "pending")
        message_id = row["message_id"]
        assert message_id and message_id.startswith("<psabill.run-1.")

        text = cli(env, "status", now="2026-12-01T14:30:00Z")
        assert text.exit_code == 0, text.output
        assert ("Report:     NOT delivered for run 1 (pending: being handed to the mailer; its delivery was never "
                "confirmed); the next firing within catch-up sends it again, or 'psabill email resend 1'") \
            in text.stdout
        shown = json.loads(cli(env, "status", "--json", now="2026-12-01T14:30:00Z").stdout)
        assert shown["undelivered"] == {"run": 1, "email": "pending", "message_id": message_id,
                                        "message": "being handed to the mailer; its delivery was never confirmed",
                                        "resent_by_next_firing": True}
        assert shown["notify"]["report"].startswith("NOT delivered for run 1")

        again = run(["run", "--scheduled"], PSABILL_NOW=NEXT_FIRING)  # the cron line: entry's fast path first
        assert (again.returncode, again.stdout, again.stderr) == (0, "", "")
        assert len(sink.messages) == 1
        resent = email.message_from_bytes(sink.messages[0], policy=email.policy.default)
        assert resent["Message-ID"] == message_id
        assert resent["X-Psabill-Run"] == "1"
        from psabill.notify.message import message_id as stable_id
        from psabill.report import Run

        assert stable_id(Run(trigger="scheduled", started_at=datetime.fromisoformat(row["started_at"]), id=1,
                             account=row["account"]), "psabill@msp.example") == message_id
        [row] = ledger_rows(env)
        assert (row["email_status"], row["message_id"]) == ("sent", message_id)
        assert "NOT delivered" not in cli(env, "status", now=NEXT_FIRING).stdout
        assert json.loads(cli(env, "status", "--json", now=NEXT_FIRING).stdout)["undelivered"] is None
        assert "run 1: its undelivered report (pending) was sent again" in (env.state_dir / "psabill.log").read_text()

        later = run(["run", "--scheduled"], PSABILL_NOW=LATER_FIRING)
        assert (later.returncode, later.stdout, later.stderr) == (0, "", "")
        assert len(sink.messages) == 1 and len(ledger_rows(env)) == 1  # nothing re-sent, nothing re-run


    def test_a_report_that_cannot_be_resent_says_so_once_and_each_firing_within_catch_up_tries_again(
            self, env: Env) -> None:
        from support.smtp import smtp_sink

        daily(env)
        edit(env, notify={"emails": ["billing@msp.example"], "transport": "smtp"},
             **{"notify.smtp": {"host": "127.0.0.1", "port": closed_port(), "security": "none", "timeout": 5}})
        first = run(["run", "--scheduled"], PSABILL_NOW=DUE)
        line = one_error_line(first.stderr, first.returncode)
        assert first.returncode == 5 and line.startswith("Error: the run was recorded, but its report email failed: ")
        assert ledger_rows(env)[0]["email_status"] == "failed"
        assert "NOT delivered for run 1 (failed: cannot connect to SMTP server" in cli(env, "status", now=DUE).stdout

        quiet = run(["run", "--scheduled"], PSABILL_NOW=NEXT_FIRING)  # failing as before: cron was told once
        assert (quiet.returncode, quiet.stdout, quiet.stderr) == (5, "", "")
        assert "run 1: re-sending its undelivered report failed" in (env.state_dir / "psabill.log").read_text()

        conn = sqlite3.connect(env.state_dir / "state.db")  # as a kill -9 mid-delivery leaves it
        with conn:
            conn.execute("UPDATE runs SET email_status = 'pending' WHERE id = 1")
        conn.close()
        loud = run(["run", "--scheduled"], PSABILL_NOW=LATER_FIRING)
        assert loud.returncode == 5 and one_error_line(loud.stderr, loud.returncode).startswith(
            "Error: run 1's report was never confirmed delivered, and sending it again failed: cannot connect to "
            "SMTP server 127.0.0.1:")
        assert loud.stderr.rstrip().endswith("(the next firing within catch-up tries again, or "
                                             "'psabill email resend 1')")

        with smtp_sink() as (port, sink):
            edit(env, **{"notify.smtp": {"port": port}})
            fixed = run(["run", "--scheduled"], PSABILL_NOW="2026-12-01T17:00:00Z")
            assert (fixed.returncode, fixed.stdout, fixed.stderr) == (0, "", "")
        [envelope] = sink.envelopes
        [row] = ledger_rows(env)
        assert row["email_status"] == "sent"
        assert email.message_from_bytes(envelope.original_content, policy=email.policy.default)["Message-ID"] == \
            row["message_id"]


# -- loopback stand-ins for hostile PSA answers ------------------------------------------------------------


@pytest.fixture
def raw_psa() -> Iterator[Any]:
    made: List[RawPsa] = []

    def start(answer: Any) -> RawPsa:
        made.append(RawPsa(answer))
        return made[-1]

    yield start
    for server in made:
        server.close()


def point_psa_at(env: Env, url: str) -> None:
    edit(env, psa={"url": url})


def closed_port() -> int:
    return free_port()  # bound and released: nothing listens there


# -- 1. a config error about a secret names the key, never the value -----------------------------------------

NUMBER = 98765432123456
SECRET_VALUES: Dict[str, Tuple[str, str, Any, str, str]] = {
    # case: (section, key, value, the text that must never show, the problem)
    "a-number": ("psa", "private_key", NUMBER, str(NUMBER), "expected a string"),
    "a-float": ("psa", "private_key", 9876543212345.25, "9876543212345.25", "expected a string"),
    "a-line-break": ("psa", "private_key", "Zq7-first-line-4c1e\nZq7-second-line-9b", "Zq7-first-line-4c1e",
                     "must not contain a line break"),
    "a-line-separator": ("psa", "private_key", "Zq7-first-line-4c1e\u2028Zq7-second-line-9b", "Zq7-first-line-4c1e",
                         "must not contain a line break"),
    "a-control-character": ("psa", "private_key", "Zq7-secret-\x1b-value-4c1e9b", "Zq7-secret-", 
                            "must not contain a control character"),
    "a-list": ("notify.smtp", "password", ["Zq7-listed-secret-4c1e9b"], "Zq7-listed-secret-4c1e9b",
               "expected a string"),
    "a-table": ("source", "api_key", {"value": "Zq7-tabled-secret-4c1e9b"}, "Zq7-tabled-secret-4c1e9b",
                "expected a string"),
    "a-date": ("psa", "private_key", date(2031, 12, 25), "2031-12-25", "expected a string"),
    # a key whose name marks a credential: its _file and _env forms never show their value either
    "a-secret-file-key": ("notify.smtp", "password_file", NUMBER, str(NUMBER), "expected a string"),
    "a-secret-env-key": ("psa", "private_key_env", ["Zq7-pasted-secret-4c1e9b"], "Zq7-pasted-secret-4c1e9b",
                         "expected a string"),
}
CONFIG_COMMANDS: List[Tuple[str, ...]] = [("status",), ("status", "--json"), ("config", "show"),
                                          ("config", "show", "--json"), ("check",), ("check", "--json"),
                                          ("run", "--scheduled"), ("run", "--yes"), ("run", "--dry-run"),
                                          ("history",), ("schedule", "show"), ("email", "preview")]


class TestPoint1ConfigErrorsAboutSecretsNameTheKeyNeverTheValue:
    @pytest.mark.parametrize("case", sorted(SECRET_VALUES))
    def test_a_config_error_about_a_secret_key_names_the_key_and_the_problem_never_the_value(
            self, env: Env, case: str) -> None:
        section, key, value, hidden, problem = SECRET_VALUES[case]
        daily(env)
        if section == "psa":
            data = tomllib.loads(env.config.read_text())
            data["psa"].pop("private_key_file", None)  # the bad literal is the only form given
            env.config.write_text(tomli_w.dumps(data))
        edit(env, **{section: {key: value}})
        outputs: List[Tuple[str, str]] = []
        for args in CONFIG_COMMANDS:
            result = cli(env, *args, now=DUE)
            outputs += outputs_of(" ".join(args), result)
            line = one_error_line(result.stderr, result.exit_code)
            assert result.exit_code == 3, (args, result.stderr)
            assert line == f"Error: {env.config}: {section}.{key}: {problem}", (args, line)
        proc = run(["run", "--scheduled"], PSABILL_NOW=DUE)  # what cron runs: the fast path, then the CLI
        outputs += outputs_of("cron", proc)
        assert one_error_line(proc.stderr, proc.returncode) == f"Error: {env.config}: {section}.{key}: {problem}"
        assert Leaks(hidden).found(roots=[env.config]), "the checker sees the value where it really is"
        assert_no_leak(hidden, outputs=outputs, roots=written(env))


# -- 2. the userinfo password of any URL is masked everywhere ----------------------------------------------

URL_PASSWORD = "Zq7pw-4c1e9b-do-not-leak"
ENCODED_PASSWORD = "Zq7%40pw-4c1e9b-do-not-leak"  # the password "Zq7@pw-4c1e9b-do-not-leak"


class TestPoint2UrlPasswordsAreMaskedEverywhere:
    @pytest.mark.parametrize("where", ["state-url", "state-url-bad-escape", "psa-url", "psa-url-query", "ping-url",
                                       "history-url", "site-url"])
    def test_the_userinfo_password_of_any_url_is_masked_in_output_log_history_email_and_json(
            self, env: Env, where: str) -> None:
        daily(env)
        sandbox = env.sandbox()
        edit(env, notify={"emails": ["billing@msp.example"]})
        port = closed_port()
        secrets = [URL_PASSWORD, ENCODED_PASSWORD, ENCODED_PASSWORD.replace("%40", "@")]
        if where == "state-url":
            edit(env, state={"url": f"postgresql://psabill:{URL_PASSWORD}@127.0.0.1:{port}/billing"})
        elif where == "state-url-bad-escape":
            edit(env, state={"url": f"postgresql://psabill@127.0.0.1:{port}/billing?password=Zq7%zz{URL_PASSWORD}"})
        elif where == "psa-url":
            scheme, rest = sandbox.url.split("://")
            point_psa_at(env, f"{scheme}://billing:{ENCODED_PASSWORD}@{rest}")
        elif where == "psa-url-query":  # found by the fuzzer: the config's identity, in every ledger row
            point_psa_at(env, f"{sandbox.url}?password={URL_PASSWORD}")
        elif where == "ping-url":
            edit(env, notify={"ping_url": f"http://monitor:{URL_PASSWORD}@127.0.0.1:{port}/ping"})
        elif where == "history-url":
            edit(env, notify={"history_url": f"https://billing:{ENCODED_PASSWORD}@billing.msp.example/runs/{{run_id}}"})
        else:
            edit(env, history={"site_url": f"https://billing:{URL_PASSWORD}@billing.msp.example/site"})
        outputs: List[Tuple[str, str]] = []
        for args in [("config", "show"), ("config", "show", "--json"), ("status",), ("status", "--json"),
                     ("check",), ("check", "--json"), ("run", "--scheduled"), ("run", "--yes", "--json"),
                     ("history", "--json"), ("history", "show", "--json"), ("history", "show", "--csv"),
                     ("email", "preview"), ("email", "preview", "--html"), ("email", "resend", "1")]:
            result = cli(env, *args, now=DUE)
            outputs += outputs_of(" ".join(args), result)
            assert result.exit_code in DOCUMENTED, (args, result.exit_code, result.stderr)
            if result.exit_code not in (0, 1):
                one_error_line(result.stderr, result.exit_code)
        shown = cli(env, "config", "show").stdout
        if where == "state-url":
            assert f'url = "postgresql://psabill:***@127.0.0.1:{port}/billing"' in shown
        if where == "psa-url":
            assert "billing:***@" in shown
        proc = run(["--verbose", "run", "--scheduled"], PSABILL_NOW="2026-12-02T14:00:00Z")
        outputs += outputs_of("cron", proc)
        log = env.state_dir / "psabill.log"
        if where in ("ping-url", "psa-url", "psa-url-query", "history-url", "site-url"):
            assert log.is_file() and list((env.tmp / "outbox").glob("*.eml")), "the run, its log and email exist"
        if where == "ping-url":
            assert f"monitor:***@127.0.0.1:{port}/ping" in log.read_text()
        assert Leaks(*secrets).found(roots=[env.config]), "the checker sees the password where it really is"
        assert_no_leak(*secrets, outputs=outputs, roots=written(env))


# -- 3. the mailer gets the same owner and mode check as every program -------------------------------------

MAILER = '#!/bin/sh\ncat > "$0.got"\n'


class TestPoint3TheMailerIsCheckedLikeEveryProgram:
    @pytest.mark.parametrize("case", ["world-writable", "group-writable", "another-user", "script-argument",
                                      "relative-to-the-config"])
    def test_the_mailer_passes_the_owner_and_mode_check_and_a_relative_one_is_found_next_to_the_config(
            self, env: Env, case: str) -> None:
        daily(env)
        bin_dir = env.config.parent / "bin"
        bin_dir.mkdir()
        mailer = bin_dir / "mailer"
        mailer.write_text(MAILER)
        os.chmod(mailer, 0o700)
        command = ["bin/mailer", "-t"]
        if case == "world-writable":
            os.chmod(mailer, 0o777)
        elif case == "group-writable":
            os.chmod(mailer, 0o770)
        elif case == "another-user":
            if os.geteuid() != 0:
                pytest.fail("chown to another user needs root (the CI runs as root)")
            os.chown(mailer, 65534, 65534)
        elif case == "script-argument":  # `sh bin/mailer`: the script the interpreter runs is checked too
            os.chmod(mailer, 0o666)
            command = ["sh", "bin/mailer"]
        edit(env, notify={"emails": ["billing@msp.example"], "transport": "sendmail"},
             **{"notify.sendmail": {"command": command}})
        elsewhere = env.tmp / "elsewhere"
        (elsewhere / "bin").mkdir(parents=True)
        decoy = elsewhere / "bin" / "mailer"  # what a working-directory lookup would have run
        decoy.write_text(MAILER)
        os.chmod(decoy, 0o700)

        proc = subprocess.run([*PSABILL, "run", "--scheduled"], capture_output=True, text=True, timeout=120,
                              cwd=str(elsewhere), env={**os.environ, "PSABILL_NOW": DUE})
        assert not Path(str(decoy) + ".got").exists(), "a relative mailer must never resolve against the cwd"
        if case == "relative-to-the-config":
            assert (proc.returncode, proc.stderr) == (0, "")
            assert Path(str(mailer) + ".got").read_bytes().startswith(b"Subject: ") or \
                b"X-Psabill-Run: 1" in Path(str(mailer) + ".got").read_bytes()
            assert ledger_rows(env)[0]["email_status"] == "sent"
            return
        assert not Path(str(mailer) + ".got").exists(), "a mailer someone else could have written never runs"
        line = one_error_line(proc.stderr, proc.returncode)
        assert proc.returncode == 5
        shown = str(mailer)
        fix = f"run 'chown {pwd.getpwuid(os.getuid()).pw_name} {shown}'" if case == "another-user" \
            else f"run 'chmod go-w {shown}'"
        assert line.startswith("Error: the run was recorded, but its report email failed: ")
        assert shown in line and fix in line and line.endswith("(retry with 'psabill email resend 1')")
        [row] = ledger_rows(env)
        assert (row["status"], row["email_status"]) == ("success", "failed")
        check = cli(env, "check", now=DUE)
        assert check.exit_code != 0 and fix in check.stdout + check.stderr
        assert not Path(str(mailer) + ".got").exists()


# -- 4. every wait has a bound and one clear line at its end -----------------------------------------------


def endless_pages(server_url: str) -> Any:
    """ConnectWise paging whose ``Link: next`` never ends: every page brings a new row and a next link.

    ConnectWise's navigable paging answers a ``Link`` header with ``rel="next"`` (pageSize at most 1,000):
    ConnectWise's "PSA Pagination" developer guide (mirrored at
    https://gitea.resolutionflow.com/chihlasm/resolutionflow/src/branch/main/docs/connectwise/best-practices/PSA-Pagination.md)
    and https://www.thelazyadministrator.com/2024/06/06/how-the-connectwise-manage-api-handles-pagination-with-powershell/
    """
    from urllib.parse import parse_qs, urlsplit

    def answer(path: str) -> Tuple[int, Dict[str, str], bytes]:
        split = urlsplit(path)
        page = int(parse_qs(split.query).get("page", ["1"])[0])
        rows = [{"id": page, "identifier": f"CUST{page:05d}", "name": f"Customer {page}", "deletedFlag": False}]
        link = f'<{server_url}{split.path}?page={page + 1}&pageSize=1000>; rel="next"'
        return 200, {"Link": link}, json.dumps(rows).encode()

    return answer


class TestPoint4EveryWaitIsBounded:
    @pytest.mark.parametrize("case", ["config-fifo", "source-fifo", "source-device", "psa-ca-file-fifo",
                                      "smtp-ca-file-fifo", "template-fifo", "postgres-runs-locked",
                                      "paging-that-never-ends"])
    def test_every_wait_has_a_bound_and_one_clear_line_at_its_end(
            self, env: Env, case: str, raw_psa: Any, request: pytest.FixtureRequest,
            monkeypatch: pytest.MonkeyPatch) -> None:
        daily(env)
        started = time.monotonic()
        if case == "config-fifo":
            env.config.unlink()
            os.mkfifo(env.config, 0o600)
            proc = run(["run", "--scheduled"], timeout=60, PSABILL_NOW=DUE)  # no writer ever comes
            assert one_error_line(proc.stderr, proc.returncode) == (
                f"Error: config {env.config} is a FIFO (named pipe), not a regular file: point it at a file")
            assert proc.returncode == 3
        elif case in ("source-fifo", "source-device"):
            source = env.config.parent / "usage.csv"
            source.unlink()
            if case == "source-fifo":
                os.mkfifo(source, 0o600)
            elif os.geteuid() == 0:
                os.mknod(source, stat.S_IFCHR | 0o600, os.makedev(1, 5))  # a private /dev/zero: endless bytes
            else:
                pytest.fail("making a device node needs root (the CI runs as root)")
            proc = run(["run", "--scheduled"], timeout=60, PSABILL_NOW=DUE)
            line = one_error_line(proc.stderr, proc.returncode)
            kind = "a FIFO (named pipe)" if case == "source-fifo" else "a device"
            assert proc.returncode == 4 and f"{source} is {kind}, not a regular file" in line, line
            # the lock went with the refusal: the next firing runs at once
            source.unlink()
            write_old(source, "customer,sku,seats\nCUST00001,LastPass,10\n")
            assert run(["run", "--scheduled"], timeout=60, PSABILL_NOW="2026-12-01T15:00:00Z").returncode == 0
        elif case in ("psa-ca-file-fifo", "smtp-ca-file-fifo", "template-fifo"):
            # OpenSSL opens a cafile itself, and would wait for a FIFO's writer forever; Jinja2 skips a FIFO.
            fifo = env.config.parent / ("templates" if case == "template-fifo" else "ca.pem")
            if case == "template-fifo":
                fifo.mkdir(mode=0o700)
                fifo = fifo / "body.txt"
            os.mkfifo(fifo, 0o600)
            edit(env, notify={"emails": ["billing@msp.example"]})
            if case == "psa-ca-file-fifo":
                edit(env, psa={"ca_file": "ca.pem"})
                what, code = "[psa] ca_file", 3  # found before any request: a config error
            elif case == "smtp-ca-file-fifo":
                edit(env, notify={"transport": "smtp"}, **{"notify.smtp": {
                    "host": "127.0.0.1", "port": closed_port(), "security": "starttls", "ca_file": "ca.pem"}})
                what, code = "[notify.smtp] ca_file", 5
            else:
                edit(env, notify={"template_dir": "templates"})
                what, code = "template", 5
            proc = run(["run", "--scheduled"], timeout=60, PSABILL_NOW=DUE)
            line = one_error_line(proc.stderr, proc.returncode)
            assert proc.returncode == code and f"{what} {fifo} is a FIFO (named pipe), not a regular file" in line, \
                (proc.returncode, line)
            assert "[psa] [psa]" not in line
        elif case == "postgres-runs-locked":
            import psycopg

            from support.pg import fresh_schema

            url = fresh_schema(request.getfixturevalue("pg_server"))
            monkeypatch.setenv("PSABILL_STATE_URL", url)
            assert cli(env, "run", "--yes", now="2026-11-30T12:00:00Z").exit_code == 0  # the schema exists
            monkeypatch.setattr("psabill.ledger.dialect.LOCK_TIMEOUT", 2.0)  # 30 s in production
            holder = psycopg.connect(url)
            try:
                holder.execute("LOCK TABLE runs IN ACCESS EXCLUSIVE MODE")  # held until the rollback
                started = time.monotonic()
                result = cli(env, "run", "--scheduled", now=DUE)
                waited = time.monotonic() - started
            finally:
                holder.rollback()
                holder.close()
            line = one_error_line(result.stderr, result.exit_code)
            assert result.exit_code == 7
            assert "another session has held a lock for more than 2s" in line and "nothing was changed" in line
            assert 1.5 < waited < 20, waited
        else:
            psa = raw_psa(lambda path: (200, {}, b"[]"))
            psa.answer = endless_pages(psa.url)
            point_psa_at(env, psa.api_url)
            result = cli(env, "run", "--yes", now=DUE)
            line = one_error_line(result.stderr, result.exit_code)
            assert result.exit_code == 4
            assert "more than 1000 pages of 1000: the paging never ends; nothing is written" in line, line
            pages = len([p for p in psa.requests if p.startswith("/v2025_1/apis/3.0/company/companies")])
            assert 1000 <= pages <= 2 * 1000, pages  # the page cap, for each of the two lists at most (not 20,000)
        assert time.monotonic() - started < 60


# -- 5. no internal error: hostile documents and ids are one line and a documented exit code ---------------

DEEP = 100_000  # far past Python's recursion limit


def nested_json(depth: int = DEEP) -> bytes:
    return b"[" * depth + b"]" * depth


class TestPoint5NoInternalErrors:
    @pytest.mark.parametrize("case", ["psa-json-nested", "psa-error-nested", "toml-array-nested",
                                      "toml-table-nested", "json-source-nested", "agreement-id-A-17",
                                      "agreement-id-17.0"])
    def test_hostile_documents_and_ids_abort_the_run_or_fail_the_item_in_one_line(
            self, env: Env, case: str, raw_psa: Any) -> None:
        daily(env)
        expected_code = 4
        if case == "psa-json-nested":
            psa = raw_psa(lambda path: (200, {}, nested_json()))
            point_psa_at(env, psa.api_url)
        elif case == "psa-error-nested":
            psa = raw_psa(lambda path: (500, {}, b'{"code": "x", "message": ' + nested_json() + b"}"))
            point_psa_at(env, psa.api_url)
        elif case in ("toml-array-nested", "toml-table-nested"):
            text = env.config.read_text()
            deep = ("[" * 5000 + "]" * 5000) if case == "toml-array-nested" else ("{a = " * 5000 + "1" + "}" * 5000)
            env.config.write_text(text.replace("[psa]\n", f"[psa]\nnested = {deep}\n", 1))
            expected_code = 3
        elif case == "json-source-nested":
            write_old(env.config.parent / "usage.json", nested_json().decode())
            edit(env, source={"kind": "json", "path": "usage.json"})
        else:
            sandbox = env.sandbox()
            [aid] = list(sandbox.agreements)
            sandbox.agreements[aid]["id"] = "A-17" if case == "agreement-id-A-17" else 17.0
        outputs: List[Tuple[str, str]] = []
        for args in (("run", "--yes"), ("run", "--dry-run"), ("check",), ("status",)):
            result = cli(env, *args, now=DUE)
            outputs.append((" ".join(args), result.stderr))
            assert result.exit_code != 70 and "Traceback" not in result.stdout + result.stderr, result.stderr
            if args[0] == "run":
                line = one_error_line(result.stderr, result.exit_code)
                assert result.exit_code == expected_code, (args, line)
                if case.startswith("agreement-id"):
                    shown = "'A-17'" if case == "agreement-id-A-17" else "17.0"
                    assert f"agreement id {shown} is not a whole-number id" in line, line
                elif expected_code == 3:
                    assert line == f"Error: {env.config}: malformed TOML: nested too deeply to be a psabill config"
                elif case == "json-source-nested":
                    assert line == (f"Error: usage source {env.config.parent / 'usage.json'}: malformed JSON "
                                    "(nested too deeply to be usage rows)")
                else:
                    assert line.startswith("Error: ConnectWise at ") and "nothing was written" in line, line
                    assert len(line) < 1000, len(line)
        proc = run(["run", "--scheduled"], PSABILL_NOW=DUE)
        assert proc.returncode == expected_code and one_error_line(proc.stderr, proc.returncode)


# -- 6. hostile text is shown, never obeyed ------------------------------------------------------------------

HOSTILE_PSA_MESSAGE = "refused \x9b[2J \u202eevil\u202c\rforged line\n@SUM(1+1)"
LONG_NAME = "N" * 10_000


class TestPoint6HostileTextIsInert:
    def test_hostile_text_is_escaped_in_both_email_parts_json_and_csv_and_long_names_are_cut_in_the_email(
            self, env: Env) -> None:
        """U+202E and C1 controls are shown as escapes in both email parts, ``history show --json`` writes them
        as ``\\uXXXX`` (RFC 8259 section 7 lets any character be escaped so), ``history show --csv`` keeps one
        row per item with no raw CR and no formula cell, a 10,000-character name is cut in the email and kept
        whole in the attached CSV, and a ``javascript:`` history_url is refused at load."""
        from psabill.text.clean import MESSAGE_LIMIT, NAME_LIMIT

        daily(env)
        sandbox = env.sandbox()
        # An error object under HTTP 200: its message reaches the item as ConnectWise wrote it, controls and all.
        sandbox.fail(200, body={"code": "InvalidObject", "message": HOSTILE_PSA_MESSAGE}, method="PATCH")
        write_old(env.config.parent / "usage.csv",
                  "customer,sku,seats\nCUST00001,LastPass,12\n@SUM(1+1)*cmd|' /C calc'!A0,LastPass,3\n"
                  f"Evil\u202eCorp,LastPass,4\n{LONG_NAME},LastPass,5\n")
        edit(env, notify={"emails": ["billing@msp.example"]}, guard={"enabled": False})
        result = cli(env, "run", "--scheduled", now=DUE)
        assert result.exit_code == 1, result.stderr  # a failed item and unmapped customers
        [eml] = list((env.tmp / "outbox").glob("*.eml"))
        raw = eml.read_bytes()
        message = email.message_from_bytes(raw, policy=email.policy.default)
        parts = {part.get_content_type(): part.get_content() for part in message.walk() if not part.is_multipart()}
        text, page = parts["text/plain"], parts["text/html"]
        for body in (text, page):
            assert not any(ch in body for ch in "\u202e\u202c\x9b"), "a control reached the email raw"
            assert "\\u202e" in body and "\\x9b" in body  # shown, as escapes
            assert "N" * (NAME_LIMIT - 1) + "\u2026 (LastPass)" in body or \
                "N" * (NAME_LIMIT - 1) + "\u2026</" in body  # the name, cut where it is listed
            assert "N" * MESSAGE_LIMIT not in body  # a message quoting it is cut too
        csv_part = next(v for k, v in parts.items() if k in ("text/csv", "application/zip"))
        assert LONG_NAME in (csv_part if isinstance(csv_part, str) else csv_part.decode("utf-8-sig"))  # whole
        assert len(raw) < 40_000, len(raw)  # was 149 KB for 3 items

        # The PSA client stores its message cleaned; a ledger an older psabill wrote may hold raw C1 controls.
        conn = sqlite3.connect(env.state_dir / "state.db")
        with conn:
            conn.execute("UPDATE items SET message = message || ? WHERE outcome = 'failed'",
                         (" \x9b[31m \u202e older\rsplit,row\n=cmd",))
        conn.close()
        shown = cli(env, "history", "show", "1", "--json")
        assert shown.exit_code in (0, 1)
        assert not any(ch in shown.stdout for ch in "\u202e\u202c\x9b\r")
        assert "\\u009b" in shown.stdout and "\\u202e" in shown.stdout

        table = cli(env, "history", "show", "1", "--csv").stdout
        rows = list(csv.reader(io.StringIO(table, newline="")))
        items = json.loads(shown.stdout)["items"]
        assert len(rows) == 1 + len(items) == 5  # a CR in a message never splits a row
        assert not any("\r" in cell or "\x9b" in cell for row in rows for cell in row)
        assert any(cell == "'@SUM(1+1)*cmd|' /C calc'!A0" for row in rows for cell in row)
        assert not any(cell.startswith(("=", "+", "-", "@")) and not cell.lstrip("+-").isdigit()
                       for row in rows for cell in row)

        edit(env, notify={"history_url": "javascript:alert(document.cookie)//{run_id}"})
        refused = cli(env, "status")
        assert one_error_line(refused.stderr, refused.exit_code) == (
            f"Error: {env.config}: notify.history_url = 'javascript:alert(document.cookie)//{{run_id}}': "
            "expected a https:// or http:// URL")

    def test_a_notify_list_with_duplicates_gets_one_rcpt_per_address(self, env: Env) -> None:
        """RFC 5321 section 2.4: a domain is case-insensitive (the local part need not be), so 500 addresses
        that are 50 with their domains in two cases get 50 RCPT commands."""
        from support.smtp import smtp_sink

        daily(env)
        addresses = [f"user{i % 50}@{'EXAMPLE.com' if i % 2 else 'example.COM'}" for i in range(500)]
        with smtp_sink() as (port, sink):
            edit(env, notify={"emails": addresses, "transport": "smtp"},
                 **{"notify.smtp": {"host": "127.0.0.1", "port": port, "security": "none", "timeout": 10}})
            result = cli(env, "run", "--scheduled", now=DUE)
            assert result.exit_code == 0, result.stderr
        [envelope] = sink.envelopes
        assert len(envelope.rcpt_tos) == 50 == len({a.lower() for a in envelope.rcpt_tos})


# -- 7. a *_file secret must be 0600 -------------------------------------------------------------------------


class TestPoint7SecretFilesMustBePrivate:
    @pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o400 | 0o040])
    @pytest.mark.parametrize("which", ["psa.private_key_file", "notify.smtp.password_file"])
    def test_a_secret_file_readable_by_group_or_others_is_refused_with_chmod_600_before_any_request(
            self, env: Env, mode: int, which: str) -> None:
        from support.smtp import smtp_sink

        daily(env)
        sandbox = env.sandbox()
        with smtp_sink() as (port, sink):
            if which == "psa.private_key_file":
                secret_file = env.config.parent / "psa-key"
            else:
                secret_file = env.config.parent / "smtp-password"
                secret_file.write_text("Zq7-k3y-4c1e9b-xy81w\n")
                edit(env, notify={"emails": ["billing@msp.example"], "transport": "smtp"},
                     **{"notify.smtp": {"host": "127.0.0.1", "port": port, "security": "none", "username": "psabill",
                                        "password_file": "smtp-password", "timeout": 10}})
            os.chmod(secret_file, mode)
            sandbox.clear_log()
            proc = run(["run", "--scheduled"], PSABILL_NOW=DUE)
            line = one_error_line(proc.stderr, proc.returncode)
            fix = (f"is readable by group or others (mode {mode:04o}): run 'chmod 600 {secret_file}'; "
                   "nothing was sent")
            assert fix in line, line
            if which == "psa.private_key_file":
                assert proc.returncode == 3 and sandbox.requests == []  # not one request to the PSA
                assert line.startswith(f"Error: {env.config}: [psa] private_key_file: {secret_file} ")
            else:
                assert proc.returncode == 5 and sink.envelopes == []  # the run stands; no login was tried
                assert ledger_rows(env)[0]["email_status"] == "failed"
            check = cli(env, "check", now=DUE)
            assert fix in check.stdout + check.stderr
        assert_no_leak(secret_file.read_text().strip(), outputs=outputs_of("cron", proc) + outputs_of("check", check),
                       roots=written(env))


# -- 8. SIGHUP to a manual run is recorded as interrupted ---------------------------------------------------


class TestPoint8Signals:
    @pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGTERM, signal.SIGINT],
                             ids=["SIGHUP", "SIGTERM", "SIGINT"])
    def test_a_signal_to_a_manual_run_records_it_as_interrupted_and_the_next_run_finishes(
            self, env: Env, signum: int) -> None:
        daily(env)
        sandbox = env.sandbox()
        write_old(env.config.parent / "usage.csv", "customer,sku,seats\nCUST00001,LastPass,12\n")
        arrived, release = threading.Event(), threading.Event()

        def hold(method: str, label: str) -> None:  # the run is reading the PSA: nothing is in flight to it
            if method == "GET" and "agreements" in label and not arrived.is_set():
                arrived.set()
                release.wait(30)

        sandbox.before = hold
        proc = subprocess.Popen([*PSABILL, "run", "--yes"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env={**os.environ, "PSABILL_NOW": DUE})
        try:
            assert arrived.wait(60), "the run never read the PSA"
            assert ledger_rows(env)[0]["status"] == "running"
            proc.send_signal(signum)
            time.sleep(0.5)
            release.set()  # the read in flight answers; the run must stop there, not go on to write
            _, err = proc.communicate(timeout=60)
        finally:
            release.set()
            sandbox.before = None
            if proc.poll() is None:
                proc.kill()
        name = signal.Signals(signum).name
        assert proc.returncode == (130 if signum == signal.SIGINT else 143), err
        assert f"Error: interrupted by {name} before it finished" in err and "Traceback" not in err
        [row] = ledger_rows(env)
        assert row["status"] == "interrupted" and row["message"] == f"interrupted by {name} before it finished"
        assert [r.method for r in sandbox.requests if r.method == "PATCH"] == []  # it stopped before writing
        again = run(["run", "--yes"], PSABILL_NOW="2026-12-01T14:10:00Z")
        assert again.returncode == 0, again.stderr
        assert [r["status"] for r in ledger_rows(env)] == ["interrupted", "success"]


# -- 10. the from address is validated at config load ------------------------------------------------------


class TestPoint10TheFromAddressIsValidatedAtLoad:
    @pytest.mark.parametrize("sender, problem", [
        ("psabill@msp.example\u2028Bcc: x@evil.example",
         "notify.from = 'psabill@msp.example\\u2028Bcc: x@evil.example': must not contain a line break"),
        ("psabill@msp.example\r\nBcc: x@evil.example",
         "notify.from = 'psabill@msp.example\\r\\nBcc: x@evil.example': must not contain a line break"),
        ("psabill@msp.example\x85", "notify.from = 'psabill@msp.example\\x85': must not contain a line break"),
        ("not an address", "[notify] from: address 'not an address' is not valid"),
    ], ids=["line-separator", "crlf", "next-line", "not-an-address"])
    def test_a_bad_from_address_fails_at_config_load_for_check_status_and_the_run(
            self, env: Env, sender: str, problem: str) -> None:
        daily(env)
        sandbox = env.sandbox()
        edit(env, notify={"emails": ["billing@msp.example"], "from": sender})
        sandbox.clear_log()
        for args in (("check",), ("status",), ("email", "test"), ("run", "--yes")):
            result = cli(env, *args, now=DUE)
            line = one_error_line(result.stderr, result.exit_code)
            assert result.exit_code == 3 and line.startswith(f"Error: {env.config}: {problem}"), (args, line)
        proc = run(["run", "--scheduled"], PSABILL_NOW=DUE)
        assert proc.returncode == 3 and one_error_line(proc.stderr, proc.returncode).startswith(
            f"Error: {env.config}: {problem}")
        assert sandbox.requests == [] and not (env.state_dir / "state.db").exists()
