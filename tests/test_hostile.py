"""Hostile input, secrets and permissions: each rule of the issue, proved on the class, not one example.

Real processes and real files. We run as root in CI, so "another user" is a
file chowned to nobody (65534), and umask cases run in a subprocess.
"""

from __future__ import annotations

import http.server
import io
import os
import shutil
import socketserver
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from contextlib import redirect_stderr
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Sequence

import pytest

from support.env import SCHEDULED_NOW, Env

PSABILL = [sys.executable, "-m", "psabill"]
NOBODY = 65534
DOCUMENTED = {0, 1, 2, 3, 4, 5, 6, 7, 8, 130, 143}

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")


def run(args: Sequence[str], *, umask: Optional[int] = None, **env: str) -> "subprocess.CompletedProcess[str]":
    preexec: Optional[Callable[[], None]] = None
    if umask is not None:
        chosen = umask

        def preexec() -> None:
            os.umask(chosen)

    return subprocess.run([*PSABILL, *args], capture_output=True, text=True, env={**os.environ, **env},
                          timeout=120, preexec_fn=preexec)


def one_error_line(proc: "subprocess.CompletedProcess[str]") -> str:
    """The run failed with a documented code and said so in exactly one 'Error:' line."""
    assert proc.returncode in DOCUMENTED - {0}, (proc.returncode, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    return lines[0]


def ready(env: Env) -> None:
    """A scheduled config whose run is due at SCHEDULED_NOW and makes no PSA request."""
    result = env.run("schedule", "set", "--daily", "--hour", "14", "--timezone", "UTC", now="2026-11-26T12:00:00Z")
    assert result.exit_code == 0, result.output
    env.make_ready()


def lock_name(env: Env) -> str:
    """The file name of the env config's run lock (each config has its own, named after its identity)."""
    from psabill.config.paths import Paths
    from psabill.config.settings import load

    account = load(env.config, check_addresses=False).account_id
    return Paths(env.config, env.state_dir, None).lock_for(account).name


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


# -- 2. loose files are refused, as ssh refuses a loose authorized_keys ----------------------------------------


def _loosen(path: Path, how: str) -> None:
    """Make ``path`` writable by someone else; a program stays executable, so only the rule can stop it."""
    run_bits = stat.S_IMODE(os.stat(path).st_mode) & 0o111
    if how == "group-writable":
        os.chmod(path, 0o620 | run_bits)
    elif how == "world-writable":
        os.chmod(path, 0o646 | run_bits)
    elif how == "umask-000":
        os.chmod(path, 0o666 | run_bits)
    else:
        os.chown(path, NOBODY, NOBODY)
        os.chmod(path, 0o600 | run_bits)


LOOSENESS = ["group-writable", "world-writable", "umask-000", "another-user"]


@needs_root
class TestRule2LooseFilesAreRefused:
    @pytest.mark.parametrize("how", LOOSENESS)
    def test_rule2_a_loose_config_is_refused_before_it_is_used(self, env: Env, how: str) -> None:
        ready(env)
        marker = env.tmp / "ran"
        edit = env.config.read_text().replace('kind = "csv"', f'kind = "command"\ncommand = ["touch", "{marker}"]')
        env.config.write_text(edit)
        _loosen(env.config, how)
        for args in (["run", "--scheduled"], ["status"], ["schedule", "show"]):
            proc = run(args, PSABILL_NOW=SCHEDULED_NOW)
            line = one_error_line(proc)
            assert proc.returncode == 3 and str(env.config) in line
            assert ("chown" in line) if how == "another-user" else (f"chmod go-w {env.config}" in line)
        assert not marker.exists()  # the other user's command never ran

    @pytest.mark.parametrize("how", LOOSENESS)
    def test_rule2_a_symlinked_config_is_judged_by_its_target(self, env: Env, how: str) -> None:
        ready(env)
        real = env.tmp / "dotfiles" / "psabill.toml"
        real.parent.mkdir()
        shutil.move(str(env.config), real)
        env.config.symlink_to(real)
        _loosen(real, how)
        assert one_error_line(run(["status"])).startswith(f"Error: config {env.config} is ")

    @pytest.mark.parametrize("how", LOOSENESS)
    @pytest.mark.parametrize("secret", ["psa-private_key_file", "smtp-password_file"])
    def test_rule2_a_loose_key_file_is_refused(self, env: Env, how: str, secret: str) -> None:
        from psabill.config import secrets
        from psabill.errors import ConfigError
        from psabill.config.settings import load

        ready(env)
        key = env.config.parent / "smtp-pw"
        key.write_text("smtp-password-0123456789\n")
        text = env.config.read_text() + '\n[notify.smtp]\nhost = "127.0.0.1"\npassword_file = "smtp-pw"\n'
        env.config.write_text(text)
        settings = load(env.config)
        ref = settings.psa.private_key if secret.startswith("psa") else settings.notify.smtp.password
        _loosen(ref.file, how)
        with pytest.raises(ConfigError) as caught:
            secrets.resolve(ref)
        assert str(ref.file) in caught.value.message and "\n" not in caught.value.message

    @pytest.mark.parametrize("how", LOOSENESS)
    def test_rule2_a_loose_key_file_stops_the_cron_run(self, env: Env, how: str) -> None:
        ready(env)
        _loosen(env.config.parent / "psa-key", how)
        proc = run(["run", "--scheduled"], PSABILL_NOW=SCHEDULED_NOW)
        assert proc.returncode == 3 and "private_key_file" in one_error_line(proc)

    @pytest.mark.parametrize("how", LOOSENESS)
    def test_rule2_a_loose_mapping_file_is_refused(self, env: Env, how: str) -> None:
        from psabill.errors import AbortError
        from psabill.run import mapping

        path = env.tmp / "mapping.csv"
        path.write_text("customer,psa_company\nAcme,ACME\n")
        assert mapping.load(path)["acme"].psa_company == "ACME"
        _loosen(path, how)
        with pytest.raises(AbortError, match="mapping file"):
            mapping.load(path)

    @pytest.mark.parametrize("how", LOOSENESS)
    @pytest.mark.parametrize("what", ["program", "interpreted-script", "usage-file"])
    def test_rule2_a_loose_source_is_refused_and_never_run(self, env: Env, how: str, what: str) -> None:
        from support.env import read_source

        from psabill.errors import AbortError

        ready(env)
        marker = env.tmp / "ran"
        script = env.config.parent / "export.sh"
        script.write_text(f"#!/bin/sh\ntouch {marker}\necho customer,sku,seats\n")
        os.chmod(script, 0o755)
        text = env.config.read_text()
        if what == "program":
            text = text.replace('kind = "csv"', 'kind = "command"\ncommand = ["./export.sh"]')
        elif what == "interpreted-script":
            text = text.replace('kind = "csv"', 'kind = "command"\ncommand = ["sh", "-e", "export.sh"]')
        env.config.write_text(text)
        from psabill.config.settings import load
        from psabill.sources.rows import UsageRow

        settings = load(env.config)
        # Fine while tight: the script prints only a header; the usage file holds make_ready()'s one row.
        assert read_source(settings) == ([UsageRow("CUST00001", "LastPass", 10)] if what == "usage-file" else [])
        marker.unlink(missing_ok=True)
        target = env.config.parent / "usage.csv" if what == "usage-file" else script
        _loosen(target, how)
        with pytest.raises(AbortError) as caught:
            read_source(settings)
        assert str(target.name) in caught.value.message
        assert not marker.exists()
        proc = run(["run", "--scheduled"], PSABILL_NOW=SCHEDULED_NOW)
        assert proc.returncode == 4 and one_error_line(proc)
        assert not marker.exists()

    def test_rule2_files_of_this_user_or_root_with_private_modes_are_accepted(self, env: Env) -> None:
        ready(env)
        for path in (env.config, env.config.parent / "usage.csv"):
            os.chmod(path, 0o644)  # readable by others is not writable by others
        # A secret's file is private to its reader: readable by others is too loose (0600, as ssh's keys).
        os.chmod(env.config.parent / "psa-key", 0o644)
        proc = run(["run", "--scheduled"], PSABILL_NOW=SCHEDULED_NOW)
        assert proc.returncode == 3 and "is readable by group or others (mode 0644)" in one_error_line(proc)
        os.chmod(env.config.parent / "psa-key", 0o600)
        proc = run(["run", "--scheduled"], PSABILL_NOW="2026-12-02T14:00:00Z")
        assert proc.returncode == 0, proc.stderr


# -- 3. modes do not depend on the umask ------------------------------------------------------------------------


class TestRule3ModesDoNotDependOnTheUmask:
    def test_rule3_everything_psabill_creates_is_private_under_umask_000(self, env: Env) -> None:
        config = env.tmp / "deep" / "er" / "conf" / "config.toml"
        state = env.tmp / "var" / "lib" / "psabill" / "state"
        env.monkeypatch.setenv("PSABILL_CONFIG", str(config))
        env.monkeypatch.setenv("PSABILL_STATE_DIR", str(state))
        env.config, env.state_dir = config, state
        proc = run(["schedule", "set", "--daily", "--hour", "14", "--timezone", "UTC"], umask=0,
                   PSABILL_NOW="2026-11-26T12:00:00Z")
        assert proc.returncode == 0, proc.stderr
        env.make_ready()
        with open(config, "a") as handle:
            handle.write("\n[log]\nmax_bytes = 200\nbackups = 2\n")
        for now in (SCHEDULED_NOW, "2026-12-02T14:00:00Z", "2026-12-03T14:00:00Z"):
            proc = run(["run", "--scheduled"], umask=0, PSABILL_NOW=now)
            assert proc.returncode == 0, proc.stderr
        run(["status"], umask=0)
        for directory in (env.tmp / "deep", env.tmp / "deep" / "er", config.parent,
                          env.tmp / "var", env.tmp / "var" / "lib", state.parent, state):
            assert mode(directory) == 0o700, directory
        # The history site is the one exception, by design (issue 25): pages a web server may read, so
        # world-readable, and never writable by others, even under umask 000. The state dir around it is 0700.
        site = state / "site"
        files = [config, *(p for p in state.iterdir() if p != site)]
        names = {p.name for p in files}
        assert {"state.db", lock_name(env), "psabill.log", "psabill.log.1"} <= names, names
        for path in files:
            assert mode(path) == 0o600, path
        assert site.is_dir() and mode(site) == 0o755
        for path in site.rglob("*"):
            assert mode(path) == (0o755 if path.is_dir() else 0o644), path

    def test_rule3_a_loose_state_dir_of_ours_is_tightened(self, env: Env) -> None:
        ready(env)
        env.state_dir.mkdir()
        os.chmod(env.state_dir, 0o777)
        proc = run(["run", "--scheduled"], PSABILL_NOW=SCHEDULED_NOW)
        assert proc.returncode == 0, proc.stderr
        assert mode(env.state_dir) == 0o700

    @needs_root
    @pytest.mark.parametrize("args", [["run", "--scheduled"], ["run", "--yes"]])
    def test_rule3_a_state_dir_of_another_user_is_refused_with_the_fix(self, env: Env, args: List[str]) -> None:
        ready(env)
        env.state_dir.mkdir()
        os.chown(env.state_dir, NOBODY, NOBODY)
        os.chmod(env.state_dir, 0o777)
        proc = run(args, PSABILL_NOW=SCHEDULED_NOW)
        line = one_error_line(proc)
        assert proc.returncode == 7 and "owned by another user" in line and "chown" in line
        assert mode(env.state_dir) == 0o777 and list(env.state_dir.iterdir()) == []


# -- 4. no symlinks in the state dir ----------------------------------------------------------------------------

STATE_FILES = ["state.db", "state.db-wal", "state.db-shm", "state.db-journal", "psabill.log", "run.lock"]


class TestRule4NoSymlinksInTheStateDir:
    @pytest.mark.parametrize("dangling", [False, True], ids=["to-a-file", "dangling"])
    @pytest.mark.parametrize("name", STATE_FILES)
    def test_rule4_a_symlink_in_the_state_dir_is_refused_and_its_target_untouched(
            self, env: Env, name: str, dangling: bool) -> None:
        ready(env)
        if name == "run.lock":
            name = lock_name(env)  # this config's run lock
        if name != "state.db" and not name.startswith("state.db-"):
            assert run(["run", "--scheduled"], PSABILL_NOW=SCHEDULED_NOW).returncode == 0
        else:
            env.state_dir.mkdir(mode=0o700)
        target = env.tmp / "victim" / "precious"
        target.parent.mkdir()
        if not dangling:
            target.write_bytes(b"precious\n")
            os.chmod(target, 0o644)
        link = env.state_dir / name
        if link.exists():
            link.unlink()
        link.symlink_to(target)
        for args, now in ((["run", "--scheduled"], "2026-12-02T14:00:00Z"), (["run", "--yes"], None),
                          (["status"], None), (["history"], None)):
            proc = run(args, **({"PSABILL_NOW": now} if now else {}))
            if args[0] in ("status", "history"):
                _one_line_or_fine(proc)  # read-only: they may not need the file at all
                assert proc.returncode == 0 or "symlink" in proc.stderr, proc.stderr
            else:
                line = one_error_line(proc)
                assert "symlink" in line and name in line, line
            if dangling:
                assert not os.path.lexists(target)
            else:
                assert target.read_bytes() == b"precious\n" and mode(target) == 0o644
            assert os.path.islink(link)


# -- 6. bounded responses ---------------------------------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    behaviour = "ok"

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        try:
            self._serve(self.path.strip("/"))
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _serve(self, behaviour: str) -> None:
        if behaviour == "ok":
            body = b'{"ok": true}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif behaviour == "huge-chunked":  # no Content-Length: only counting the bytes can stop it
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            chunk = b"x" * (1024 * 1024)
            for _ in range(60):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.write(b"0\r\n\r\n")
        elif behaviour == "huge-declared":
            self.send_response(200)
            self.send_header("Content-Length", str(10 * 1024 ** 3))
            self.end_headers()
            self.wfile.write(b"[")
            time.sleep(5)
        elif behaviour == "dribble-body":
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            for _ in range(100000):
                self.wfile.write(b" ")
                self.wfile.flush()
                time.sleep(0.1)
        elif behaviour == "dribble-headers":
            for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 100000:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(0.1)


@pytest.fixture
def loopback() -> Iterator[str]:
    class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True
        allow_reuse_address = True

    server = Server(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class TestRule6BoundedResponses:
    @pytest.mark.parametrize("behaviour", ["huge-chunked", "huge-declared"])
    def test_rule6_a_response_over_50_mb_is_refused_by_name(self, loopback: str, behaviour: str) -> None:
        from psabill.net.errors import RemoteError
        from psabill.net.http import HttpClient

        client = HttpClient(headers={}, timeout=10, max_retries=2)
        assert client.get_json(f"{loopback}/ok") == {"ok": True}
        started = time.monotonic()
        with pytest.raises(RemoteError) as caught:
            client.get_json(f"{loopback}/{behaviour}")
        assert f"GET {loopback}/{behaviour}: the response is over the 50 MB limit" in str(caught.value)
        assert type(caught.value) is RemoteError and client.request_count == 2  # refused, never retried
        assert time.monotonic() - started < 4
        client.close()

    @pytest.mark.parametrize("behaviour", ["dribble-body", "dribble-headers"])
    def test_rule6_a_server_that_dribbles_bytes_meets_the_overall_deadline(self, loopback: str, behaviour: str) -> None:
        from psabill.net.errors import Unreachable
        from psabill.net.http import HttpClient

        client = HttpClient(headers={}, timeout=0.5, max_retries=1, backoff=0.01)  # deadline: 4 x 0.5 s
        started = time.monotonic()
        with pytest.raises(Unreachable) as caught:
            client.get_json(f"{loopback}/{behaviour}")
        elapsed = time.monotonic() - started
        assert "within the 2s deadline" in str(caught.value) and "after 2 attempt(s)" in str(caught.value)
        assert 3.5 < elapsed < 6.5, elapsed  # two bounded attempts, never the server's 10 000 s
        client.close()


# -- 9. every filesystem failure is one line --------------------------------------------------------------------


def _mount_tmpfs(where: Path) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(where)],
                        capture_output=True).returncode == 0
    return ok


