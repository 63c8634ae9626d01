"""`psabill run` end to end: sandbox PSA on loopback, a real SMTP server, the history.

Issue acceptance: two addresses each get one multipart message through a real
SMTP server, holding every change (old -> new), every failure with its reason
and the unmapped customers, with an HTML-looking name escaped. With the SMTP
server down the run is recorded, exits 5, and `email resend` delivers later.
"""

from __future__ import annotations

import email
import json
import os
import re
from email import policy
from typing import Optional

from support.env import ADDRESSES, SCHEDULED_NOW, Env, Sink, configure, free_port, last_line
from psabill.sandbox.connectwise import Sandbox

def test_a_scheduled_run_updates_the_psa_and_mails_both_addresses(
        env: Env, sandbox: Sandbox, ledger_url: Optional[str]) -> None:
    from aiosmtpd.controller import Controller

    sink = Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        configure(env, sandbox, controller.port)
        result = env.run("run", "--scheduled", now=SCHEDULED_NOW)
    finally:
        controller.stop()
    assert result.exit_code == 1  # GLOBEX has two candidate agreements: a failed item
    assert len(sink.envelopes) == 1
    assert sorted(sink.envelopes[0].rcpt_tos) == ADDRESSES
    message = email.message_from_bytes(sink.envelopes[0].content, policy=policy.default)
    assert message["From"] == "psabill@msp.example.com"
    assert message.get_content_type() == "multipart/mixed"  # the report, then the CSV of every item
    (attachment,) = list(message.iter_attachments())
    assert attachment.get_filename() == "psabill-run-000001.csv"
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    history = json.loads(env.run("history", "show", "1", "--json").output)
    for item in history["items"]:
        assert item["customer"] in text
        if item["outcome"] == "updated":
            assert f"{item['old']} → {item['new']}" in text or f"{item['old']} -> {item['new']}" in text
    assert "GLOBEX" in text and "Nobody Inc" in text
    assert "&lt;b&gt;Acme &amp; Co&lt;/b&gt;" in html and "<b>Acme & Co</b>" not in html
    assert history["trigger"] == "scheduled" and history["email"]["status"] == "sent"
    # Every mapped quantity now equals its seat count; only changed ones were written.
    updated = [i for i in history["items"] if i["outcome"] == "updated"]
    assert len(sandbox.patches()) == len(updated)


def test_with_the_smtp_server_down_the_run_is_recorded_exits_5_and_resend_delivers(
        env: Env, sandbox: Sandbox, ledger_url: Optional[str]) -> None:
    # Both ledgers: the run's record, its email status and the resend live in SQLite or PostgreSQL.
    from aiosmtpd.controller import Controller

    port = free_port()
    configure(env, sandbox, port)
    result = env.run("run", "--scheduled", now=SCHEDULED_NOW)
    assert result.exit_code == 5
    assert "psabill email resend 1" in last_line(result.output)
    run = json.loads(env.run("history", "--json").output)[0]
    assert run["status"] == "partial" and run["email"]["status"] == "failed"
    assert run["counts"]["updated"] > 0

    sink = Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        resent = env.run("email", "resend", "1", now=SCHEDULED_NOW)
    finally:
        controller.stop()
    assert resent.exit_code == 0, resent.output
    assert len(sink.envelopes) == 1 and sorted(sink.envelopes[0].rcpt_tos) == ADDRESSES
    assert json.loads(env.run("history", "--json").output)[0]["email"]["status"] == "sent"


def test_an_unreachable_psa_aborts_with_exit_4_and_writes_nothing(env: Env, sandbox: Sandbox) -> None:
    configure(env, sandbox, free_port())
    data = env.config.read_text().replace(sandbox.url, f"http://127.0.0.1:{free_port()}")
    env.config.write_text(data)
    result = env.run("run", "--yes", "--json", now=SCHEDULED_NOW)
    assert result.exit_code == 4
    assert sandbox.patches() == []
    run = json.loads(env.run("history", "--json").output)[0]
    assert run["status"] == "aborted" and run["trigger"] == "manual"


def test_dry_run_plans_changes_and_writes_nothing(env: Env, sandbox: Sandbox) -> None:
    configure(env, sandbox, free_port())
    result = env.run("run", "--dry-run", now=SCHEDULED_NOW)
    assert "CUST00001 / LastPass:" in result.output and " -> 21" in result.output
    assert sandbox.patches() == []
    assert json.loads(env.run("history", "--json").output)[0]["trigger"] == "dry-run"


def test_a_manual_run_without_a_terminal_refuses_without_yes(env: Env, sandbox: Sandbox) -> None:
    configure(env, sandbox, free_port())
    result = env.run("run", now=SCHEDULED_NOW)
    assert result.exit_code == 2
    assert last_line(result.output) == "Error: refusing to change billing without a terminal: pass --yes (or --dry-run)"
    assert sandbox.patches() == []


def test_on_a_terminal_a_progress_bar_shows_requests_and_rate(env: Env, sandbox: Sandbox) -> None:
    import pty
    import subprocess
    import sys

    configure(env, sandbox, free_port())
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "psabill", "run", "--yes"], stdin=follower, stdout=follower,
                            stderr=follower, env={**os.environ, "PSABILL_NOW": SCHEDULED_NOW})
    os.close(follower)
    output = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the terminal closed: the child has exited
            break
        if not chunk:
            break
        output += chunk
    os.close(leader)
    assert proc.wait(timeout=60) == 1  # GLOBEX fails: two candidate agreements
    text = output.decode()
    # The bar names each phase (read the source, read the PSA, write the plan) with requests and rate.
    assert "reading the source" in text and "reading the PSA" in text, text  # issue 24: each phase shows
    assert text.index("reading the source") < text.index("reading the PSA") < text.index("writing:")
    assert re.search(r"writing: \d+/\d+ \(\d+ API requests, \d+/s", text), text
    assert "Run 1: partial" in text


def test_the_history_keeps_the_request_count_and_rate(env: Env, sandbox: Sandbox) -> None:
    from datetime import datetime

    configure(env, sandbox, free_port())
    env.run("run", "--yes")  # the real clock, so the run has a duration
    run = json.loads(env.run("history", "--json").output)[0]
    assert run["api_requests"] == sandbox.total
    seconds = (datetime.fromisoformat(run["finished_at"]) - datetime.fromisoformat(run["started_at"])).total_seconds()
    assert run["requests_per_second"] == round(run["api_requests"] / seconds, 1)
    assert f"{run['api_requests']} API requests ({run['requests_per_second']}/s)" in env.run("history", "show", "1").output
