"""The results email: rendering, MIME, every transport, failures and the CLI.

SMTP tests talk to a real aiosmtpd server on loopback; TLS uses a throwaway CA
from trustme. Nothing leaves the machine.
"""

from __future__ import annotations

from dataclasses import replace
import os
import ssl
import stat
import subprocess
import sys
from datetime import datetime, timezone
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Iterator, List, Optional

import pytest

from support.env import ADDRESSES, Sink, free_port, settings_for

from psabill import notify
from psabill.config.paths import Paths
from psabill.config.settings import Settings as Config
from psabill.errors import EmailError
from psabill.ledger.history import Ledger
from psabill.notify import facts, message, templates, transports
from psabill.outcomes import FAILED, PARTIAL, SUCCESS, UNCHANGED, UNMAPPED, UPDATED
from psabill.report import Item, Run

GOLDEN = Path(__file__).parent / "golden"
PASSWORD = "s3cr3t-Pa55word!"
UTC = timezone.utc
ACME = "<b>Acme & Co</b>"
SENDER = "Billing Bot <billing@msp.example.com>"
SNEAKY = "=HYPERLINK(\"x\")\nFAKE: all good"


# -- fixtures ------------------------------------------------------------------------


def numbered(items: List[Item]) -> List[Item]:
    """Items in plan order (the ledger keys them by ``seq``)."""
    for seq, item in enumerate(items, start=1):
        item.seq = seq
    return items


def fixed_report() -> Run:
    """One of everything, at fixed instants, with names chosen to break things."""
    return Run(
        trigger="scheduled",
        id=7,
        started_at=datetime(2026, 3, 10, 15, 7, 30, tzinfo=UTC),
        finished_at=datetime(2026, 3, 10, 15, 8, 2, tzinfo=UTC),
        occurrence=datetime(2026, 3, 10, 13, 0, tzinfo=UTC),
        late_seconds=7650,
        status=PARTIAL,
        psa="connectwise",
        account_name="Zürich Managed IT",
        zone="America/New_York",
        schedule_text="Every Tuesday at 09:00 (America/New_York)",
        next_run=datetime(2026, 3, 17, 13, 0, tzinfo=UTC),
        items=numbered([
            Item(ACME, "LastPass", UPDATED, old=10, new=12),
            Item("Globex Corporation", "LastPass+MFA", UPDATED, old=30, new=25),
            Item("Initech", "LastPass", UNCHANGED, old=5, new=5),
            Item(
                "Contoso",
                "LastPass",
                FAILED,
                old=3,
                new=4,
                message="agreement 'Managed Services' is cancelled",
                hint="reactivate the agreement in ConnectWise or map another one",
            ),
            Item(SNEAKY, "LastPass", UNMAPPED, message="no PSA company mapped"),
            Item(SNEAKY, "LastPass+MFA", UNMAPPED, message="no PSA company mapped"),
        ]),
    )


#: When the aborted run's occurrence is tried again (the hourly retry within catch-up).
RETRY = datetime(2026, 3, 10, 16, 7, tzinfo=UTC)


def aborted_report() -> Run:
    """A scheduled run that stopped before it looked at any item; it is retried at RETRY."""
    report = fixed_report()
    report.status, report.items = "aborted", []
    report.message = "PSA login failed: 401 Unauthorized (check [psa] public_key and private_key)"
    return report


def make_config(tmp_path: Path, notify: Optional[dict] = None, **extra: Any) -> Config:
    data: dict = {
        "account": {"name": "Zürich Managed IT", "timezone": "America/New_York"},
        "notify": {"emails": list(ADDRESSES), "from": "Billing Bot <billing@msp.example.com>"},
    }
    data["notify"].update(notify or {})
    data.update(extra)
    return settings_for(tmp_path / "config.toml", data)


class State(Ledger):
    """The ledger in ``tmp_path/state``, with the paths a report's delivery needs."""

    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path / "state"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.paths = Paths(tmp_path / "config.toml", self.dir, None)
        super().__init__(self.paths.db)


@pytest.fixture
def state(tmp_path: Path) -> Iterator[State]:
    st = State(tmp_path)
    yield st
    st.close()


def recorded(state: Ledger, report: Run) -> Run:
    """Store the report as the runner would (started, planned, finished), so set_email has a row to update."""
    state.start_run(report)
    assert report.id is not None
    state.store_plan(report, report.started_at)
    state.finish_run(report, retry=False)
    return report


def send_report(cfg: Config, report: Run, state: State, *, force: bool = False) -> None:
    """Decide, render, deliver and record the report the way a finished run does."""
    notify.report_run(cfg, state.paths, report, state, retrying=False, force=force)