def _remount_ro(where: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True, capture_output=True)


def _umount(where: Path) -> None:
    subprocess.run(["umount", "-l", str(where)], capture_output=True)


COMMANDS = [["run", "--scheduled"], ["run", "--yes"], ["run", "--dry-run"], ["status"], ["status", "--json"],
            ["history"], ["history", "--json"], ["schedule", "show"]]


def _one_line_or_fine(proc: "subprocess.CompletedProcess[str]") -> None:
    assert proc.returncode in DOCUMENTED, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    if proc.returncode not in (0, 1):
        one_error_line(proc)


class TestRule9EveryFilesystemFailureIsOneLine:
    def test_rule9_a_run_lock_that_is_a_directory(self, env: Env) -> None:
        ready(env)
        (env.state_dir / lock_name(env)).mkdir(parents=True)
        proc = run(["run", "--scheduled"], PSABILL_NOW=SCHEDULED_NOW)
        line = one_error_line(proc)
        assert proc.returncode == 7 and lock_name(env) in line and "retry" in line
        for args in COMMANDS:
            _one_line_or_fine(run(args, PSABILL_NOW=SCHEDULED_NOW))

    @needs_root
    def test_rule9_a_state_dir_owned_by_another_user(self, env: Env) -> None:
        ready(env)
        assert run(["run", "--scheduled"], PSABILL_NOW=SCHEDULED_NOW).returncode == 0
        for path in [env.state_dir, *env.state_dir.iterdir()]:
            os.chown(path, NOBODY, NOBODY)
        for args in COMMANDS:
            proc = run(args, PSABILL_NOW="2026-12-02T14:00:00Z")
            _one_line_or_fine(proc)
            if args[0] == "run":
                assert proc.returncode == 7 and "owned by another user" in proc.stderr

    @needs_root
    @pytest.mark.parametrize("what", ["state-dir", "database"])
    def test_rule9_a_read_only_filesystem(self, env: Env, what: str) -> None:
        ready(env)
        if not _mount_tmpfs(env.state_dir):
            pytest.skip("cannot mount a tmpfs here")
        try:
            assert run(["run", "--scheduled"], PSABILL_NOW=SCHEDULED_NOW).returncode == 0
            db = env.state_dir / "state.db"
            if what == "state-dir":
                _remount_ro(env.state_dir)
            else:
                for name in ("state.db-wal", "state.db-shm"):
                    (env.state_dir / name).unlink(missing_ok=True)
                subprocess.run(["mount", "--bind", str(db), str(db)], check=True)
                subprocess.run(["mount", "-o", "remount,ro,bind", str(db)], check=True)
            before = db.read_bytes()
            for args in [*COMMANDS, ["schedule", "set", "--daily", "--hour", "15", "--timezone", "UTC"]]:
                proc = run(args, PSABILL_NOW="2026-12-02T14:00:00Z")
                _one_line_or_fine(proc)
                if args[0] == "run" and args[1] != "--dry-run":
                    line = one_error_line(proc)
                    assert proc.returncode == 7 and "retry" in line, line
            assert db.read_bytes() == before
        finally:
            if what == "database":
                _umount(env.state_dir / "state.db")
            _umount(env.state_dir)


