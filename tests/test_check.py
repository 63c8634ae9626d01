"""``psabill check``: every part of a run tried against the real servers on loopback, nothing written.

Issue 21, point 4: with the LastPass source, check reports the managed companies and the seats
per SKU. Issue 24, point 1: check tries the email path (the sender, the transport, SMTP up to
the recipients) without sending unless asked, and fails naming the fix.
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any, Dict

import pytest
import tomli_w

from psabill.errors import ExitCode
from psabill.sandbox import book as sample_book
from support.env import Env, last_line, tomllib
from support.smtp import smtp_sink


def _configure(env: Env, sample: Any, notify: Dict[str, Any]) -> None:
    env.config.parent.mkdir(parents=True, exist_ok=True)
    for name, secret in (("cw-key", sample.psa.private_key), ("lp-key", sample.lastpass.api_key)):
        path = env.config.parent / name
        path.write_text(secret + "\n")
        os.chmod(path, 0o600)
    env.config.write_text(tomli_w.dumps({
        "account": {"name": "Example MSP", "timezone": "UTC"},
        "notify": {"emails": ["billing@msp.example", "ops@msp.example"], **notify},
        "source": {**sample.lastpass.config_section(), "api_key_file": "lp-key"},
        "products": sample.products,
        "psa": {**sample.psa.config_section(), "private_key_file": "cw-key", "max_retries": 0},
    }))
    os.chmod(env.config, 0o600)


def _smtp(port: int) -> Dict[str, Any]:
    return {"from": "psabill@msp.example", "transport": "smtp",
            "smtp": {"host": "127.0.0.1", "port": port, "security": "none"}}


def test_check_with_lastpass_reports_managed_companies_and_seats_per_sku_and_writes_nothing(env: Env) -> None:
    with sample_book.build("connectwise") as sample, smtp_sink() as (port, sink):
        _configure(env, sample, _smtp(port))
        result = env.run("check", "--json")
        assert result.exit_code == 0, result.output
        checked = json.loads(result.output)
        companies = list(sample.lastpass.companies.values())
        expected: Dict[str, int] = {}
        for company in companies:
            sku = sample_book.MFA_SKU if "mfa" in company["addons"] else sample_book.SKU
            expected[sku] = expected.get(sku, 0) + sample.lastpass.seats(company["id"], sample_book.COUNTED)
        assert checked["source"]["seats"] == expected
        assert checked["source"]["note"].startswith(f"{len(companies)} LastPass managed companies")
        text = env.run("check").output
        assert f"{len(companies)} LastPass managed companies" in text and "Nothing was written." in text
        assert sample.psa.patches() == []
        assert {r.method for r in sample.lastpass.requests} == {"GET"}
        assert sink.envelopes == []


def test_check_tries_smtp_up_to_the_recipients_without_sending_and_sends_only_when_asked(env: Env) -> None:
    with sample_book.build("connectwise") as sample, smtp_sink() as (port, sink):
        _configure(env, sample, _smtp(port))
        result = env.run("check")
        assert result.exit_code == 0, result.output
        assert "Email:" in result.output and "127.0.0.1" in result.output
        assert sink.envelopes == []  # the server accepted the sender and both recipients; nothing was sent
        sent = env.run("check", "--send-email")
        assert sent.exit_code == 0, sent.output
        assert [sorted(e.rcpt_tos) for e in sink.envelopes] == [["billing@msp.example", "ops@msp.example"]]


def test_check_fails_naming_the_smtp_server_when_it_is_not_there(env: Env) -> None:
    with sample_book.build("connectwise") as sample:
        with smtp_sink() as (port, _):
            pass  # a port nothing listens on any more
        _configure(env, sample, _smtp(port))
        result = env.run("check")
        assert result.exit_code == ExitCode.EMAIL, result.output
        line = last_line(result.output)
        assert line.startswith("Error: ") and f"127.0.0.1:{port}" in line and "[notify.smtp]" in line, line


def test_check_on_a_host_without_a_domain_name_fails_naming_notify_from(env: Env,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "getfqdn", lambda *a: "vm")
    with sample_book.build("connectwise") as sample, smtp_sink() as (port, sink):
        notify = _smtp(port)
        del notify["from"]
        _configure(env, sample, notify)
        result = env.run("check")
        assert result.exit_code != 0
        assert "[notify] from" in last_line(result.output), result.output
        data = tomllib.loads(env.config.read_text())
        data["notify"]["from"] = "psabill@msp.example"
        env.config.write_text(tomli_w.dumps(data))
        assert env.run("check").exit_code == 0
        assert sink.envelopes == []