@pytest.fixture
def smtp_server() -> Iterator[Any]:
    """Start an aiosmtpd Controller with the given options; stopped after the test."""
    from aiosmtpd.controller import Controller

    started: List[Any] = []

    def start(**kwargs: Any) -> Any:
        sink = Sink()
        controller = Controller(sink, hostname="127.0.0.1", port=free_port(), **kwargs)
        controller.start()
        controller.sink = sink
        started.append(controller)
        return controller

    yield start
    for controller in started:
        controller.stop()


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Any:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(server_ctx)
    ca_file = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return server_ctx, ca_file


def smtp_config(tmp_path: Path, port: int, **smtp: Any) -> Config:
    return make_config(
        tmp_path,
        {"transport": "smtp", "smtp": {"host": "127.0.0.1", "port": port, "timeout": 5, **smtp}},
    )


def parse(raw: bytes) -> EmailMessage:
    msg = message_from_bytes(raw, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def parts(msg: EmailMessage) -> tuple:
    text = msg.get_body(preferencelist=("plain",))
    html = msg.get_body(preferencelist=("html",))
    assert text is not None and html is not None
    return text.get_content(), html.get_content()


# -- SMTP --------------------------------------------------------------------------------


class TestSmtp:
    def test_every_address_receives_a_proper_multipart_message(self, tmp_path, state, smtp_server):
        server = smtp_server()
        report = recorded(state, fixed_report())
        send_report(smtp_config(tmp_path, server.port, security="none"), report, state)

        assert len(server.sink.envelopes) == 1
        envelope = server.sink.envelopes[0]
        assert envelope.rcpt_tos == ADDRESSES
        assert envelope.mail_from == "billing@msp.example.com"
        raw = envelope.original_content
        msg = parse(raw)
        # multipart/mixed: the report (text, then HTML), then the CSV of every item.
        assert msg.get_content_type() == "multipart/mixed"
        report_part, csv_part = msg.iter_parts()
        assert report_part.get_content_type() == "multipart/alternative"
        assert [p.get_content_type() for p in report_part.iter_parts()] == ["text/plain", "text/html"]
        assert csv_part.get_content_type() == "text/csv"
        assert csv_part.get_filename() == f"psabill-run-{report.id:06d}.csv"
        assert msg["Date"] and msg["Message-ID"].startswith("<") and msg["Message-ID"].endswith(">")
        assert [a.addr_spec for a in msg["To"].addresses] == ADDRESSES
        # The non-ASCII account name is RFC 2047-encoded on the wire and decodes intact.
        assert b"=?utf-8?" in raw.split(b"\r\n\r\n", 1)[0].lower()
        assert "Zürich Managed IT" in msg["Subject"]
        assert msg["Subject"] == ("psabill: partial: Zürich Managed IT billing update: 2 changed, 1 failed, 2 unmapped "
                                  "(2026-03-10)")  # the state first
        text, html = parts(msg)
        assert ACME in text
        assert "&lt;b&gt;Acme &amp; Co&lt;/b&gt;" in html and ACME not in html
        row = state.run(report.id)
        assert row.email.status == "sent"
        assert ", ".join(ADDRESSES) in row.email.message

    def test_starttls_trusts_a_self_signed_cert_through_ca_file(self, tmp_path, state, smtp_server, tls):
        server_ctx, ca_file = tls
        server = smtp_server(tls_context=server_ctx, require_starttls=True)
        report = recorded(state, fixed_report())
        cfg = smtp_config(tmp_path, server.port, security="starttls", ca_file=str(ca_file))
        send_report(cfg, report, state)
        assert server.sink.envelopes[0].rcpt_tos == ADDRESSES
        assert "STARTTLS" in state.run(report.id).email.message

    def test_starttls_without_ca_file_fails_with_a_hint(self, tmp_path, state, smtp_server, tls):
        server_ctx, _ = tls
        server = smtp_server(tls_context=server_ctx, require_starttls=True)
        report = recorded(state, fixed_report())
        with pytest.raises(EmailError, match="ca_file"):
            send_report(smtp_config(tmp_path, server.port, security="starttls"), report, state)
        assert state.run(report.id).email.status == "failed"

    def test_ssl_mode_with_login_reads_the_password_file(self, tmp_path, state, smtp_server, tls):
        from aiosmtpd.smtp import AuthResult

        seen: List[Any] = []

        def authenticator(server, session, envelope, mechanism, auth_data):
            seen.append((auth_data.login, auth_data.password))
            return AuthResult(success=auth_data.password == PASSWORD.encode(), handled=False)

        server_ctx, ca_file = tls
        server = smtp_server(ssl_context=server_ctx, authenticator=authenticator, auth_require_tls=False)
        secret = tmp_path / "smtp-password"
        secret.write_text(PASSWORD + "\n")
        secret.chmod(0o600)  # a password file readable by group or others is refused
        cfg = smtp_config(
            tmp_path, server.port, security="ssl", ca_file=str(ca_file),
            username="billing", password_file=str(secret),
        )
        report = recorded(state, fixed_report())
        send_report(cfg, report, state)
        assert seen == [(b"billing", PASSWORD.encode())]
        assert server.sink.envelopes[0].rcpt_tos == ADDRESSES
        assert "(SSL)" in state.run(report.id).email.message

    def test_rejected_login_raises_records_and_never_shows_the_password(
        self, tmp_path, state, smtp_server, monkeypatch
    ):
        from aiosmtpd.smtp import AuthResult

        server = smtp_server(
            authenticator=lambda *args: AuthResult(success=False, handled=False), auth_require_tls=False
        )
        monkeypatch.setenv("PSABILL_TEST_SMTP_PASSWORD", PASSWORD)
        cfg = smtp_config(
            tmp_path, server.port, security="none",
            username="billing", password_env="PSABILL_TEST_SMTP_PASSWORD",
        )
        report = recorded(state, fixed_report())
        with pytest.raises(EmailError) as caught:
            send_report(cfg, report, state)
        message = caught.value.message
        assert "rejected the login for 'billing'" in message
        assert "\n" not in message
        assert PASSWORD not in message and PASSWORD not in repr(caught.value)
        row = state.run(report.id)
        assert row.email.status == "failed" and row.email.message == message
        assert row.status == PARTIAL  # the run itself is untouched
        assert server.sink.envelopes == []

    def test_refused_connection_raises_and_records(self, tmp_path, state):
        cfg = smtp_config(tmp_path, free_port(), security="none", username="u", password=PASSWORD)
        report = recorded(state, fixed_report())
        with pytest.raises(EmailError, match=r"cannot connect to SMTP server 127\.0\.0\.1:\d+") as caught:
            send_report(cfg, report, state)
        assert PASSWORD not in caught.value.message
        row = state.run(report.id)
        assert row.email.status == "failed" and "cannot connect" in row.email.message
        assert EmailError.exit_code == 5

    def test_unset_password_env_is_named(self, tmp_path, monkeypatch):
        monkeypatch.delenv("PSABILL_NO_SUCH_VAR", raising=False)
        cfg = smtp_config(tmp_path, 25, username="u", password_env="PSABILL_NO_SUCH_VAR")
        with pytest.raises(EmailError, match="PSABILL_NO_SUCH_VAR"):
            transports.smtp_password(cfg.notify.smtp)

    def test_redact_removes_plain_and_base64_forms(self, tmp_path):
        import base64

        from psabill.text import redact

        # Resolving the password registers it with the redactor every message passes through.
        cfg = smtp_config(tmp_path, 25, username="u", password=PASSWORD)
        assert transports.smtp_password(cfg.notify.smtp) == PASSWORD
        b64 = base64.b64encode(PASSWORD.encode()).decode()
        assert redact.scrub(f"x {PASSWORD} y {b64}") == "x [redacted] y [redacted]"


# -- rendering -----------------------------------------------------------------------------


class TestRender:
    @pytest.mark.parametrize("name", ["report.txt", "report-aborted.txt", "report.csv"])
    def test_text_body_and_csv_match_the_golden_files(self, name):
        rendered = (templates.render(aborted_report(), next_attempt=RETRY) if "aborted" in name
                    else templates.render(fixed_report()))
        text = rendered.attachment if name.endswith(".csv") else rendered.text
        golden = GOLDEN / name
        if os.environ.get("PSABILL_UPDATE_GOLDEN"):
            golden.write_bytes(text.encode("utf-8"))
        assert text == golden.read_bytes().decode("utf-8")

    def test_text_and_html_state_the_same_facts(self):
        from markupsafe import escape

        rendered = templates.render(fixed_report(), history_url="https://billing.example.com/runs/{run_id}")

        facts = [
            "Zürich Managed IT",
            "1 company not updated",
            "Tue 2026-03-10 11:07 EDT",  # run time in the account zone
            "scheduled",
            "started 2 h 7 min late",
            "Every Tuesday at 09:00 (America/New_York)",
            "Tue 2026-03-17 09:00 EDT",
            "Globex Corporation", "30 → 25", "-5", "+2",
            "agreement 'Managed Services' is cancelled",
            "reactivate the agreement in ConnectWise or map another one",
            "failed 1, unmapped 2, updated 2, unchanged 1",  # what needs action first (outcomes.ITEM_ORDER)
            "psabill-run-000007.csv",
        ]
        for fact in facts:
            assert fact in rendered.text, fact
            assert str(escape(fact)) in rendered.html, fact

    def test_hostile_names_are_inert(self):
        rendered = templates.render(fixed_report())
        # Literal in text, escaped in HTML.
        assert ACME in rendered.text
        assert "&lt;b&gt;Acme &amp; Co&lt;/b&gt;" in rendered.html
        assert "<b>Acme" not in rendered.html
        # The newline is shown, not obeyed: no forged line, and the leading "=" is kept as is.
        assert not any(line.startswith("FAKE") for line in rendered.text.splitlines())
        assert '=HYPERLINK("x")\\nFAKE: all good (LastPass, LastPass+MFA)' in rendered.text
        assert "=HYPERLINK(&#34;x&#34;)\\nFAKE: all good" in rendered.html

    def test_hostile_names_survive_mime_encoding(self):
        rendered = templates.render(fixed_report())
        msg = parse(message.build_message(rendered, ADDRESSES, sender=SENDER).as_bytes())
        text, html = parts(msg)
        # SMTP policy sends CRLF line ends; the content is otherwise byte-for-byte the same.
        assert text.replace("\r\n", "\n") == rendered.text
        assert html.replace("\r\n", "\n") == rendered.html

    def test_subject_is_one_line_even_for_a_hostile_account_name(self):
        report = fixed_report()
        report.account_name = "Evil\r\nBcc: victim@example.com"
        rendered = templates.render(report)
        assert "\n" not in rendered.subject and "\r" not in rendered.subject
        msg = parse(message.build_message(rendered, ADDRESSES, sender=SENDER).as_bytes())
        assert msg["Bcc"] is None
        assert "Evil\\r\\nBcc: victim@example.com" in msg["Subject"]

    def test_a_line_break_in_a_header_value_is_refused(self):
        rendered = templates.Rendered("ok", "t", "<p>h</p>")
        with pytest.raises(EmailError, match="line break"):
            message.build_message(rendered, ADDRESSES, sender="a@example.com\nBcc: x@example.com")
        with pytest.raises(EmailError, match="line break"):
            message.build_message(templates.Rendered("a\nBcc: x@example.com", "t", "h"), ADDRESSES, sender=SENDER)

    @pytest.mark.parametrize(
        "status, items, words",
        [
            (SUCCESS, [], "complete"),
            ("failed", [], "failed"),
            ("aborted", [], "failed"),
            (PARTIAL, [Item("A", "x", FAILED), Item("A", "y", FAILED),
                       Item("B", "x", FAILED)], "2 companies not updated"),
        ],
        ids=["complete", "failed", "aborted", "partial-counts-companies"],
    )
    def test_outcome_in_words(self, status, items, words):
        report = fixed_report()
        report.status, report.items = status, items
        assert facts.outcome_text(report) == words
        assert templates.render(report).text.startswith(f"psabill billing update for Zürich Managed IT: {words}\n")

    def test_history_url_takes_the_run_id_else_the_command_is_shown(self):
        report = fixed_report()
        report.id = 42
        with_url = templates.render(report, history_url="https://billing.example.com/runs/{run_id}")
        assert "Details: https://billing.example.com/runs/42" in with_url.text
        assert 'href="https://billing.example.com/runs/42"' in with_url.html
        without = templates.render(report)
        assert "Details: psabill history show 42" in without.text
        assert "psabill history show 42" in without.html

    def test_a_run_on_time_has_no_late_line_and_no_schedule_says_so(self):
        report = fixed_report()
        report.late_seconds, report.schedule_text, report.next_run = 4, None, None
        text = templates.render(report).text
        assert "Late:" not in text
        assert "no recurring update is scheduled" in text and "none scheduled" in text

    def test_an_aborted_dry_run_says_why_and_that_nothing_was_written(self):
        from markupsafe import escape

        report = fixed_report()
        report.trigger, report.status, report.account_name = "dry-run", "aborted", ""
        report.message = "PSA login failed: 401\nUnauthorized"  # a message's line break folds to a space
        rendered = templates.render(report)
        assert rendered.subject == "psabill: FAILED: billing update: 2 to change, 1 failed, 2 unmapped (2026-03-10, dry run)"
        for fact in ["DRY RUN: nothing was written", "Action needed: PSA login failed: 401 Unauthorized"]:
            assert fact in rendered.text, fact
        assert "\nUnauthorized" not in rendered.text  # shown on its line, never obeyed as a new one
        assert str(escape("PSA login failed: 401 Unauthorized")) in rendered.html
        assert "DRY RUN:" in rendered.html

    def test_template_dir_overrides_per_file(self, tmp_path, state):
        custom = tmp_path / "tpl"
        custom.mkdir()
        (custom / "subject.txt").write_text("Billing {{ outcome }} for {{ account }}\n")
        (custom / "body.html").write_text("<p>{{ account }}: {{ changes.total }} changes</p>")
        cfg = make_config(tmp_path, {"template_dir": "tpl"})  # relative to the config file
        report = fixed_report()
        report.account_name = "A & B"
        rendered = notify.render_for(cfg, report)
        assert rendered.subject == "Billing 1 company not updated for A & B"
        assert rendered.attachment_name == "psabill-run-000007.csv"  # the CSV does not depend on templates
        assert rendered.html == "<p>A &amp; B: 2 changes</p>"  # custom HTML is autoescaped too
        assert rendered.text.startswith("psabill billing update for A & B")  # built-in fallback

    def test_a_broken_custom_template_is_an_email_error(self, tmp_path):
        custom = tmp_path / "tpl"
        custom.mkdir()
        (custom / "body.txt").write_text("{{ no_such_variable }}\n")
        with pytest.raises(EmailError, match="body.txt.*no_such_variable"):
            templates.render(fixed_report(), template_dir=custom)

    def test_builtin_templates_are_found_in_the_checkout(self):
        directory = templates.builtin_template_dir()
        assert directory is not None
        assert {p.name for p in directory.iterdir()} >= set(templates.TEMPLATE_NAMES)

    def test_importing_notify_does_not_import_jinja2(self):
        src = Path(notify.__file__).parents[2]
        code = "import sys, psabill.notify; sys.exit(1 if 'jinja2' in sys.modules else 0)"
        done = subprocess.run(
            [sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(src)}, check=False
        )
        assert done.returncode == 0


# -- other transports and policy ---------------------------------------------------------------


class TestTransports:
    def test_file_transport_writes_one_eml_per_run(self, tmp_path, state):
        outbox = tmp_path / "outbox"
        cfg = make_config(tmp_path, {"transport": "file", "file": {"dir": str(outbox)}})
        first = recorded(state, fixed_report())
        # The next week's occurrence: the ledger records each occurrence's run once.
        second = recorded(state, replace(fixed_report(), occurrence=datetime(2026, 3, 17, 13, 0, tzinfo=UTC)))
        send_report(cfg, first, state)
        send_report(cfg, second, state)
        send_report(cfg, first, state, force=True)  # a resend replaces, never duplicates
        names = sorted(p.name for p in outbox.iterdir())
        assert names == [f"run-{first.id:06d}.eml", f"run-{second.id:06d}.eml"]
        msg = parse((outbox / names[0]).read_bytes())
        assert msg["X-Psabill-Run"] == str(first.id)
        assert msg.get_content_type() == "multipart/mixed"
        assert state.run(first.id).email.status == "sent"

    def test_file_transport_defaults_to_the_state_outbox(self, tmp_path, state):
        cfg = make_config(tmp_path, {"transport": "file"})
        report = recorded(state, fixed_report())
        send_report(cfg, report, state)
        assert (state.dir / "outbox" / f"run-{report.id:06d}.eml").exists()

    def test_sendmail_transport_pipes_the_message_to_the_command(self, tmp_path, state):
        captured = tmp_path / "captured.eml"
        script = tmp_path / "fake-sendmail"
        script.write_text(f"#!/bin/sh\necho \"$@\" > '{tmp_path}/args'\ncat > '{captured}'\n")
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
        cfg = make_config(tmp_path, {"transport": "sendmail", "sendmail": {"command": [str(script), "-t", "-oi"]}})
        report = recorded(state, fixed_report())
        send_report(cfg, report, state)
        msg = parse(captured.read_bytes())
        assert [a.addr_spec for a in msg["To"].addresses] == ADDRESSES
        assert (tmp_path / "args").read_text().strip() == "-t -oi"
        assert state.run(report.id).email.status == "sent"

    def test_a_failing_sendmail_reports_its_first_error_line(self, tmp_path, state):
        script = tmp_path / "bad-sendmail"
        script.write_text("#!/bin/sh\ncat >/dev/null\necho 'queue dir not writable' >&2\necho more >&2\nexit 75\n")
        script.chmod(0o755)
        cfg = make_config(tmp_path, {"transport": "sendmail", "sendmail": {"command": [str(script)]}})
        report = recorded(state, fixed_report())
        with pytest.raises(EmailError, match="exited with status 75: queue dir not writable$"):
            send_report(cfg, report, state)
        assert state.run(report.id).email.status == "failed"

    def test_a_missing_sendmail_is_named(self, tmp_path):
        cfg = make_config(tmp_path, {"transport": "sendmail", "sendmail": {"command": [str(tmp_path / "nope")]}})
        with pytest.raises(EmailError, match="not found"):
            transports.deliver(cfg, message.build_message(templates.Rendered("s", "t", "h"), ADDRESSES, sender=SENDER),
                               ADDRESSES)

    def test_no_addresses_is_skipped_and_says_no_report_is_sent(self, tmp_path, state):
        cfg = make_config(tmp_path, {"emails": [], "transport": "file"})
        report = recorded(state, fixed_report())
        send_report(cfg, report, state)
        row = state.run(report.id)
        assert row.email.status == "skipped" and "no report is sent" in row.email.message

    def test_manual_runs_are_emailed_only_with_on_manual(self, tmp_path, state):
        outbox = tmp_path / "out"
        report = fixed_report()
        report.trigger = "manual"
        recorded(state, report)
        off = make_config(tmp_path, {"transport": "file", "file": {"dir": str(outbox)}})
        send_report(off, report, state)
        assert state.run(report.id).email.status == "skipped" and not outbox.exists()
        on = make_config(tmp_path, {"transport": "file", "file": {"dir": str(outbox)}, "on_manual": True})
        send_report(on, report, state)
        assert state.run(report.id).email.status == "sent"


# -- the commands -------------------------------------------------------------------------------


@pytest.fixture
def cli_env(tmp_path: Path, state: State) -> Any:
    import tomli_w

    from psabill.cli.options import App
    from psabill.config.paths import Paths

    outbox = tmp_path / "outbox"
    config_path = tmp_path / "config.toml"
    config_path.write_text(tomli_w.dumps({
        "version": 1,
        "account": {"name": "Zürich Managed IT", "timezone": "America/New_York"},
        "schedule": {"enabled": True, "mode": "weekly", "weekday": "tue", "hour": 9},
        "notify": {"emails": ADDRESSES, "transport": "file", "file": {"dir": str(outbox)}},
    }))
    config_path.chmod(0o600)
    from psabill.config.settings import load

    state.account = load(config_path, check_addresses=False).account_id  # the config's runs, as it sees them
    report = fixed_report()
    # The run records how it looked when it ran (account, schedule, next run): a report rendered later says the same.
    recorded(state, report)
    ctx = App(Paths(config=config_path, state_dir=state.dir, crontab_file=None))
    return ctx, report, outbox


def invoke(ctx: Any, *args: str) -> Any:
    from click.testing import CliRunner

    from psabill.cli.email import email_group

    return CliRunner().invoke(email_group, list(args), obj=ctx, env={"PSABILL_NOW": "2026-03-12T12:00:00Z"})


class TestCommands:
    def test_preview_prints_the_latest_run_with_the_schedule_it_ran_with(self, cli_env):
        ctx, report, outbox = cli_env
        result = invoke(ctx, "preview")
        assert result.exit_code == 0, result.output
        assert ("Subject: psabill: partial: Zürich Managed IT billing update: 2 changed, 1 failed, 2 unmapped "
                "(2026-03-10)") in result.output
        assert "Every Tuesday at 09:00 (America/New_York)" in result.output
        assert "Next run:  Tue 2026-03-17 09:00 EDT" in result.output
        assert ACME in result.output
        assert not outbox.exists()  # a preview sends nothing

    def test_preview_html(self, cli_env):
        ctx, report, _ = cli_env
        result = invoke(ctx, "preview", str(report.id), "--html")
        assert result.exit_code == 0, result.output
        assert result.output.startswith("<!DOCTYPE html>")
        assert "&lt;b&gt;Acme &amp; Co&lt;/b&gt;" in result.output

    def test_preview_of_an_unknown_run_is_a_usage_error(self, cli_env):
        from psabill.errors import UsageError

        ctx, _, _ = cli_env
        result = invoke(ctx, "preview", "999")
        assert isinstance(result.exception, UsageError)
        assert "no run 999 in the history" in str(result.exception)

    def test_resend_delivers_and_records(self, cli_env, state):
        ctx, report, outbox = cli_env
        result = invoke(ctx, "resend", str(report.id))
        assert result.exit_code == 0, result.output
        assert (outbox / f"run-{report.id:06d}.eml").exists()
        assert state.run(report.id).email.status == "sent"

    def test_test_sends_a_test_message(self, cli_env):
        ctx, _, outbox = cli_env
        result = invoke(ctx, "test")
        assert result.exit_code == 0, result.output
        (sent,) = list(outbox.iterdir())
        assert sent.name == "test-20260312T120000Z.eml"
        msg = parse(sent.read_bytes())
        assert msg["Subject"] == "psabill test message (Zürich Managed IT)"

    def test_every_command_has_help_with_an_example(self):
        from psabill.cli.email import email_group

        for name, command in [("email", email_group), *email_group.commands.items()]:
            assert command.help and "Example" in command.help, name


# -- the layout: action first, large runs small ----------------------------------------------------


def positions(text: str, *needles: str) -> List[int]:
    found = [text.find(n) for n in needles]
    assert -1 not in found, dict(zip(needles, found))
    return found


class TestLayout:
    def test_what_needs_action_comes_first_in_both_parts(self):
        rendered = templates.render(fixed_report())
        order = ["1 company not updated", "Failures (1)", "Fix: ", "Unmapped customers (1)", "Changes (2)", "Run:"]
        found = positions(rendered.text, *order)
        assert found == sorted(found)
        html_order = ["1 company not updated", 'id="failures"', "Fix:</strong>", 'id="unmapped"', 'id="changes"', ">Run<"]
        found = positions(rendered.html, *html_order)
        assert found == sorted(found)

    def test_an_aborted_run_says_what_to_do_and_when_it_retries_without_zero_counts(self):
        from markupsafe import escape

        rendered = templates.render(aborted_report(), next_attempt=RETRY)
        assert rendered.subject == "psabill: FAILED: Zürich Managed IT billing update: nothing was written (2026-03-10)"
        reason = "PSA login failed: 401 Unauthorized (check [psa] public_key and private_key)"
        assert f"Action needed: {reason}" in rendered.text
        assert "Next attempt:  Tue 2026-03-10 12:07 EDT" in rendered.text
        assert str(escape(reason)) in rendered.html and "Next attempt:" in rendered.html
        for part in (rendered.text, rendered.html):
            assert "updated 0" not in part and "unmapped 0" not in part
        assert rendered.attachment_name == "" and rendered.attachment == ""  # no items: no CSV
        msg = parse(message.build_message(rendered, ADDRESSES, sender=SENDER).as_bytes())
        assert msg.get_content_type() == "multipart/alternative"

    def test_an_aborted_run_without_a_retry_says_how_to_run_again(self):
        report = aborted_report()  # rendered without a retry: no firing within catch-up is left
        assert "Next attempt:  none left: fix the problem, then run 'psabill run --yes'" in templates.render(report).text

    def test_a_run_with_an_unmapped_customer_is_not_complete(self):
        report = fixed_report()
        report.status = SUCCESS
        report.items = [i for i in report.items if i.outcome != FAILED]
        rendered = templates.render(report)
        assert facts.outcome_text(report) == "1 customer unmapped"
        assert "complete" not in rendered.subject and "complete" not in rendered.text
        assert rendered.subject == "psabill: unmapped: Zürich Managed IT billing update: 2 changed, 2 unmapped (2026-03-10)"
        report.items = [i for i in report.items if i.outcome != UNMAPPED]
        assert templates.render(report).subject == "psabill: complete: Zürich Managed IT billing update: 2 changed (2026-03-10)"

    def test_the_subject_date_is_in_the_account_zone(self):
        report = fixed_report()
        report.started_at = datetime(2026, 12, 2, 3, 0, tzinfo=UTC)  # still Dec 1 in New York
        assert templates.render(report).subject.endswith("(2026-12-01)")

    @pytest.mark.parametrize("account", [
        "Example MSP",
        "Zürich Managed IT und Übersetzungsbüro Gesellschaft mit beschränkter Haftung Niederlassung Nord",
        "x" * 150,
        "Ü" * 120,
    ])
    def test_a_folded_subject_never_starts_with_a_space(self, account):
        report = fixed_report()
        report.account_name = account
        rendered = templates.render(report)
        raw = message.build_message(rendered, ADDRESSES, sender=SENDER).as_bytes()
        head = raw.split(b"\r\n\r\n", 1)[0]
        line = next(l for l in head.split(b"\r\n") if l.startswith(b"Subject:"))
        assert line.startswith(b"Subject: ") and not line[len(b"Subject: "):].startswith((b" ", b"\t"))
        assert len(line) > len(b"Subject: ")  # not an empty first line folded onto the next
        subject = parse(raw)["Subject"]
        assert subject == rendered.subject and subject == subject.strip()
        assert subject.startswith("psabill: ")


@pytest.fixture(scope="module")
def large() -> Any:
    """1,500 customers x 2 SKUs, 2 failures, 1 unmapped: the report, its rendering and the message."""
    from support.reports import large_report

    report = large_report()
    rendered = templates.render(report)
    raw = message.build_message(rendered, ADDRESSES, sender=SENDER, run_id=report.id).as_bytes()
    return report, rendered, raw


class TestLargeRun:

    def test_subject_carries_the_counts(self, large):
        _, rendered, _ = large
        assert rendered.subject == "psabill: partial: Example MSP billing update: 2998 changed, 2 failed, 1 unmapped (2026-12-01)"

    def test_the_readable_message_stays_under_gmails_clipping_size(self, large):
        _, rendered, raw = large
        msg = parse(raw)
        report_part = next(msg.iter_parts())
        assert report_part.get_content_type() == "multipart/alternative"
        # Gmail clips a message over ~102 KB; the whole message, attachment included, stays under 100 KB.
        assert len(raw) < 100_000
        assert len(rendered.html.encode()) < 60_000 and len(rendered.text.encode()) < 20_000

    def test_the_change_table_is_capped_and_says_how_many_more(self, large):
        _, rendered, _ = large
        assert rendered.text.count(" → ") == facts.LIST_LIMIT
        assert "... and 2948 more (every item is in the attached psabill-run-000042.csv)" in rendered.text
        assert "… and 2948 more (every item is in the attached psabill-run-000042.csv)" in rendered.html
        assert rendered.html.count("<tr><td") == facts.LIST_LIMIT

    def test_failures_come_before_changes_in_both_parts(self, large):
        _, rendered, _ = large
        text_failures, text_changes = positions(rendered.text, "Failures (2)", "Changes (2998)")
        assert text_failures < text_changes
        html_failures, html_unmapped, html_changes = positions(rendered.html, 'id="failures"', 'id="unmapped"', 'id="changes"')
        assert html_failures < html_unmapped < html_changes

    def test_every_item_is_in_the_attached_csv(self, large):
        import csv
        import io

        report, _, raw = large
        msg = parse(raw)
        import zipfile

        (attachment,) = list(msg.iter_attachments())
        assert attachment.get_content_type() == "application/zip"  # a big list travels zipped
        assert attachment.get_filename() == "psabill-run-000042.csv.zip"
        with zipfile.ZipFile(io.BytesIO(attachment.get_content())) as archive:
            assert archive.namelist() == ["psabill-run-000042.csv"]
            content = archive.read("psabill-run-000042.csv").decode("utf-8")
        assert content.startswith("\ufeff")  # Excel reads it as UTF-8
        rows = list(csv.DictReader(io.StringIO(content.lstrip("\ufeff"))))
        assert len(rows) == len(report.items) == 3001
        assert list(rows[0]) == ["customer", "sku", "psa_company", "agreement", "line", "old", "new",
                                 "delta", "outcome", "rule", "message", "hint"]  # rule: what held an item
        assert {r["outcome"] for r in rows} == {"updated", "failed", "unmapped"}
        fabrikam = next(r for r in rows if r["customer"] == "Fabrikam")
        assert fabrikam["message"] == "'=cmd|' /C calc'!A0 answered 403"


class TestCsv:
    @pytest.mark.parametrize("value, shown", [
        ("=1+2", "'=1+2"), ("+SUM(A1)", "'+SUM(A1)"), ("-2+3", "'-2+3"), ("@cmd", "'@cmd"),
        # A leading tab or CR is shown as \t / \r (the one cleaner's escapes): inert text, no formula.
        ("\tx", "\\tx"), ("\rx", "\\rx"), ("Acme", "Acme"), ("a=b", "a=b"),
        (-5, -5), (3, 3), ("+2", "+2"), (None, ""), ("two\nlines", "two\\nlines"),
    ])
    def test_cells_are_never_formulas_and_numbers_stay_numbers(self, value, shown):
        from psabill.notify.attachment import cell

        assert cell(value) == shown

    def test_the_attachment_lists_every_item_and_guards_hostile_names(self):
        rendered = templates.render(fixed_report())
        assert rendered.attachment_name == "psabill-run-000007.csv"
        lines = rendered.attachment.split("\r\n")
        assert lines[0] == "customer,sku,psa_company,agreement,line,old,new,delta,outcome,rule,message,hint"
        assert len([l for l in lines[1:] if l]) == len(fixed_report().items)
        assert '"\'=HYPERLINK(""x"")\\nFAKE: all good",LastPass,' in rendered.attachment


class TestSender:
    def test_the_default_sender_uses_the_full_domain_name(self, monkeypatch):
        import socket

        monkeypatch.setattr(socket, "getfqdn", lambda *a: "billing01.msp.example.com")
        assert message.default_from() == "psabill@billing01.msp.example.com"
        msg = message.build_message(templates.Rendered("s", "t", "h"), ADDRESSES)
        assert msg["From"] == "psabill@billing01.msp.example.com"
        assert msg["Message-ID"].endswith("@billing01.msp.example.com>")

    def test_a_host_without_a_domain_refuses_to_send_and_names_the_setting(self, tmp_path, state, monkeypatch):
        import socket

        monkeypatch.setattr(socket, "getfqdn", lambda *a: "vm")
        with pytest.raises(EmailError) as caught:
            message.default_from()
        assert "\n" not in caught.value.message and "set [notify] from" in caught.value.message
        captured = tmp_path / "captured.eml"
        script = tmp_path / "fake-sendmail"
        script.write_text(f"#!/bin/sh\ncat > '{captured}'\n")
        script.chmod(0o755)
        cfg = make_config(tmp_path, {"transport": "sendmail", "sendmail": {"command": [str(script)]}})
        no_sender = cfg._replace(notify=cfg.notify._replace(sender=None))
        report = recorded(state, fixed_report())
        with pytest.raises(EmailError, match=r"set \[notify\] from"):
            send_report(no_sender, report, state)
        assert not captured.exists()
        assert state.run(report.id).email.status == "failed"

    def test_the_file_transport_writes_even_on_a_host_without_a_domain(self, tmp_path, state, monkeypatch):
        import socket

        monkeypatch.setattr(socket, "getfqdn", lambda *a: "vm")
        outbox = tmp_path / "outbox"
        cfg = make_config(tmp_path, {"transport": "file", "file": {"dir": str(outbox)}})
        no_sender = cfg._replace(notify=cfg.notify._replace(sender=None))
        report = recorded(state, fixed_report())
        send_report(no_sender, report, state)
        assert parse((outbox / f"run-{report.id:06d}.eml").read_bytes())["From"] == "psabill@vm"