# -- 10. crontab bytes are data ---------------------------------------------------------------------------------

ADMIN = b"MAILTO=ops\n# caf\xe9 \xff\xfe not UTF-8\n0 9 * * 2 /usr/bin/backup --label 'r\xe9sum\xe9'\n"


def _fake_crontab(bin_dir: Path, store: Path) -> None:
    bin_dir.mkdir()
    program = bin_dir / "crontab"
    program.write_text(f"""#!/bin/sh
if [ "$1" = "-l" ]; then
  if [ -f {store} ]; then cat {store}; exit 0; fi
  echo "no crontab for $(id -un)" >&2; exit 1
fi
cp "$1" {store}
""")
    os.chmod(program, 0o755)


class TestRule10CrontabBytesAreData:
    @pytest.mark.parametrize("target", ["file", "user-crontab"])
    def test_rule10_bytes_that_are_not_utf8_survive_byte_for_byte(self, env: Env, target: str) -> None:
        extra = {}
        if target == "file":
            store = env.crontab
        else:
            store = env.tmp / "spool"
            _fake_crontab(env.tmp / "bin", store)
            env.monkeypatch.delenv("PSABILL_CRONTAB")
            extra = {"PATH": f"{env.tmp / 'bin'}:{os.environ['PATH']}"}
        store.write_bytes(ADMIN)
        proc = run(["schedule", "set", "--daily", "--hour", "6", "--timezone", "UTC"], **extra)
        assert proc.returncode == 0, proc.stderr
        after = store.read_bytes()
        assert after.startswith(ADMIN) and after.count(b"psabill[") == 3  # schedule, @reboot, hourly retry
        for args in (["status"], ["status", "--json"], ["cron", "show"], ["schedule", "show"]):
            proc = run(args, **extra)
            assert proc.returncode == 0, (args, proc.stderr)
        assert '"in_sync": true' in run(["status", "--json"], **extra).stdout
        proc = run(["schedule", "disable"], **extra)
        assert proc.returncode == 0, proc.stderr
        assert store.read_bytes() == ADMIN


