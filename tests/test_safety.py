"""The billing safety net (issue 20): plan, guard, apply; held items; approve and reject.

Every test drives the real CLI against the ConnectWise sandbox on loopback,
with the guard's defaults unless it says otherwise. A book holds 20 customers
with 25 seats each; a first run over a source that agrees applies a plan, so
later runs have a baseline, as they would in production.
"""

from __future__ import annotations

import email
import email.policy
import json
from pathlib import Path
from typing import Dict, Iterator

import pytest

from psabill.errors import ExitCode
from psabill.sandbox.connectwise import Sandbox
from support.book import Book, outcomes_of
from support.env import Env

CUSTOMERS = [f"CUST{n:04d}" for n in range(1, 21)]


@pytest.fixture
def book(env: Env) -> Iterator[Book]:
    with Sandbox() as sandbox:
        book = Book(env, sandbox)
        book.source({c: 25 for c in CUSTOMERS})
        code, first, _ = book.run("--yes")
        assert code == 0 and first["status"] == "success" and first["counts"]["unchanged"] == 20
        yield book


def normal(**changes: int) -> Dict[str, int]:
    seats = {c: 25 for c in CUSTOMERS}
    seats.update(changes)
    return seats


def held(run: dict) -> Dict[str, str]:
    return {i["customer"]: i["rule"] for i in run["items"] if i["outcome"] == "held"}


class TestDefaultsHold:
    def test_max_zeroed_share_holds_a_plan_that_sets_most_lines_to_0(self, book: Book) -> None:
        book.source({c: 0 for c in CUSTOMERS})
        code, run, _ = book.run("--yes")
        assert code == ExitCode.HELD and run["status"] == "held"
        assert set(held(run)) == set(CUSTOMERS) and set(held(run).values()) == {"max_zeroed_share"}
        assert book.writes() == 0 and set(book.quantities().values()) == {25}

    def test_hold_unterminated_holds_a_file_cut_mid_number(self, book: Book) -> None:
        # The exporter was cut off while writing the last row's "25": it reads as 2.
        book.source(normal(CUST0020=2), terminated=False)
        code, run, _ = book.run("--yes")
        assert code == ExitCode.HELD and held(run) == {"CUST0020": "hold_unterminated"}
        assert book.quantity("CUST0020") == 25 and book.writes() == 0

    def test_hold_unterminated_holds_a_command_that_exited_0_after_half_its_output(self, book: Book, env: Env) -> None:
        script = env.config.parent / "export.sh"
        half = "customer,sku,seats\\n" + "".join(f"{c},LastPass,25\\n" for c in CUSTOMERS[:10]) + "CUST0011,LastPass,4"
        script.write_text(f"#!/bin/sh\nprintf '{half}'\nexit 0\n")
        script.chmod(0o700)
        _switch_source(env, {"kind": "command", "command": ["./export.sh"]})
        code, run, _ = book.run("--yes")
        assert code == ExitCode.HELD and run["status"] == "held"
        assert book.writes() == 0 and book.quantity("CUST0011") == 25

    def test_max_missing_share_holds_a_source_that_lacks_most_of_the_last_runs_rows(self, book: Book) -> None:
        book.source({c: 24 for c in CUSTOMERS[:3]})  # 3 of the 20 customers the last run billed
        code, run, _ = book.run("--yes")
        assert code == ExitCode.HELD and set(held(run).values()) == {"max_missing_share"}
        assert "lacks 17 of the 20" in run["items"][0]["message"]
        assert book.writes() == 0

    def test_hold_empty_holds_a_header_only_source_after_a_run_that_had_rows(self, book: Book) -> None:
        book.source({})
        code, run, out = book.run("--yes")
        assert code == ExitCode.HELD and run["status"] == "held" and book.writes() == 0
        assert "held for approval" in out

    def test_max_sku_drop_holds_a_sku_whose_total_drops_sharply(self, book: Book) -> None:
        book.source({c: 10 for c in CUSTOMERS})  # 500 seats -> 200: every line shrinks, none to 0
        code, run, _ = book.run("--yes")
        assert code == ExitCode.HELD and set(held(run).values()) == {"max_sku_drop"}
        assert book.writes() == 0

    def test_max_line_factor_holds_the_one_line_that_jumps_and_writes_the_others(self, book: Book) -> None:
        book.source(normal(CUST0001=5000, CUST0002=27, CUST0003=24))
        code, run, _ = book.run("--yes")
        assert code == ExitCode.HELD and run["status"] == "held"
        assert held(run) == {"CUST0001": "max_line_factor"}
        assert book.quantity("CUST0001") == 25 and book.quantity("CUST0002") == 27 and book.quantity("CUST0003") == 24

    def test_max_seats_holds_a_line_above_the_ceiling(self, book: Book) -> None:
        book.source(normal(CUST0004=999_999_999))
        code, run, _ = book.run("--yes")
        assert code == ExitCode.HELD and held(run) == {"CUST0004": "max_seats"}
        assert book.quantity("CUST0004") == 25 and book.writes() == 0


