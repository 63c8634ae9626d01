"""ConnectWiseClient against the shipped sandbox: real HTTP on loopback, nothing mocked."""

from __future__ import annotations

import base64
from urllib.parse import urlencode
from datetime import date
from typing import Any, Dict, List, Optional, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from psabill.errors import ConfigError
from psabill.net.errors import AuthRefused, RemoteError, Unreachable
from psabill.psa.base import FAILED, UPDATED, Agreement, Line, Target, Written
from psabill.psa.connectwise import URL_BUDGET, ConnectWiseClient, api_base
from psabill.sandbox.connectwise import Sandbox, parse_conditions
from psabill.sandbox.server import BadRequest
from support.env import psa_settings

KEY = "cw-private-key-123"
PRODUCTS = ["SEATS-STD", "SEATS-MFA"]


def make(sb: Sandbox, billing_date: Optional[date] = None, **overrides: Any) -> ConnectWiseClient:
    section: Dict[str, Any] = dict(sb.config_section(), private_key=sb.private_key, max_retries=2, timeout=2)
    section.update(overrides)
    return ConnectWiseClient(psa_settings(section), billing_date=billing_date, backoff=0.001, max_wait=0.01)


def every(customers: int) -> List[str]:
    """The identifiers of a sample book's companies."""
    return [f"CUST{n:05d}" for n in range(1, customers + 1)]


def write(client: ConnectWiseClient, targets: Sequence[Target]) -> List[Written]:
    """Every target's outcome, in key order."""
    return sorted(client.write(targets, halt=lambda: False, sending=lambda batch: None), key=lambda w: w.key)


@pytest.fixture
def sb():
    with Sandbox.sample(customers=30, seed=7, private_key=KEY) as server:
        yield server


class TestSetup:
    def test_it_builds_the_api_base_from_a_site_and_its_codebase_or_a_full_url(self) -> None:
        assert api_base("api-na.myconnectwise.net", "v2025_1/") == "https://api-na.myconnectwise.net/v2025_1/apis/3.0"
        assert api_base("na.myconnectwise.net", "v2025_1/") == "https://api-na.myconnectwise.net/v2025_1/apis/3.0"
        assert api_base("psa.example.com", "v4_6_release/") == "https://psa.example.com/v4_6_release/apis/3.0"
        assert api_base("https://x.test/v4_6_release/apis/3.0/", "v2025_1/") == "https://x.test/v4_6_release/apis/3.0"

    def test_it_names_missing_keys(self) -> None:
        with pytest.raises(ConfigError, match="company, public_key"):
            ConnectWiseClient(psa_settings({"url": "https://x.test", "client_id": "c", "private_key": KEY}))

    def test_it_refuses_plain_http_to_a_remote_host(self) -> None:
        with pytest.raises(RemoteError, match="http://psa.example.com"):
            ConnectWiseClient(psa_settings({"url": "http://psa.example.com", "company": "c", "public_key": "p",
                               "client_id": "i", "private_key": KEY}))

    def test_check_reports_the_version(self, sb: Sandbox) -> None:
        assert "v2025.1.sandbox" in make(sb).check()

    def test_every_request_carries_auth_client_id_and_a_pinned_model_version(self, sb: Sandbox) -> None:
        make(sb).check()
        make(sb, api_version="2024.2").check()
        api = [r for r in sb.requests if r.endpoint != "GET login/companyinfo"]
        accepts = [r.headers["Accept"] for r in api]
        assert accepts == ["application/vnd.connectwise.com+json; version=2025.1",
                           "application/vnd.connectwise.com+json; version=2024.2"]
        assert all(r.headers["clientId"] == sb.client_id for r in api)
        assert all(r.status == 200 for r in sb.requests)  # the sandbox checked Basic auth


class TestAuth:
    def test_a_wrong_private_key_is_an_auth_error_that_never_shows_the_key(self, sb: Sandbox) -> None:
        wrong = "not-the-key-987"
        client = ConnectWiseClient(psa_settings({**sb.config_section(), "private_key": wrong}))
        token = base64.b64encode(f"{sb.company}+{sb.public_key}:{wrong}".encode()).decode()
        with pytest.raises(AuthRefused) as caught:
            client.check()
        for text in (str(caught.value), repr(caught.value)):
            assert wrong not in text and token not in text

    def test_an_unknown_client_id_is_an_auth_error(self, sb: Sandbox) -> None:
        with pytest.raises(AuthRefused, match="403"):
            make(sb, client_id="someone-else").check()


