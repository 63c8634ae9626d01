"""The ConnectWise rules of the PSA issue (10-13, 15), each against the sandbox behaving like live
ConnectWise, and every request the sandbox saw checked against the published schema."""

from __future__ import annotations

import json
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

from psabill.net.errors import RemoteError
from psabill.outcomes import FAILED, UNCHANGED, UNKNOWN, UPDATED
from psabill.psa.base import Agreement, Lines, Target, open_client
from psabill.psa.connectwise import ConnectWiseClient, api_base, api_host
from psabill.report import Item, Run
from psabill.run.perform import billing_date
from psabill.sandbox.connectwise import FUTURE_CANCELLED, FUTURE_EFFECTIVE, Sandbox
from psabill.sources.rows import UsageRow
from support import runs
from support.env import Env, configure, connectwise_log_problems, free_port, psa_settings, settings_for
from support.smtp import smtp_sink

KEY = "cw-rules-key"
DAY = date(2026, 12, 1)


def client(sb: Sandbox, billing: date = DAY, **overrides: Any) -> ConnectWiseClient:
    section: Dict[str, Any] = dict(sb.config_section(), private_key=sb.private_key, max_retries=1, timeout=5)
    section.update(overrides)
    return ConnectWiseClient(psa_settings(section), billing_date=billing, backoff=0.001, max_wait=0.01)


def lines_of(psa: ConnectWiseClient, agreement_id: int) -> Lines:
    return psa.lines([Agreement(str(agreement_id), "1", "x")], ["SEATS-STD"])


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    with Sandbox(private_key=KEY) as server:
        yield server


def book(sb: Sandbox, identifier: str = "ACME") -> int:
    return sb.add_agreement(sb.add_company(identifier, f"{identifier} Ltd"))


def refresh(sb: Sandbox, tmp_path: Path, rows: List[UsageRow], billing: date = DAY) -> Run:
    (tmp_path / "conf").mkdir(exist_ok=True)
    (tmp_path / "conf" / "cw.key").write_text(sb.private_key)
    (tmp_path / "conf" / "cw.key").chmod(0o600)
    cfg = settings_for(tmp_path / "conf" / "config.toml", {
        "products": {"LastPass": "SEATS-STD"},
        "psa": {**sb.config_section(), "private_key_file": "cw.key", "max_retries": 0, "timeout": 5}})
    psa = open_client(cfg.psa, billing_date=billing, backoff=0.001, max_wait=0.01)
    try:
        return runs.refresh(psa, rows, products=cfg.product_map)
    finally:
        psa.close()


def only(report: Run) -> Item:
    assert len(report.items) == 1
    return report.items[0]


# -- 10. the API URL -----------------------------------------------------------------


