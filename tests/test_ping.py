"""[notify] ping_url: a real run pings <url>/start, then <url> or <url>/fail, on a real HTTP server."""

from __future__ import annotations

import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator, List

import pytest
import tomli_w

from psabill.notify.ping import ping_target
from support.env import Env, free_port, tomllib


class Monitor:
    """A healthchecks.io stand-in on loopback that records each request path."""

    def __init__(self, status: int = 200) -> None:
        self.paths: List[str] = []
        monitor = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                monitor.paths.append(self.path)
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"OK")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/ping/abc-123"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "Monitor":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def monitor() -> Iterator[Monitor]:
    with Monitor() as m:
        yield m


def write_config(env: Env, ping_url: str, *, psa: bool) -> None:
    data = {"notify": {"ping_url": ping_url, "transport": "file", "file": {"dir": "outbox"}}}
    if psa:  # a usage file that does not exist: the run aborts before the PSA is touched
        data.update({"source": {"kind": "csv", "path": "missing.csv"}, "products": {"LastPass": "SEATS-STD"},
                     "psa": {"kind": "connectwise", "url": "https://127.0.0.1:9", "company": "x",
                             "public_key": "p", "client_id": "c", "private_key_env": "NOPE"}})
    env.config.parent.mkdir(parents=True, exist_ok=True)
    env.config.write_text(tomli_w.dumps(data))
    os.chmod(env.config, 0o600)
    if not psa:
        env.make_ready()  # a one-line sandbox PSA that already holds the source's seats: a run that succeeds


def test_a_successful_run_pings_start_then_the_url(env: Env, monitor: Monitor) -> None:
    write_config(env, monitor.url, psa=False)
    result = env.run("run", "--yes")
    assert result.exit_code == 0, result.output
    assert monitor.paths == ["/ping/abc-123/start", "/ping/abc-123"]


def test_an_aborted_run_pings_fail(env: Env, monitor: Monitor) -> None:
    write_config(env, monitor.url, psa=True)
    env.monkeypatch.setenv("NOPE", "private")  # the client resolves its key first; then the source is missing
    result = env.run("run", "--yes")
    assert result.exit_code == 4, result.output
    assert monitor.paths == ["/ping/abc-123/start", "/ping/abc-123/fail"]


def test_a_dry_run_does_not_ping(env: Env, monitor: Monitor) -> None:
    write_config(env, monitor.url, psa=False)
    assert env.run("run", "--dry-run").exit_code == 0
    assert monitor.paths == []


@pytest.mark.parametrize("status", [500, None], ids=["monitor-errors", "monitor-down"])
def test_a_failed_ping_never_fails_the_run(env: Env, status: object) -> None:
    if status is None:
        write_config(env, f"http://127.0.0.1:{free_port()}/gone", psa=False)
        assert env.run("run", "--yes").exit_code == 0
        return
    with Monitor(status=500) as m:
        write_config(env, m.url, psa=False)
        result = env.run("run", "--yes")
    assert result.exit_code == 0, result.output
    assert len(m.paths) == 2
    log = next(env.state_dir.glob("*.log")).read_text()
    assert "ping success to " in log and "failed: HTTP 500" in log


def test_ping_targets_keep_a_query_and_drop_a_trailing_slash() -> None:
    assert ping_target("https://hc-ping.com/u/", "start") == "https://hc-ping.com/u/start"
    assert ping_target("https://hc-ping.com/u?rid=1", "fail") == "https://hc-ping.com/u/fail?rid=1"
    assert ping_target("https://hc-ping.com/u", "success") == "https://hc-ping.com/u"


def test_the_not_due_path_with_a_ping_url_still_imports_no_httpx(env: Env) -> None:
    from test_imports import HEAVY, SAVED, MID_WEEK, modules_after, offending

    assert env.run("schedule", "set", "--weekly", "tue", "--hour", "9", "--timezone", "America/New_York",
                   "--no-cron", now=SAVED).exit_code == 0
    data = tomllib.loads(env.config.read_text())
    data.setdefault("notify", {})["ping_url"] = "http://127.0.0.1:9/x"
    env.config.write_text(tomli_w.dumps(data))
    code, stdout, modules = modules_after(env, ["run", "--scheduled"], MID_WEEK)
    assert (code, stdout) in ((0, ""), (None, ""))
    assert "psabill.notify.ping" not in modules
    assert offending(modules, HEAVY) == []
