"""The admin's path, round two (issue 24): one test per point not proved elsewhere.

Elsewhere: the email path in check (tests/test_check.py), the README walk-through
(tests/test_walkthrough.py), the exports and the image (tests/test_export.py,
tests/test_cli_export.py, tests/test_dockerfile.py), versioned JSON
(tests/test_json_docs.py), weekday prefixes and zone case (tests/test_cli_habits.py).
"""

from __future__ import annotations

import email
import json
import re
import subprocess
import sys
from email import policy
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, List

import pytest
from click.testing import CliRunner

import psabill
from psabill.cli import cli
from psabill.errors import ExitCode
from psabill.sandbox.connectwise import Sandbox
from support.book import Book
from support.env import Env

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def book(env: Env) -> Any:
    with Sandbox() as sandbox:
        yield Book(env, sandbox, customers=6, seats=25, notify={"on_manual": True})


def emails(env: Env) -> List[email.message.EmailMessage]:
    return [email.message_from_bytes(p.read_bytes(), policy=policy.default)  # type: ignore[misc]
            for p in sorted((env.tmp / "outbox").glob("*.eml"))]


# -- 4. bare psabill, help, version ----------------------------------------------------------------


def test_bare_psabill_prints_the_help_and_exits_0_on_this_click() -> None:
    """Click 8.2+ made a bare group exit 2 with the help squashed into one Error: line; psabill keeps
    help and exit 0 (CI runs this on the newest Click, and on the oldest the 3.9 run installs)."""
    done = subprocess.run([sys.executable, "-m", "psabill"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Usage: psabill") and "Commands:" in done.stdout
    assert "Error" not in done.stdout + done.stderr


def test_psabill_help_command_is_that_commands_help() -> None:
    runner = CliRunner()
    assert runner.invoke(cli, ["help", "schedule", "set"]).output == runner.invoke(cli, ["schedule", "set",
                                                                                         "--help"]).output
    assert runner.invoke(cli, ["help"]).output == runner.invoke(cli, ["--help"]).output
    nothing = runner.invoke(cli, ["help", "nosuch"])
    assert nothing.exit_code == 2 and "nosuch" in nothing.output


def test_the_version_has_one_source() -> None:
    """pyproject takes the version from psabill/__init__.py; the command, --version and the metadata agree."""
    assert 'dynamic = ["version"]' in (ROOT / "pyproject.toml").read_text()
    runner = CliRunner()
    assert runner.invoke(cli, ["version"]).output.strip() == f"psabill {psabill.__version__}"
    assert psabill.__version__ in runner.invoke(cli, ["--version"]).output
    assert metadata.version("psabill") == psabill.__version__


# -- 5. a run that maps nothing is not green -------------------------------------------------------


def test_a_run_where_every_row_is_unmapped_is_unmapped_not_success(env: Env, book: Book) -> None:
    book.source({}, extra=[f"Nobody {n} Inc,LastPass,5" for n in range(6)])
    code, run, _ = book.run("--yes")
    assert run["status"] == "unmapped" and code == ExitCode.PARTIAL
    [message] = emails(env)
    assert message["Subject"].count("6 unmapped") == 1, message["Subject"]


def test_a_run_that_maps_only_a_small_share_of_its_rows_is_unmapped(env: Env, book: Book) -> None:
    book.source({"CUST0001": 26}, extra=[f"Wrong Column {n},LastPass,5" for n in range(5)])
    code, run, _ = book.run("--yes")
    assert run["status"] == "unmapped" and code == ExitCode.PARTIAL
    assert run["counts"]["updated"] == 1 and run["counts"]["unmapped"] == 5


def test_a_run_with_one_unmapped_customer_among_many_is_still_a_success(env: Env, book: Book) -> None:
    book.source({c: 26 for c in book.lines}, extra=["Nobody Inc,LastPass,5"])
    code, run, _ = book.run("--yes")
    assert run["status"] == "success" and code == 0
    [message] = emails(env)
    assert "1 unmapped" in message["Subject"]


# -- 8. outage emails ------------------------------------------------------------------------------


def test_an_outage_sends_one_email_when_the_occurrence_fails_and_one_when_it_succeeds_in_one_thread(
        env: Env, book: Book) -> None:
    book.schedule()  # weekly, Tuesday 09:00 New York: 2026-12-01 14:00Z
    book.source({c: 30 for c in book.lines})
    book.sandbox.fail(503, times=10_000)  # down for hours
    for hour in (14, 15, 16, 17):
        result = env.run("run", "--scheduled", now=f"2026-12-01T{hour}:00:30Z")
        assert result.exit_code == ExitCode.ABORTED
        # The first failure says so on stderr; the retries that fail the same way are quiet, so cron
        # mails nothing more each hour.
        assert bool(result.output.strip()) == (hour == 14), (hour, result.output)
        if hour == 14:
            # The email's "Next attempt" is the firing status names (the hourly line at 15:00Z).
            status = json.loads(env.run("status", "--json", now="2026-12-01T14:05:00Z").output)
            next_attempt = status["retrying"]["next_attempt"]["account"]
            [failed] = emails(env)
            text = failed.get_body(("plain",)).get_content()
            assert re.search(r"Next attempt: +\w+ " + re.escape(_short(next_attempt)), text), (next_attempt, text)
    assert len(emails(env)) == 1  # the retries that failed again sent nothing more
    book.sandbox.heal()  # the PSA is back
    assert env.run("run", "--scheduled", now="2026-12-01T18:00:30Z").exit_code == 0
    both = emails(env)
    assert len(both) == 2
    first, last = both
    assert last["In-Reply-To"] == first["Message-ID"] and first["Message-ID"] in last["References"]


def _short(stamp: str) -> str:
    """'2026-12-01T13:00:00-05:00' -> '2026-12-01 13:00', as the email shows it."""
    return stamp[:10] + " " + stamp[11:16]


# -- 9. the same order everywhere ------------------------------------------------------------------


def test_email_preview_and_resend_list_items_in_the_order_the_email_was_sent(env: Env, book: Book) -> None:
    book.source({c: 20 + n for n, c in enumerate(reversed(list(book.lines)))})
    code, run, _ = book.run("--yes")
    assert code == 0
    [sent] = emails(env)
    order = _customers(sent.get_body(("plain",)).get_content())
    preview = env.run("email", "preview", str(run["id"])).output
    assert _customers(preview) == order == sorted(order)
    assert [i["customer"] for i in run["items"]] == sorted(i["customer"] for i in run["items"])


def _customers(text: str) -> List[str]:
    return [m for m in re.findall(r"\b(CUST\d{4})\b", text)]


# -- 10. every request is counted --------------------------------------------------------------------


def test_the_run_record_counts_every_request_sent(env: Env, book: Book) -> None:
    book.source({c: 31 for c in book.lines})
    code, run, _ = book.run("--yes")
    assert code == 0
    assert run["api_requests"] == len(book.sandbox.requests)
    shown: Dict[str, Any] = json.loads(env.run("history", "show", str(run["id"]), "--json").output)
    assert shown["api_requests"] == len(book.sandbox.requests)