class TestRule10ApiUrl:
    @pytest.mark.parametrize("codebase", ["v2025_1/", "v2024_2/", "v4_6_release/"])
    def test_rule10_a_host_discovers_the_codebase_with_companyinfo(self, codebase: str) -> None:
        with Sandbox(private_key=KEY, codebase=codebase) as sb:
            described = client(sb).check()
            assert sb.api_url in described
            assert [r.path for r in sb.requests] == [f"/login/companyinfo/{sb.company}",
                                                     f"/{codebase}apis/3.0/system/info"]
            assert connectwise_log_problems(sb) == []

    def test_rule10_a_full_api_url_is_used_exactly_as_given(self, sb: Sandbox) -> None:
        assert client(sb, url=sb.api_url).check().endswith(f"at {sb.api_url} (company {sb.company})")
        assert [r.endpoint for r in sb.requests] == ["GET system/info"]  # no discovery
        other = sb.url + "/v2023_2/apis/3.0"  # not what the sandbox runs: used as given, so it fails
        with pytest.raises(RemoteError, match="v2023_2/apis/3.0/system/info: HTTP 404"):
            client(sb, url=other).check()
        assert connectwise_log_problems(sb) == []
        assert api_base("https://api-na.myconnectwise.net/v2025_1/apis/3.0", "v4_6_release/") == \
            "https://api-na.myconnectwise.net/v2025_1/apis/3.0"

    def test_rule10_a_browser_host_uses_the_cloud_api_host_others_stay_as_given(self) -> None:
        assert api_host("na.myconnectwise.net") == "api-na.myconnectwise.net"
        assert api_host("api-eu.myconnectwise.net") == "api-eu.myconnectwise.net"
        assert api_host("psa.example.com") == "psa.example.com"
        assert api_host("127.0.0.1:8080") == "127.0.0.1:8080"
        assert api_base("na.myconnectwise.net", "v2025_1/") == "https://api-na.myconnectwise.net/v2025_1/apis/3.0"
        assert api_base("api-au.myconnectwise.net", "v2025_1/") == \
            "https://api-au.myconnectwise.net/v2025_1/apis/3.0"

    def test_rule10_an_unknown_company_at_companyinfo_names_the_company(self, sb: Sandbox) -> None:
        with pytest.raises(RemoteError, match="companyinfo/nobody"):
            client(sb, company="nobody").check()

    def test_rule10_psabill_check_prints_the_resolved_api_base(self, env: Env) -> None:
        with Sandbox.sample(customers=3, codebase="v2025_1/") as sandbox, smtp_sink() as (port, _):
            configure(env, sandbox, port)  # check tries the email path too (without sending)
            result = env.run("check")
            assert result.exit_code == 0, result.output
            assert f"at {sandbox.api_url} " in result.output
            assert connectwise_log_problems(sandbox) == []


# -- 11. which addition is billing -----------------------------------------------------