class TestDefaultsDoNotHold:
    def test_a_normal_month_where_a_few_lines_change_by_a_few_seats_is_written(self, book: Book) -> None:
        book.source(normal(CUST0001=27, CUST0005=23, CUST0009=30))
        code, run, _ = book.run("--yes")
        assert code == 0 and run["status"] == "success" and run["counts"]["updated"] == 3
        assert book.quantity("CUST0009") == 30

    def test_a_new_customer_is_written(self, book: Book) -> None:
        # A new customer's line is added to its agreement at 0 seats; the source then bills it.
        agreement = book.sandbox.add_agreement(book.sandbox.add_company("NEW0001", "New Customer"))
        book.lines["NEW0001"] = (agreement, book.sandbox.add_addition(agreement, "SEATS-STD", 0))
        book.source({**normal(), "NEW0001": 140})
        code, run, _ = book.run("--yes")
        assert code == 0 and run["status"] == "success" and book.quantity("NEW0001") == 140

    def test_a_first_run_where_the_psa_lines_hold_similar_numbers_is_written(self, env: Env) -> None:
        with Sandbox() as sandbox:
            book = Book(env, sandbox, seats=25)
            book.source({c: 25 + (n % 3) - 1 for n, c in enumerate(CUSTOMERS)})
            code, run, _ = book.run("--yes")
        assert code == 0 and run["status"] == "success" and run["counts"]["held"] == 0