class TestReads:
    def test_it_follows_link_paging_at_1000(self) -> None:
        with Sandbox.sample(customers=2300, private_key=KEY) as big:
            companies = make(big).companies(every(2300))
            assert len(companies) == 2300
            pages = [r.query for r in big.requests if r.endpoint == "GET company/companies"]
        assert [(q["page"], q["pageSize"]) for q in pages] == [("1", "1000"), ("2", "1000"), ("3", "1000")]

    def test_a_few_identifiers_are_fetched_with_conditions(self, sb: Sandbox) -> None:
        # One list of wanted values, matched on identifier or name (ignoring case); deleted companies left out.
        found = make(sb).companies(["cust00002", "CUST00005", "CUSTOMER 00009 LTD"])
        assert [c.identifier for c in found] == ["CUST00002", "CUST00005", "CUST00009"]
        conditions = [r.query.get("conditions") for r in sb.requests if r.endpoint == "GET company/companies"]
        wanted = '"CUST00005","CUSTOMER 00009 LTD","cust00002"'
        assert sorted(conditions) == [f"(identifier in ({wanted})) and deletedFlag=false",
                                      f"(name in ({wanted})) and deletedFlag=false"]

    def test_many_identifiers_list_everything_once(self) -> None:
        with Sandbox.sample(customers=1500, private_key=KEY) as big:
            wanted = [f"CUST{n:05d}" for n in range(1, 1201)]
            client = make(big)
            assert len(client.companies(wanted)) == 1200
            assert client.request_count == 1 + 2  # companyinfo, then two pages
            listed = [r for r in big.requests if r.endpoint == "GET company/companies"]
            assert [r.query.get("conditions") for r in listed] == ["deletedFlag=false"] * 2  # no `in (...)` batches

    def test_names_with_quotes_are_matched_locally(self, sb: Sandbox) -> None:
        sb.add_company("QUOTE", 'The "Best" Ltd')
        assert [c.identifier for c in make(sb).companies(['the "best" ltd'])] == ["QUOTE"]

    def test_agreements_are_active_and_uncancelled_only(self, sb: Sandbox) -> None:
        client = make(sb)
        companies = client.companies(["CUST00010", "CUST00014"])
        agreements = client.agreements([c.id for c in companies])
        assert [a.name for a in agreements] == ["Managed Services", "Managed Services"]
        assert {a.company_id for a in agreements} == {c.id for c in companies}
        condition = sb.requests[-1].query["conditions"]
        assert condition.startswith("company/id in (")
        assert condition.endswith('and agreementStatus="Active" and cancelledFlag=false')

    def test_many_company_ids_list_active_agreements_and_filter_here(self) -> None:
        with Sandbox.sample(customers=1100, private_key=KEY) as big:
            client = make(big)
            ids = [c.id for c in client.companies(every(1100))][:900]
            agreements = client.agreements(ids)
            assert len(agreements) == 900 and {a.company_id for a in agreements} == set(ids)
            listed = [r for r in big.requests if r.endpoint == "GET finance/agreements"]
            assert len(listed) == 2 and "company/id" not in listed[0].query["conditions"]

    def test_company_and_agreement_queries_side_by_side_read_the_same(self) -> None:
        with Sandbox.sample(customers=300, private_key=KEY, latency_ms=50) as big:  # long enough to overlap
            client = make(big, concurrency=8)
            wanted = [f"CUST{n:05d}" for n in range(1, 121)] + [f"Customer {n:05d} Ltd" for n in range(121, 161)]
            client.check()  # the codebase discovered first
            big.clear_log()
            companies = client.companies(wanted)
            listed = [r for r in big.requests if r.endpoint == "GET company/companies"]
            assert len(listed) >= 4  # `in (...)` batches by URL length, for identifiers and for names
            assert all(len(big.url + r.path + "?" + urlencode(r.query)) <= URL_BUDGET for r in listed)
            assert big.max_inflight["GET company/companies"] > 1
            agreements = client.agreements([c.id for c in companies])
            one_at_a_time = make(big, concurrency=1)
            assert companies == one_at_a_time.companies(wanted) and len(companies) == 160
            assert agreements == one_at_a_time.agreements([c.id for c in companies]) and len(agreements) == 160

    def test_lines_skip_cancelled_additions(self, sb: Sandbox) -> None:
        client = make(sb, billing_date=date(2026, 12, 1))
        company = client.companies(["CUST00013"])[0]
        agreement = client.agreements([company.id])[0]
        lines = client.lines([agreement], PRODUCTS).by_agreement[agreement.id]
        assert [line.product for line in lines] == ["SEATS-STD", "SEATS-MFA"]
        assert all(isinstance(line.quantity, int) for line in lines)
        assert sb.requests[-1].query["conditions"] == (
            "effectiveDate<[2026-12-02T00:00:00Z] and (cancelledDate=null or cancelledDate>=[2026-12-02T00:00:00Z])")