class TestRule11BillingAddition:
    def test_rule11_an_addition_cancelled_in_the_future_is_billing_and_updated(self, sb: Sandbox,
                                                                               tmp_path: Path) -> None:
        aid = book(sb)
        xid = sb.add_addition(aid, "SEATS-STD", 10, cancelled_date=FUTURE_CANCELLED)
        item = only(refresh(sb, tmp_path, [UsageRow("ACME", "LastPass", 12)]))
        assert (item.outcome, item.line, item.old) == (UPDATED, str(xid), 10)
        assert sb.quantity(aid, xid) == 12
        assert connectwise_log_problems(sb) == []

    def test_rule11_an_addition_that_starts_later_is_never_written(self, sb: Sandbox, tmp_path: Path) -> None:
        aid = book(sb)
        current = sb.add_addition(aid, "SEATS-STD", 10)
        later = sb.add_addition(aid, "SEATS-STD", 10, effective_date=FUTURE_EFFECTIVE)
        item = only(refresh(sb, tmp_path, [UsageRow("ACME", "LastPass", 12)]))
        assert (item.outcome, item.line) == (UPDATED, str(current))
        assert sb.quantity(aid, later) == 10
        alone = book(sb, "SOON")
        sb.add_addition(alone, "SEATS-STD", 3, effective_date="2026-12-02T00:00:00Z")
        item = only(refresh(sb, tmp_path, [UsageRow("SOON", "LastPass", 5)]))
        assert item.outcome == FAILED and "is not on agreement" in item.message
        assert [p.path for p in sb.patches()] == [f"{sb.api_prefix}/finance/agreements/{aid}/additions/{current}"]
        assert connectwise_log_problems(sb) == []

    @pytest.mark.parametrize("billing,which", [(date(2026, 11, 15), "old"), (date(2026, 11, 29), "old"),
                                               (date(2026, 12, 1), "new"), (date(2027, 1, 15), "new")])
    def test_rule11_a_replaced_line_updates_the_one_billing_on_the_date(self, sb: Sandbox, tmp_path: Path,
                                                                        billing: date, which: str) -> None:
        aid = book(sb)
        ids = {"old": sb.add_addition(aid, "SEATS-STD", 7, cancelled_date="2026-11-30T00:00:00Z"),
               "new": sb.add_addition(aid, "SEATS-STD", 7, effective_date="2026-12-01T00:00:00Z")}
        item = only(refresh(sb, tmp_path, [UsageRow("ACME", "LastPass", 9)], billing))
        assert (item.outcome, item.line) == (UPDATED, str(ids[which]))
        assert {k: sb.quantity(aid, x) for k, x in ids.items()} == {which: 9, ("new" if which == "old" else "old"): 7}
        conditions = [r.query["conditions"] for r in sb.requests if r.endpoint.endswith("/additions")]
        assert all(f"<[{billing.isoformat()}" not in c for c in conditions)  # compares with the next midnight
        assert connectwise_log_problems(sb) == []

    def test_rule11_the_billing_date_is_the_run_start_on_the_account_calendar(self, tmp_path: Path) -> None:
        cfg = settings_for(tmp_path / "config.toml", {"account": {"timezone": "Australia/Sydney"}})
        report = Run(trigger="manual", started_at=datetime(2026, 11, 30, 22, 0, tzinfo=timezone.utc))
        assert billing_date(cfg, report) == date(2026, 12, 1)  # 09:00 in Sydney; still 30 November in UTC
        utc = settings_for(tmp_path / "config.toml", {})
        assert billing_date(utc, report) == date(2026, 11, 30)

    def test_rule11_a_run_bills_on_the_account_date_not_the_utc_date(self, env: Env) -> None:
        with Sandbox.sample(customers=6, seed=3) as sandbox:
            configure(env, sandbox, free_port())  # account zone America/New_York
            aid = next(a for a, row in sandbox.agreements.items() if row["company"]["identifier"] == "CUST00001")
            for addition in sandbox.additions[aid].values():
                if addition["product"]["identifier"] == "SEATS-STD":
                    addition["cancelledDate"] = "2026-12-01T00:00:00Z"  # bills through 30 November
                    old = addition["id"]
            new = sandbox.add_addition(aid, "SEATS-STD", 1, effective_date="2026-12-01T00:00:00Z")
            # 22:00 on 30 November in New York is already 1 December in UTC.
            result = env.run("run", "--yes", now="2026-12-01T03:00:00Z")
            assert "CUST00001 / LastPass" in result.output, result.output
            written = {p.path.rsplit("/", 1)[1] for p in sandbox.patches()
                       if f"/agreements/{aid}/" in p.path}
            assert written & {str(old), str(new)} == {str(old)} and sandbox.quantity(aid, new) == 1
            assert connectwise_log_problems(sandbox) == []


# -- 12. decimal quantities -------------------------------------------------------------


class TestRule12DecimalQuantities:
    def test_rule12_a_decimal_quantity_is_compared_exactly_and_written(self, sb: Sandbox, tmp_path: Path) -> None:
        aid = book(sb)
        xid = sb.add_addition(aid, "SEATS-STD", 2.5)
        item = only(refresh(sb, tmp_path, [UsageRow("ACME", "LastPass", 2)]))
        assert (item.outcome, item.old, item.new) == (UPDATED, Decimal("2.5"), 2)
        assert item.to_json()["old"] == 2.5 and item.to_json()["delta"] == -0.5
        assert sb.quantity(aid, xid) == 2
        again = only(refresh(sb, tmp_path, [UsageRow("ACME", "LastPass", 2)]))
        assert (again.outcome, again.old) == (UNCHANGED, 2)  # 2.0 is 2: no write
        assert len(sb.patches()) == 1
        assert connectwise_log_problems(sb) == []

    def test_rule12_lines_carry_exact_quantities(self, sb: Sandbox) -> None:
        aid = book(sb)
        for quantity in (2.5, 0.1, 3.0, 1e-3):
            sb.add_addition(aid, "SEATS-STD", quantity)
        lines = lines_of(client(sb), aid).by_agreement[str(aid)]
        assert [line.quantity for line in lines] == [Decimal("2.5"), Decimal("0.1"), 3, Decimal("0.001")]

    def test_rule12_the_report_and_history_show_2_5_to_2(self, env: Env) -> None:
        with Sandbox.sample(customers=6, seed=3) as sandbox:
            configure(env, sandbox, free_port())
            aid = next(a for a, row in sandbox.agreements.items() if row["company"]["identifier"] == "CUST00001")
            xid = next(x for x, row in sandbox.additions[aid].items() if row["product"]["identifier"] == "SEATS-STD")
            sandbox.additions[aid][xid]["quantity"] = 21.5  # the source says 21 seats
            result = env.run("run", "--yes", now="2026-12-01T15:00:00Z")
            assert "CUST00001 / LastPass: 21.5 -> 21" in result.output
            shown = json.loads(env.run("history", "show", "1", "--json").output)
            item = next(i for i in shown["items"] if i["customer"] == "CUST00001" and i["sku"] == "LastPass")
            assert (item["old"], item["new"], item["delta"], item["outcome"]) == (21.5, 21, -0.5, "updated")
            assert "21.5 -> 21" in env.run("history", "show", "1").output
            assert sandbox.quantity(aid, xid) == 21