class TestHeld:
    def test_a_held_run_says_so_in_the_subject_first_and_lists_each_held_line_with_its_rule_first(
            self, book: Book, env: Env) -> None:
        book.source(normal(CUST0001=5000, CUST0002=27))
        code, run, _ = book.run("--yes")
        assert code == ExitCode.HELD
        message = email.message_from_bytes(sorted((env.tmp / "outbox").glob("*.eml"))[-1].read_bytes(),
                                           policy=email.policy.default)
        assert message["Subject"].startswith("psabill: HELD for approval:")
        text = next(p for p in message.walk() if p.get_content_type() == "text/plain").get_content()
        held_at, changes_at = text.index("HELD FOR APPROVAL"), text.index("Changes (")
        assert held_at < changes_at and "CUST0001 / LastPass: 25 -> 5000 [max_line_factor]" in text
        html = next(p for p in message.walk() if p.get_content_type() == "text/html").get_content()
        assert html.index('id="held"') < html.index('id="changes"')

    def test_status_shows_held_for_approval_with_the_run(self, book: Book, env: Env) -> None:
        book.source(normal(CUST0001=5000))
        _, run, _ = book.run("--yes")
        text = env.run("status").output
        assert f"held for approval: run {run['id']}" in text
        data = json.loads(env.run("status", "--json").output)
        assert data["held"] == [{"run": run["id"], "items": 1, "started_at": data["held"][0]["started_at"]}]

    def test_a_held_run_pings_fail(self, env: Env) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        import threading

        seen = []

        class Ping(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                seen.append(self.path)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Ping)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            with Sandbox() as sandbox:
                book = Book(env, sandbox, notify={"ping_url": f"http://127.0.0.1:{server.server_port}/check"})
                book.source(normal())
                book.run("--yes")
                book.source(normal(CUST0001=5000))
                code, _, _ = book.run("--yes")
        finally:
            server.shutdown()
        assert code == ExitCode.HELD and seen[-2:] == ["/check/start", "/check/fail"]

    def test_a_held_scheduled_run_is_not_retried_and_the_next_occurrence_plans_afresh(self, book: Book,
                                                                                        env: Env) -> None:
        book.schedule()
        book.source(normal(CUST0001=5000))
        code = env.run("run", "--scheduled", now="2026-12-01T14:00:00Z").exit_code
        assert code == ExitCode.HELD
        # The hourly retry firing finds the occurrence done: nothing runs, nothing is written.
        retry = env.run("run", "--scheduled", now="2026-12-01T15:00:00Z")
        assert retry.exit_code == 0 and retry.output == ""
        book.source(normal(CUST0001=26))  # the exporter is fixed by next week
        assert env.run("run", "--scheduled", now="2026-12-08T14:00:00Z").exit_code == 0
        assert book.quantity("CUST0001") == 26

    def test_an_interactive_run_shows_what_the_guard_found_and_the_admins_yes_covers_it(self, book: Book,
                                                                                         env: Env) -> None:
        from support.tty import interactive

        book.source(normal(CUST0001=5000))
        session = interactive(env, ["run"], answer="y")
        assert "GUARD [max_line_factor] CUST0001 / LastPass" in session.output
        assert session.code == 0 and book.quantity("CUST0001") == 5000


class TestApproveAndReject:
    def test_approve_writes_exactly_the_held_plan_and_records_who_and_when(self, book: Book, env: Env) -> None:
        book.source(normal(CUST0001=5000, CUST0002=27))
        _, run, _ = book.run("--yes")
        book.source(normal(CUST0001=7))  # the source changed since: approve applies the plan, not the source
        result = env.run("approve", str(run["id"]), "--yes", "--json")
        assert result.exit_code == 0, result.output
        decision = json.loads(result.output)
        assert decision["action"] == "approved" and [i["outcome"] for i in decision["items"]] == ["updated"]
        assert book.quantity("CUST0001") == 5000
        shown = json.loads(env.run("history", "show", str(run["id"]), "--json").output)
        assert shown["status"] == "success" and shown["approvals"][0]["action"] == "approved"
        assert shown["approvals"][0]["by"] and shown["approvals"][0]["at"]

    def test_a_second_approve_writes_nothing(self, book: Book, env: Env) -> None:
        book.source(normal(CUST0001=5000))
        _, run, _ = book.run("--yes")
        assert env.run("approve", str(run["id"]), "--yes").exit_code == 0
        writes = book.writes()
        again = env.run("approve", str(run["id"]), "--yes")
        assert again.exit_code == 0 and "holds nothing to decide" in again.output and book.writes() == writes

    def test_approve_refuses_an_item_whose_psa_quantity_changed_since_the_plan(self, book: Book, env: Env) -> None:
        book.source({c: 0 for c in CUSTOMERS})
        _, run, _ = book.run("--yes")
        book.set_quantity("CUST0003", 31)  # someone edited it in the PSA meanwhile
        result = env.run("approve", str(run["id"]), "--yes", "--json")
        items = {i["customer"]: i for i in json.loads(result.output[:result.output.rindex("}") + 1])["items"]}
        assert items["CUST0003"]["outcome"] == "failed"
        assert "changed in ConnectWise since the plan" in items["CUST0003"]["message"]
        assert book.quantity("CUST0003") == 31 and book.quantity("CUST0004") == 0
        assert result.exit_code == ExitCode.PARTIAL

    def test_reject_discards_the_held_plan_and_writes_nothing(self, book: Book, env: Env) -> None:
        book.source(normal(CUST0001=5000))
        _, run, _ = book.run("--yes")
        result = env.run("reject", str(run["id"]), "--yes", "--json")
        assert result.exit_code == 0 and json.loads(result.output)["action"] == "rejected"
        assert book.quantity("CUST0001") == 25
        assert env.run("approve", str(run["id"]), "--yes").exit_code == 0 and book.quantity("CUST0001") == 25
        shown = json.loads(env.run("history", "show", str(run["id"]), "--json").output)
        assert [a["action"] for a in shown["approvals"]] == ["rejected"]
        assert outcomes_of(shown)["rejected"] == ["CUST0001"]