class TestWrites:
    def test_set_quantity_sends_exactly_one_json_patch(self, sb: Sandbox) -> None:
        cid = sb.add_company("W", "Writer")
        aid = sb.add_agreement(cid)
        xid = sb.add_addition(aid, "SEATS-STD", 10)
        client = make(sb)
        line = client.lines([Agreement(str(aid), str(cid), "x")], PRODUCTS).by_agreement[str(aid)][0]
        sb.clear_log()
        assert write(client, [Target(1, line, 10, 14)]) == [Written(1, UPDATED, 10)]
        patches = sb.patches()
        assert len(patches) == 1 and len(sb.requests) == 1
        assert patches[0].path == f"/v2025_1/apis/3.0/finance/agreements/{aid}/additions/{xid}"
        assert patches[0].body == [{"op": "replace", "path": "quantity", "value": 14}]
        assert sb.quantity(aid, xid) == 14

    def test_it_refuses_a_negative_quantity_without_a_request(self, sb: Sandbox) -> None:
        client = make(sb)
        [written] = write(client, [Target(1, Line("1", "2", "SEATS-STD", 3), 3, -1)])
        assert written.outcome == FAILED and "-1" in written.message
        assert client.request_count == 0

    def test_a_throttled_patch_is_retried_and_lands_once(self, sb: Sandbox) -> None:
        aid = sb.add_agreement(sb.add_company("T", "Throttled"))
        xid = sb.add_addition(aid, "SEATS-STD", 1)
        sb.fail(429, 2, retry_after="0", method="PATCH")
        client = make(sb)
        assert [w.outcome for w in write(client, [Target(1, Line(str(xid), str(aid), "SEATS-STD", 1), 1, 5)])] \
            == [UPDATED]
        assert [r.status for r in sb.patches()] == [429, 429, 200]
        assert sb.quantity(aid, xid) == 5


class TestWholeRun:
    def test_a_concurrent_run_costs_pages_plus_one_read_per_agreement_plus_one_write_per_change(self) -> None:
        with Sandbox.sample(customers=1200, seed=3, private_key=KEY) as big:
            client = make(big, concurrency=8)
            companies = client.companies(every(1200))
            agreements = client.agreements([c.id for c in companies])
            found = client.lines(agreements, PRODUCTS)  # one additions read per agreement, side by side
            lines = [line for agreement in agreements for line in found.by_agreement[agreement.id]]
            changed = [line for line in lines if line.product == "SEATS-MFA"][:300]
            targets = [Target(n, line, line.quantity, line.quantity + 1) for n, line in enumerate(changed)]
            assert {w.outcome for w in write(client, targets)} == {UPDATED}
            assert len(agreements) == 1200 and len(changed) == 300
            assert client.request_count == 1 + 2 + 2 + 1200 + 300  # companyinfo first
            assert big.counts["PATCH finance/agreements/{id}/additions/{id}"] == 300

    def test_a_psa_that_dies_mid_run_is_unreachable(self, sb: Sandbox) -> None:
        client = make(sb)
        agreements = client.agreements([c.id for c in client.companies(every(30))])
        sb.die_after(5)
        with pytest.raises(Unreachable):
            for agreement in agreements:
                client.lines([agreement], PRODUCTS)


class TestConditions:
    RECORD = {"id": 7, "identifier": "ACME", "company": {"id": 3, "name": "Acme"}, "cancelledFlag": False,
              "cancelledDate": None, "quantity": 12.0}

    @pytest.mark.parametrize("text,expected", [
        ('identifier="acme"', True),
        ('identifier != "ACME"', False),
        ("company/id in (1, 2, 3)", True),
        ("company/id not in (1,2)", True),
        ('company/id=4 or company/name="ACME"', True),
        ("company/id=3 and cancelledFlag=false and cancelledDate=null", True),
        ("(id=1 or id=7) and quantity>=12", True),
        ("quantity < 12", False),
        ('identifier="AC\\"ME"', False),
    ])
    def test_it_evaluates_the_subset_the_client_sends(self, text: str, expected: bool) -> None:
        assert parse_conditions(text)(self.RECORD) is expected

    @pytest.mark.parametrize("text", ["id=", "id in 1,2", "(id=1", 'name="open', "nope=1", "id=1 and"])
    def test_it_rejects_malformed_conditions(self, text: str) -> None:
        with pytest.raises(BadRequest):
            parse_conditions(text)(self.RECORD)

    @settings(max_examples=60, deadline=None)
    @given(st.text(st.characters(blacklist_categories=("Cs",)), max_size=20))
    def test_any_escaped_string_matches_itself(self, value: str) -> None:
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        assert parse_conditions(f'identifier = "{escaped}"')({"identifier": value})