# -- 13. every write verified -----------------------------------------------------------


class TestRule13VerifiedWrites:
    # An error object is a refusal: failed. An answer that is not the addition with its quantity cannot say
    # whether the PATCH landed: unknown (never assumed either way), for the next run to read back.
    @pytest.mark.parametrize("answer,outcome,expected", [
        ({"code": "InvalidObject", "message": "Addition is locked by billing"}, FAILED,
         "HTTP 200 but ConnectWise answered an error: InvalidObject: Addition is locked"),
        ({"id": 0}, UNKNOWN, "is not this addition with its quantity; the write is unconfirmed"),
        ([], UNKNOWN, "is not this addition with its quantity; the write is unconfirmed"),
    ])
    def test_rule13_a_patch_that_does_not_answer_the_new_quantity_is_never_counted_as_written(
            self, sb: Sandbox, tmp_path: Path, answer: Any, outcome: str, expected: str) -> None:
        aid = book(sb)
        xid = sb.add_addition(aid, "SEATS-STD", 4)
        sb.fail(200, body=answer, method="PATCH")
        item = only(refresh(sb, tmp_path, [UsageRow("ACME", "LastPass", 6)]))
        assert item.outcome == outcome and expected in item.message, item.message
        assert sb.quantity(aid, xid) == 4
        assert connectwise_log_problems(sb) == []

    def test_rule13_a_patch_answering_another_quantity_fails(self, sb: Sandbox) -> None:
        aid = book(sb)
        xid = sb.add_addition(aid, "SEATS-STD", 4)
        sb.fail(200, body={"id": xid, "quantity": 4.0}, method="PATCH")
        psa = client(sb)
        line = lines_of(psa, aid).by_agreement[str(aid)][0]
        [written] = psa.write([Target(1, line, 4, 6)], halt=lambda: False, sending=lambda batch: None)
        assert written.outcome == FAILED and "ConnectWise answered quantity 4, not 6" in written.message

    def test_rule13_the_sandbox_answers_an_error_object_with_200(self, sb: Sandbox) -> None:
        book(sb)
        sb.answer_error(endpoint="additions")
        found = lines_of(client(sb), max(sb.agreements))  # that agreement unreadable; the others would be read
        assert found.by_agreement == {}
        assert "expected a JSON list, got an error: InvalidObject" in found.unreadable[str(max(sb.agreements))]

    def test_rule13_check_fails_on_a_200_error_body_from_system_info(self, env: Env) -> None:
        with Sandbox.sample(customers=3) as sandbox:
            configure(env, sandbox, free_port())
            sandbox.answer_error(code="Unauthorized", message="Member is inactive", endpoint="system/info")
            result = env.run("check")
            assert result.exit_code != 0
            assert "PSA check failed" in result.output and "Member is inactive" in result.output
            assert connectwise_log_problems(sandbox) == []
