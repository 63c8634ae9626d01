"""AutotaskClient against the loopback stand-in: zones, paging, deltas, limits."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from typing import Any, Dict, Iterator, List
from urllib.parse import urlencode

import httpx

import pytest

from support.env import psa_settings
from support.psa_schema import autotask_problems
from psabill.sandbox.autotask import AutotaskStandin
from psabill.errors import ConfigError
from psabill.psa.autotask import AutotaskClient, api_base
from psabill.psa.base import Agreement, Halted, Line, PsaAuthError, PsaError, PsaUnreachable, Written

TODAY = date(2025, 3, 15)  # periods: Feb, Mar (current, starts 2025-03-01), Apr
SECRET = "at-secret-value-42"


@pytest.fixture
def at() -> Iterator[AutotaskStandin]:
    with AutotaskStandin(today=TODAY, secret=SECRET) as server:
        yield server
        assert schema_problems(server) == []


def schema_problems(server: AutotaskStandin) -> List[str]:
    """Every request the stand-in saw, checked against the published schema."""
    problems: List[str] = []
    for r in server.requests:
        url = server.url + r.path + ("?" + urlencode(r.query) if r.query else "")
        problems.extend(autotask_problems(r.method, url, r.headers, r.body))
    return problems


def make(at: AutotaskStandin, *, secret: str = SECRET, **options: Any) -> AutotaskClient:
    section: Dict[str, Any] = {"username": at.username, "integration_code": at.integration_code,
                               "max_retries": 2, "timeout": 2}
    section.update(options.pop("section", {}))
    options.setdefault("zone_lookup", at.url)
    options.setdefault("billing_date", TODAY)
    return AutotaskClient(psa_settings(section), secret, backoff=0.001, max_wait=0.01, **options)


def eager(fn: Any, items: Any) -> Iterator[Any]:
    """A ``run`` that maps at once, so a read-ahead is done when read_ahead returns."""
    return iter([fn(item) for item in items])


def seed(at: AutotaskStandin, customers: int, services: int = 2) -> None:
    for n in range(customers):
        contract = at.add_contract(at.add_company(f"Customer {n}", f"C{n:04d}"))
        for s in range(services):
            at.add_service(contract, 500 + s, 10 + s)


class TestSetup:
    def test_it_needs_username_and_integration_code(self) -> None:
        with pytest.raises(ConfigError, match="username, integration_code"):
            AutotaskClient(psa_settings({"kind": "autotask"}), SECRET)

    def test_zone_urls_become_the_api_base(self) -> None:
        assert api_base("https://webservices5.autotask.net/atservicesrest/") == \
            "https://webservices5.autotask.net/atservicesrest/v1.0"
        assert api_base("webservices2.autotask.net") == "https://webservices2.autotask.net/ATServicesRest/v1.0"

    def test_it_discovers_the_zone_once_then_talks_to_it(self, at: AutotaskStandin) -> None:
        client = make(at)
        client.check()
        client.companies(["C0001"])
        zone = [r for r in at.requests if r.endpoint == "ZoneInformation"]
        assert len(zone) == 1 and zone[0].query == {"user": at.username}
        assert at.requests[1].headers["UserName"] == at.username
        assert at.requests[1].headers["ApiIntegrationCode"] == at.integration_code

    def test_a_configured_url_skips_zone_discovery(self, at: AutotaskStandin) -> None:
        make(at, section={"url": at.url + "/ATServicesRest/"}, zone_lookup="https://unused.invalid").check()
        assert "ZoneInformation" not in at.counts

    def test_a_wrong_secret_is_an_auth_error_that_never_shows_it(self, at: AutotaskStandin) -> None:
        wrong = "wrong-secret-555"
        with pytest.raises(PsaAuthError) as caught:
            make(at, secret=wrong).check()
        for text in (str(caught.value), repr(caught.value)):
            assert wrong not in text and at.integration_code not in text

    def test_check_shrinks_the_budget_to_what_is_left_this_hour(self) -> None:
        with AutotaskStandin(today=TODAY, secret=SECRET, used_this_hour=9_990) as busy:
            client = make(busy)
            assert "/10000 requests used" in client.check()
            assert client.remaining_budget < 10
            with pytest.raises(PsaError, match="only"):
                client.ensure_budget(50)


class TestReads:
    def test_next_pages_are_posted_to_next_page_url_with_the_same_body(self, at: AutotaskStandin) -> None:
        for n in range(1200):
            at.add_company(f"Customer {n}", f"C{n:04d}")
        companies = make(at).companies()
        assert len(companies) == 1200 and companies[0].identifier == "C0000"
        pages = [r for r in at.requests if r.endpoint == "Companies"]
        assert [r.method for r in pages] == ["POST", "POST", "POST"]
        assert [r.path.endswith("/Companies/query/next") for r in pages] == [False, True, True]
        assert all(r.query["paging"] for r in pages[1:])
        assert pages[1].body == pages[2].body == pages[0].body

    def test_the_standin_answers_get_on_a_next_page_with_405_like_live_autotask(self, at: AutotaskStandin) -> None:
        for n in range(501):
            at.add_company(f"Customer {n}")
        headers = {"UserName": at.username, "ApiIntegrationCode": at.integration_code, "Secret": SECRET}
        query = {"filter": [{"op": "gte", "field": "id", "value": 0}]}
        first = httpx.post(f"{at.url}/ATServicesRest/v1.0/Companies/query", json=query, headers=headers).json()
        link = first["pageDetails"]["nextPageUrl"]
        assert "/ATServicesRest/V1.0/Companies/query/next?paging=" in link
        assert httpx.get(link, headers=headers).status_code == 405
        assert httpx.post(link, json={"filter": [{"op": "gt", "field": "id", "value": 0}]},
                          headers=headers).status_code == 500  # another body
        assert len(httpx.post(link, json=query, headers=headers).json()["items"]) == 1
        at.clear_log()  # these hand-made requests are not the client's

    def test_the_standin_filters_like_autotask_and_refuses_a_malformed_filter_even_with_no_rows(
            self, at: AutotaskStandin) -> None:
        headers = {"UserName": at.username, "ApiIntegrationCode": at.integration_code, "Secret": SECRET}
        url = f"{at.url}/ATServicesRest/v1.0/Companies/query"

        def names(*filters: Dict[str, Any]) -> List[str]:
            answer = httpx.post(url, json={"filter": list(filters)}, headers=headers)
            assert answer.status_code == 200, answer.text
            return sorted(item["companyName"] for item in answer.json()["items"])

        for bad in ({"op": "in", "field": "id", "value": 5}, {"op": "near", "field": "id", "value": 5}):
            assert httpx.post(url, json={"filter": [bad]}, headers=headers).status_code == 400  # empty table
        alpha, bravo = at.add_company("Alpha", "A-1"), at.add_company("Bravo", "B-2")
        at.add_company("Charlie")
        assert names({"op": "in", "field": "companyName", "value": ["ALPHA", "charlie", 7]}) == ["Alpha", "Charlie"]
        assert names({"op": "in", "field": "id", "value": [alpha, str(bravo), None]}) == ["Alpha"]
        assert names({"op": "notIn", "field": "companyNumber", "value": ["a-1"]}) == ["Bravo", "Charlie"]
        assert names({"op": "or", "items": [{"op": "eq", "field": "companyNumber", "value": "b-2"},
                                            {"op": "notExist", "field": "companyNumber"}]}) == ["Bravo", "Charlie"]
        assert names({"op": "gt", "field": "id", "value": alpha}) == ["Bravo", "Charlie"]
        at.clear_log()  # these hand-made requests are not the client's

    def test_companies_match_number_id_or_name(self, at: AutotaskStandin) -> None:
        a = at.add_company("Alpha", "A-1")
        b = at.add_company("Bravo")
        at.add_company("Charlie", "C-3")
        found = make(at).companies(["a-1", str(b)], names=["CHARLIE"])
        assert [(c.identifier, c.name) for c in found] == [("A-1", "Alpha"), (str(b), "Bravo"), ("C-3", "Charlie")]
        assert found[0].id == str(a)

    def test_agreements_are_active_contracts_of_the_companies(self, at: AutotaskStandin) -> None:
        company = at.add_company("Alpha", "A-1")
        active = at.add_contract(company, "Managed")
        at.add_contract(company, "Old", status=0)
        at.add_contract(at.add_company("Other"), "Theirs")
        assert make(at).agreements([str(company)]) == [Agreement(str(active), str(company), "Managed")]

    def test_lines_carry_the_units_of_the_current_period(self, at: AutotaskStandin) -> None:
        contract = at.add_contract(at.add_company("Alpha"))
        csid = at.add_service(contract, 501, 7)
        at.add_service(contract, 502, 3, months=1)  # only last month: no period covers today
        lines = make(at).lines(Agreement(str(contract), "1", "x"))
        assert lines == [Line(str(csid), str(contract), "501", 7)]

    def test_lines_of_many_contracts_are_read_in_bulk_500_ids_a_query(self, at: AutotaskStandin) -> None:
        seed(at, 600)  # 600 contracts, 1,200 services, 3,600 unit periods
        client = make(at, section={"url": at.url + "/ATServicesRest/"})
        contracts = client.agreements([str(cid) for cid in at.tables["Companies"]])
        at.clear_log()
        lines = client.lines_for(contracts)
        assert sum(len(found) for found in lines.values()) == 1200
        assert all(len(found) == 2 for found in lines.values())
        # Two id batches (500 + 100 contracts). Services: 1,000 rows (2 pages) + 200 (1 page).
        # Units bounded to March (12 periods each in the table): 1,000 rows (2 pages) + 200 (1 page).
        assert at.counts == {"ContractServices": 3, "ContractServiceUnits": 3, "ContractServiceBundles": 2}


class TestWrites:
    def setup_line(self, at: AutotaskStandin, units: int = 10) -> Line:
        contract = at.add_contract(at.add_company("Alpha"))
        csid = at.add_service(contract, 501, units)
        return Line(str(csid), str(contract), "501", units)

    def test_it_posts_the_delta_dated_to_the_period_start(self, at: AutotaskStandin) -> None:
        line = self.setup_line(at)
        assert make(at).set_quantity(line, 14) == 10
        assert at.adjustments == [{"contractID": int(line.agreement_id), "contractServiceID": int(line.id),
                                   "serviceID": 501, "effectiveDate": "2025-03-01T00:00:00", "unitChange": 4,
                                   "id": at.adjustments[0]["id"]}]
        assert at.units(int(line.id)) == 14
        assert at.units(int(line.id), date(2025, 2, 28)) == 10  # February untouched, March not prorated
        assert at.units(int(line.id), date(2025, 3, 1)) == 14

    def test_the_delta_comes_from_fresh_units_not_the_line(self, at: AutotaskStandin) -> None:
        line = self.setup_line(at)
        client = make(at)
        client.set_quantity(line, 14)
        assert client.set_quantity(line, 14) == 14  # stale line says 10: a re-run posts nothing
        assert client.set_quantity(line, 9) == 14
        assert [a["unitChange"] for a in at.adjustments] == [4, -5]
        assert at.units(int(line.id)) == 9

    def test_rerunning_after_a_partial_failure_never_double_counts(self, at: AutotaskStandin) -> None:
        first, second = self.setup_line(at, 10), self.setup_line(at, 20)
        client = make(at)
        client.set_quantity(first, 11)
        at.fail(500, 1, endpoint="ContractServiceAdjustments")
        with pytest.raises(PsaError, match="HTTP 500"):
            client.set_quantity(second, 25)
        for line, target in ((first, 11), (second, 25)):  # the next run, with the lines it read before
            client.set_quantity(line, target)
        assert (at.units(int(first.id)), at.units(int(second.id))) == (11, 25)
        assert [a["unitChange"] for a in at.adjustments] == [1, 5]

    def test_an_answer_lost_after_the_write_landed_is_not_applied_twice(self, at: AutotaskStandin) -> None:
        line = self.setup_line(at, 10)
        at.delay(0.5, 1, late=True, endpoint="ContractServiceAdjustments")
        assert make(at, section={"timeout": 0.2}).set_quantity(line, 13) == 10
        assert at.units(int(line.id)) == 13 and len(at.adjustments) == 1

    def test_a_psa_that_stays_silent_is_unreachable(self, at: AutotaskStandin) -> None:
        line = self.setup_line(at)
        client = make(at)
        client.check()
        at.die_after(0)
        with pytest.raises(PsaUnreachable):
            client.set_quantity(line, 12)
        assert at.adjustments == []


class TestLimits:
    def test_at_most_three_requests_per_endpoint_are_in_flight(self) -> None:
        with AutotaskStandin(today=TODAY, secret=SECRET, latency_ms=15) as at:
            seed(at, 24)
            client = make(at, section={"concurrency": 16})
            agreements = client.agreements([c.id for c in client.companies()])
            with ThreadPoolExecutor(16) as pool:
                lines = [line for batch in pool.map(client.lines, agreements) for line in batch]
                list(pool.map(lambda line: client.set_quantity(line, line.quantity + 2), lines[:12]))
            assert len(lines) == 48
            assert max(at.max_inflight.values()) == 3
            assert client.request_count == at.total == 1 + 1 + 1 + 24 * 3 + 12 * 2

    def test_bulk_line_reads_through_a_pool_stay_three_per_entity_and_read_the_same(self) -> None:
        with AutotaskStandin(today=TODAY, secret=SECRET, latency_ms=5) as at:
            seed(at, 1600, services=1)  # four id batches per entity
            client = make(at, section={"url": at.url + "/ATServicesRest/", "concurrency": 16})
            contracts = client.agreements([str(cid) for cid in at.tables["Companies"]])
            at.clear_log()
            with ThreadPoolExecutor(16) as pool:
                pooled = client.lines_for(contracts, pool.map)
            counts, peak = at.counts, at.max_inflight
            assert counts == {"ContractServices": 4, "ContractServiceUnits": 4, "ContractServiceBundles": 4}
            assert max(peak.values()) <= 3
            assert pooled == client.lines_for(contracts)  # the same lines as one query at a time
            assert sum(len(found) for found in pooled.values()) == 1600

    def test_company_and_contract_queries_through_a_pool_read_the_same(self) -> None:
        with AutotaskStandin(today=TODAY, secret=SECRET, latency_ms=50) as at:  # long enough to overlap
            seed(at, 1100, services=1)
            client = make(at, section={"url": at.url + "/ATServicesRest/", "concurrency": 16})
            numbers = [f"C{n:04d}" for n in range(0, 1100, 6)]  # under 500 values: a query per field and batch
            names = [f"Customer {n}" for n in range(1, 1100, 6)]
            with ThreadPoolExecutor(16) as pool:
                at.clear_log()
                companies = client.companies(numbers, names, pool.map)
                assert at.counts == {"Companies": 2} and at.max_inflight["Companies"] == 2
                contracts = client.agreements([c.id for c in client.companies()], pool.map)  # 3 batches of ids
            assert companies == client.companies(numbers, names) and len(companies) == 2 * 184
            assert contracts == client.agreements([c.id for c in client.companies()]) and len(contracts) == 1100

    def test_the_stand_in_answers_its_latency_after_the_request_arrived_its_work_included(self) -> None:
        # The write lands as soon as the request arrives; the answer leaves the latency after it arrived.
        with AutotaskStandin(today=TODAY, secret=SECRET, latency_ms=500) as at:
            contract = at.add_contract(at.add_company("Alpha"))
            line = Line(str(at.add_service(contract, 501, 10)), str(contract), "501", 10)
            client = make(at, section={"url": at.url + "/ATServicesRest/", "timeout": 10})
            with ThreadPoolExecutor(1) as pool:
                started = time.monotonic()
                answer = pool.submit(client.set_quantity, line, 12)  # the units read, then the post
                while not at.adjustments and time.monotonic() - started < 5:
                    time.sleep(0.005)
                assert at.adjustments and not answer.done()  # the post's work is done; its answer is not back
                assert answer.result() == 10
            assert time.monotonic() - started >= 1.0  # two requests, 500 ms each

    def test_the_request_budget_stops_a_run_before_the_allowance(self, at: AutotaskStandin) -> None:
        seed(at, 3)
        client = make(at, request_budget=4)
        agreements = client.agreements([c.id for c in client.companies()])
        with pytest.raises(PsaError, match="budget of 4"):
            for agreement in agreements:
                client.lines(agreement)
        assert at.total == 4


class TestRules:
    """Issue points, each against the stand-in behaving like live Autotask (the fixture checks the schema)."""

    def line(self, at: AutotaskStandin, units: int = 10) -> Line:
        contract = at.add_contract(at.add_company("Alpha"))
        return Line(str(at.add_service(contract, 501, units)), str(contract), "501", units)

    def test_unit_rows_query_is_bounded_to_the_billing_period(self, at: AutotaskStandin) -> None:
        line = self.line(at)
        assert len(at.periods(int(line.id))) == 12  # the whole term, future periods included
        make(at).lines(Agreement(line.agreement_id, "1", "x"))
        (units,) = [r for r in at.requests if r.endpoint == "ContractServiceUnits"]
        bounds = {f["field"]: (f["op"], f["value"]) for f in units.body["filter"] if f.get("field", "").endswith("Date")}
        assert bounds == {"startDate": ("lte", "2025-03-15T00:00:00"), "endDate": ("gte", "2025-03-15T00:00:00")}

    def test_billing_date_is_the_account_calendar_date(self, at: AutotaskStandin) -> None:
        line = self.line(at)
        make(at, billing_date=date(2025, 4, 1)).set_quantity(line, 12)  # e.g. 09:00 1 April in Sydney
        assert at.adjustments[0]["effectiveDate"] == "2025-04-01T00:00:00"
        assert at.units(int(line.id), date(2025, 3, 31)) == 10 and at.units(int(line.id), date(2025, 4, 1)) == 12

    def test_current_row_is_latest_start_then_end_then_id_so_a_rerun_never_posts_twice(
            self, at: AutotaskStandin) -> None:
        line = self.line(at)
        client = make(at, billing_date=date(2025, 3, 1))  # the period's first day
        client.set_quantity(line, 14)
        starts = [p["startDate"] for p in at.periods(int(line.id)) if p["startDate"].startswith("2025-03")]
        assert len(starts) == 2  # two unit rows start the same day
        client.set_quantity(line, 14)
        assert [a["unitChange"] for a in at.adjustments] == [4]

    def test_posted_periods_are_never_dated_into(self, at: AutotaskStandin) -> None:
        line = self.line(at)
        at.post_period(int(line.id), TODAY)
        result = make(at).set_quantity(line, 12)
        assert result == Written(10, "March is posted; 12 seats take effect 2025-04-01")
        assert at.adjustments[0]["effectiveDate"] == "2025-04-01T00:00:00"
        assert at.units(int(line.id)) == 10 and at.units(int(line.id), date(2025, 4, 1)) == 12

    def test_deterministic_errors_are_not_retried(self, at: AutotaskStandin) -> None:
        with pytest.raises(PsaError, match="HTTP 500: IntegrationCode is invalid") as caught:
            make(at, section={"integration_code": "WRONG-CODE"}).check()
        assert at.counts["ThresholdInformation"] == 1 and SECRET not in str(caught.value)
        at.clear_log()

    def test_a_200_with_an_error_body_is_an_error(self, at: AutotaskStandin) -> None:
        at.error_in_200("Insufficient permissions", endpoint="Companies")
        with pytest.raises(PsaError, match="Insufficient permissions"):
            make(at).companies()

    def test_service_bundles_fail_the_item_naming_the_bundle(self, at: AutotaskStandin) -> None:
        contract = at.add_contract(at.add_company("Alpha"))
        at.add_bundle(contract, 77)
        client = make(at)
        assert client.lines(Agreement(str(contract), "1", "x")) == []
        assert "service bundle #77" in (client.missing_note(str(contract), "501") or "")

    def test_products_resolve_by_id_or_exact_service_name(self, at: AutotaskStandin) -> None:
        at.add_catalog_service("LastPass Business", 501)
        at.add_catalog_service("Twin", 601)
        at.add_catalog_service("Twin", 602)
        resolved, problems = make(at).resolve_products(["501", "LastPass Business", "Twin", "Nope"])
        assert resolved == {"501": "501", "LastPass Business": "501"}
        assert problems == {"Twin": "2 Autotask services are named 'Twin' (#601, #602)",
                            "Nope": "no Autotask service is named 'Nope'"}

    def test_hourly_allowance_bulk_reads_before_and_after_each_batch(self, at: AutotaskStandin) -> None:
        lines = [self.line(at, 10) for _ in range(4)]
        client = make(at)
        client.check()
        at.clear_log()
        results = client.set_quantities([(ln, 20) for ln in lines])
        assert list(results.values()) == [10, 10, 10, 10]
        assert at.counts == {"ContractServiceUnits": 2, "ContractServiceAdjustments": 4}

    def test_hourly_allowance_verify_reports_a_service_that_missed_its_target(self, at: AutotaskStandin) -> None:
        first, second = self.line(at, 10), self.line(at, 10)
        at.fail(200, body={"itemId": 1}, endpoint="ContractServiceAdjustments")  # answered, never applied
        results = make(at).set_quantities([(first, 20), (second, 20)])
        missed = [r for r in results.values() if isinstance(r, PsaError)]
        assert len(missed) == 1 and "holds 10 units after the adjustment, not 20" in str(missed[0])
        assert sorted(at.units(int(line.id)) for line in (first, second)) == [10, 20]

    def test_the_verify_read_comes_in_one_page_queries_as_many_as_its_pages(self, at: AutotaskStandin) -> None:
        lines = [self.line(at, 10) for _ in range(300)]  # after the posts, 2 March rows each: 600 rows
        client = make(at)
        client.check()
        at.clear_log()
        assert set(client.set_quantities([(ln, 20) for ln in lines]).values()) == {10}
        reads = [r for r in at.requests if r.endpoint == "ContractServiceUnits"]
        assert [r.path.rsplit("/", 1)[-1] for r in reads] == ["query"] * 3  # the read before, then 2 x 1 page
        assert [len(f["value"]) for r in reads for f in r.body["filter"]
                if f["field"] == "contractServiceID"] == [300, 250, 50]
        assert all(at.units(int(ln.id)) == 20 for ln in lines)

    def test_posts_waiting_for_a_slot_are_not_sent_once_the_run_halts(self, at: AutotaskStandin) -> None:
        # Eight workers, at most three posts in flight; halt() turns true once three adjustments have
        # arrived. A post asks when it holds its slot, so only those already on the wire then still go.
        lines = [self.line(at, 10) for _ in range(40)]
        at.latency_ms = 30
        client = make(at, section={"url": at.url + "/ATServicesRest/", "concurrency": 8})
        with ThreadPoolExecutor(8) as pool:
            posted = client.post_batch([(ln, 20) for ln in lines], pool.map,
                                       halt=lambda: len(at.adjustments) >= 3)
        sent = len(at.adjustments)
        assert 3 <= sent <= 6  # three arrived, and at most three were on the wire by then
        assert sum(isinstance(e, Halted) for e in posted.failures.values()) == 40 - sent
        assert client.request_count == 1 + sent  # the units read, then the posts: halted ones are not counted
        assert posted.problem is None

    def test_a_read_ahead_stands_for_the_batch_units_read(self, at: AutotaskStandin) -> None:
        lines = [self.line(at, 10) for _ in range(3)]
        client = make(at)
        client.check()
        at.clear_log()
        ahead = client.read_ahead([(ln, 20) for ln in lines], eager)
        assert at.counts == {"ContractServiceUnits": 1}
        assert list(client.set_quantities([(ln, 20) for ln in lines], ahead=ahead).values()) == [10, 10, 10]
        assert at.counts == {"ContractServiceUnits": 2, "ContractServiceAdjustments": 3}  # no second read before

    def test_a_read_ahead_is_read_afresh_after_a_batch_ended_unverified(self, at: AutotaskStandin) -> None:
        first, second = self.line(at, 10), self.line(at, 10)
        client = make(at)
        ahead = client.read_ahead([(second, 20)], eager)  # reads 10 units
        client.set_quantity(second, 15)  # meanwhile the units change
        at.die_after(2)  # the next batch's read and post land, its verify read does not
        unverified = client.set_quantities([(first, 20)])
        assert unverified == {first.id: 10} and at.units(int(first.id)) == 20
        at.revive()
        assert client.set_quantities([(second, 20)], ahead=ahead) == {second.id: 15}  # read afresh: 15, not 10
        assert at.units(int(second.id)) == 20
        assert [a["unitChange"] for a in at.adjustments] == [5, 10, 5]

    def test_a_200_with_an_error_body_on_an_adjustment_fails_that_write(self, at: AutotaskStandin) -> None:
        line = self.line(at, 10)
        at.error_in_200("Posting refused", endpoint="ContractServiceAdjustments")
        with pytest.raises(PsaError, match="Posting refused"):
            make(at).set_quantity(line, 12)