# -- 11. logging never speaks to cron ---------------------------------------------------------------------------


class TestRule11LoggingNeverSpeaksToCron:
    def test_rule11_a_log_that_cannot_be_opened_is_one_line_and_the_run_carries_on(self, env: Env) -> None:
        ready(env)
        (env.state_dir / "psabill.log").mkdir(parents=True)  # not writable, even by root
        proc = run(["run", "--scheduled"], PSABILL_NOW=SCHEDULED_NOW)
        assert proc.returncode == 0 and proc.stdout == ""
        lines = proc.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("psabill: warning: cannot open the log file "), proc.stderr
        assert "carrying on" in lines[0]
        import json

        runs = json.loads(env.run("history", "--json").output)
        assert len(runs) == 1 and runs[0]["finished_at"] and runs[0]["status"] not in ("failed", "aborted")

    def test_rule11_a_log_write_that_fails_is_reported_once_without_a_traceback(self, tmp_path: Path) -> None:
        from psabill.text import log

        logger = log.setup(tmp_path / "state" / "psabill.log")
        handler = logger.handlers[0]

        class Broken(io.StringIO):
            def write(self, text: str) -> int:
                raise OSError(28, "No space left on device")

        err = io.StringIO()
        with redirect_stderr(err):
            handler.stream = Broken()
            logger.info("one")
            handler.stream = Broken()
            logger.info("two")
        assert "Traceback" not in err.getvalue()
        lines = err.getvalue().splitlines()
        assert len(lines) == 1 and "No space left on device" in lines[0] and "free some space" in lines[0]
        for old in list(logger.handlers):
            logger.removeHandler(old)
            old.close()
        logger._psabill_target = None  # type: ignore[attr-defined]