class TestThePlanIsWhatIsWritten:
    def test_an_interactive_run_writes_the_plan_it_showed_even_if_the_source_changes_before_the_yes(
            self, book: Book, env: Env) -> None:
        from support.tty import interactive

        book.source(normal(CUST0001=30))

        def rewrite() -> None:  # while the admin reads the plan, the exporter rewrites the source
            book.source({c: 0 for c in CUSTOMERS})

        session = interactive(env, ["run"], answer="y", at_prompt=rewrite)
        assert "would update CUST0001 / LastPass: 25 -> 30" in session.output
        assert session.code == 0
        assert book.quantity("CUST0001") == 30 and book.quantity("CUST0002") == 25

    def test_a_line_that_moved_in_the_psa_since_the_plan_fails_and_the_others_go_on(self, book: Book,
                                                                                      env: Env) -> None:
        from support.tty import interactive

        book.source(normal(CUST0001=30, CUST0002=31))
        session = interactive(env, ["run"], answer="y", at_prompt=lambda: book.set_quantity("CUST0002", 40))
        assert session.code == ExitCode.PARTIAL
        assert "changed in ConnectWise since the plan" in session.output
        assert book.quantity("CUST0001") == 30 and book.quantity("CUST0002") == 40

    def test_the_plan_is_stored_with_a_digest_of_the_source_before_any_write(self, book: Book, env: Env) -> None:
        import hashlib
        import sqlite3

        book.source(normal(CUST0001=30))
        book.sandbox.before = lambda method, label: _assert_planned(env, method)
        code, run, _ = book.run("--yes")
        assert code == 0
        digest = hashlib.sha256((env.config.parent / "usage.csv").read_bytes()).hexdigest()
        with sqlite3.connect(str(env.state_dir / "state.db")) as db:
            stored = db.execute("SELECT source_digest, planned_at FROM runs WHERE id = ?", (run["id"],)).fetchone()
        assert stored[0] == digest and stored[1]


def _assert_planned(env: Env, method: str) -> None:
    """Before any PATCH reaches the PSA, the plan and the write's intent are committed in the ledger."""
    if method != "PATCH":
        return
    import sqlite3

    with sqlite3.connect(str(env.state_dir / "state.db")) as db:
        intents = db.execute("SELECT COUNT(*) FROM items WHERE intent_at IS NOT NULL").fetchone()[0]
        planned = db.execute("SELECT COUNT(*) FROM runs WHERE planned_at IS NOT NULL").fetchone()[0]
    assert intents >= 1 and planned >= 1


def _switch_source(env: Env, source: dict) -> None:
    import os

    import tomli_w

    from support.env import tomllib

    data = tomllib.loads(env.config.read_text())
    data["source"] = source
    env.config.write_text(tomli_w.dumps(data))
    os.chmod(env.config, 0o600)


def test_every_guard_rule_has_a_key_a_default_and_a_reference_entry() -> None:
    from psabill.config.reference import render_reference
    from psabill.config.schema import GuardSettings

    text = render_reference()
    for name, declaration in GuardSettings.KEYS.items():
        assert f"| `{name}` |" in text, name
        assert declaration.meaning and declaration.example, name
    assert (Path(__file__).parent / "test_safety.py").read_text().count("def test_max_") >= 5