# -- history writes are scrubbed --------------------------------------------------------------------------------


class TestHistoryWritesAreScrubbed:
    def test_history_writes_are_scrubbed(self, tmp_path: Path) -> None:
        from datetime import datetime, timezone

        from psabill.text import redact
        from psabill.ledger.history import Ledger
        from psabill.report import Item, Run

        secret = "hist-secret-4c1d9e-do-not-store"
        redact.register(secret)
        try:
            db = tmp_path / "state" / "state.db"
            with Ledger(db) as history:
                report = Run(trigger="manual", started_at=datetime.now(timezone.utc))
                run_id = history.start_run(report)
                item = Item(customer="Acme", sku="LastPass", outcome="planned", seq=1, psa_company="ACME",
                            agreement=None, line=None, old=1, new=2, message=f"planned with key {secret}")
                report.items = [item]
                history.store_plan(report, datetime.now(timezone.utc))
                item.outcome, item.message, item.hint = "failed", f"PSA said: bad key {secret}", f"check {secret}"
                history.settle(run_id, [item])
                report.status, report.message = "failed", f"aborted: token {secret}"
                report.finished_at = datetime.now(timezone.utc)
                history.finish_run(report, retry=False)
                history.set_email(run_id, "failed", f"SMTP said AUTH {secret}")
            conn = sqlite3.connect(str(db))
            dump = "\n".join(conn.iterdump())
            conn.close()
            assert secret not in dump and dump.count(redact.REDACTED) >= 4
        finally:
            redact.clear()


@needs_root
class TestRule2TrustFilesBeyondTheListed:
    @pytest.mark.parametrize("how", LOOSENESS)
    def test_rule2_a_loose_template_is_refused_before_rendering(self, tmp_path: Path, how: str) -> None:
        from psabill.errors import EmailError
        from psabill.notify import templates

        custom = tmp_path / "tpl"
        custom.mkdir()
        (custom / "subject.txt").write_text("{{ 7 * 6 }}\n")
        os.chmod(custom, 0o755)
        templates._environment(custom)  # fine while tight
        _loosen(custom / "subject.txt", how)
        with pytest.raises(EmailError, match="subject.txt"):
            templates._environment(custom)

    @pytest.mark.parametrize("how", LOOSENESS)
    def test_rule2_a_loose_psa_ca_file_is_refused(self, tmp_path: Path, how: str) -> None:
        import certifi

        from psabill.net.errors import RemoteError
        from psabill.net.http import HttpClient

        ca = tmp_path / "ca.pem"
        ca.write_bytes(Path(certifi.where()).read_bytes())
        HttpClient(headers={}, ca_file=str(ca)).close()
        _loosen(ca, how)
        with pytest.raises(RemoteError, match="ca_file"):
            HttpClient(headers={}, ca_file=str(ca))
