"""AutotaskClient against the loopback stand-in: zones, paging, deltas, limits."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from typing import Any, Callable, Dict, Iterator, List, Sequence, Tuple
from urllib.parse import urlencode

import httpx

import pytest

from psabill.errors import ConfigError
from psabill.net.errors import AuthRefused, RemoteError
from psabill.psa.autotask import IN_BATCH, PER_ENDPOINT, AutotaskClient, api_base
from psabill.psa.base import FAILED, HELD, UNCHANGED, UNKNOWN, UPDATED, Agreement, Line, Lines, Target, Written
from psabill.sandbox.autotask import AutotaskStandin
from support.env import psa_settings
from support.psa_schema import autotask_problems

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
    section: Dict[str, Any] = {"kind": "autotask", "username": at.username, "integration_code": at.integration_code,
                               "secret": secret, "max_retries": 2, "timeout": 2}
    section.update(options.pop("section", {}))
    options.setdefault("zone_lookup", at.url)
    options.setdefault("billing_date", TODAY)
    return AutotaskClient(psa_settings(section), backoff=0.001, max_wait=0.01, **options)


def write(client: AutotaskClient, changes: Sequence[Tuple[Line, int]], *, halt: Callable[[], bool] = lambda: False,
          sending: Callable[[Sequence[Target]], None] = lambda batch: None) -> List[Written]:
    """Write ``(line, new)`` changes (the plan saw each line's quantity); every outcome, in change order."""
    targets = [Target(n, line, line.quantity, new) for n, (line, new) in enumerate(changes)]
    found = {w.key: w for w in client.write(targets, halt=halt, sending=sending)}
    assert sorted(found) == [t.key for t in targets]  # every target settles exactly once
    return [found[t.key] for t in targets]


def one(client: AutotaskClient, line: Line, new: int, **options: Any) -> Written:
    [written] = write(client, [(line, new)], **options)
    return written


def lines_of(client: AutotaskClient, agreements: Sequence[Agreement], products: Sequence[str]) -> Lines:
    return client.lines(agreements, products)


def numbers(count: int) -> List[str]:
    """The company numbers :func:`seed` gives."""
    return [f"C{n:04d}" for n in range(count)]


def other_writer(at: AutotaskStandin, csid: int, units: int) -> None:
    """Another integration sets the service's units from the billing date on, behind psabill's back."""
    with at._lock:
        for row in at.tables["ContractServiceUnits"].values():
            if row["contractServiceID"] == csid and row["endDate"][:10] >= at.today.isoformat():
                row["units"] = units


def ready(client: AutotaskClient, at: AutotaskStandin) -> None:
    """As a run stands before it writes: the allowance and the contracts read (their dates and period types)."""
    client.check()
    client.agreements([str(company) for company in at.tables["Companies"]])
    at.clear_log()


def seed(at: AutotaskStandin, customers: int, services: int = 2) -> None:
    for n in range(customers):
        contract = at.add_contract(at.add_company(f"Customer {n}", f"C{n:04d}"))
        for s in range(services):
            at.add_service(contract, 500 + s, 10 + s)


class TestSetup:
    def test_it_needs_username_and_integration_code(self) -> None:
        with pytest.raises(ConfigError, match="username, integration_code"):
            AutotaskClient(psa_settings({"kind": "autotask", "secret": SECRET}))

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
        with pytest.raises(AuthRefused) as caught:
            make(at, secret=wrong).check()
        for text in (str(caught.value), repr(caught.value)):
            assert wrong not in text and at.integration_code not in text

    def test_check_shrinks_the_budget_to_what_is_left_this_hour(self) -> None:
        with AutotaskStandin(today=TODAY, secret=SECRET, used_this_hour=9_990) as busy:
            contract = busy.add_contract(busy.add_company("Alpha"))
            line = Line(str(busy.add_service(contract, 501, 10)), str(contract), "501", 10, product_id="501")
            client = make(busy)
            assert "/10000 requests used" in client.check()
            assert client.remaining_budget < 10  # [psa] budget_share 0.5 of 10,000 is long used up this hour
            busy.clear_log()
            written = one(client, line, 12)
            assert written.outcome == FAILED and written.transient
            assert written.message.startswith("not written: Autotask's hourly allowance for this run "
                                              "([psa] budget_share = 0.5 of the database's")
            assert busy.adjustments == [] and busy.requests == []  # refused before a request


class TestReads:
    def test_next_pages_are_posted_to_next_page_url_with_the_same_body(self, at: AutotaskStandin) -> None:
        for n in range(1200):
            at.add_company(f"Customer {n}", f"C{n:04d}")
        companies = make(at).companies(numbers(1200))  # over 500 values: every active company, paged
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
        found = make(at).companies(["a-1", str(b), "CHARLIE"])
        assert [(c.identifier, c.name) for c in found] == [("A-1", "Alpha"), (str(b), "Bravo"), ("C-3", "Charlie")]
        assert found[0].id == str(a)

    def test_agreements_are_the_contracts_whose_term_holds_the_billing_date(self, at: AutotaskStandin) -> None:
        """Chosen by dates, not status: an inactive contract still bills (Datto KB370000000540), so it is read,
        with a note; one that starts later or ended over a year ago is not."""
        company = at.add_company("Alpha", "A-1")
        active = at.add_contract(company, "Managed")
        paused = at.add_contract(company, "Old", status=0)
        at.add_contract(company, "Next year", start=date(2026, 1, 1))
        at.add_contract(company, "Long gone", start=date(2020, 1, 1), end=date(2020, 12, 31))
        at.add_contract(at.add_company("Other"), "Theirs")
        assert make(at).agreements([str(company)]) == [
            Agreement(str(active), str(company), "Managed"),
            Agreement(str(paused), str(company), "Old", "contract #%d is inactive and still billing until 2026-01-31"
                      % paused)]

    def test_lines_carry_the_units_of_the_current_period(self, at: AutotaskStandin) -> None:
        contract = at.add_contract(at.add_company("Alpha"))
        csid = at.add_service(contract, 501, 7)
        at.add_service(contract, 502, 3, months=1)  # only last month: no period covers today
        lines = lines_of(make(at), [Agreement(str(contract), "1", "x")], ["501", "502"])
        assert lines.by_agreement == {str(contract): [Line(str(csid), str(contract), "501", 7, product_id="501")]}

    def test_lines_of_many_contracts_are_read_in_bulk_500_ids_a_query(self, at: AutotaskStandin) -> None:
        seed(at, 600)  # 600 contracts, 1,200 services, 3,600 unit periods
        client = make(at, section={"url": at.url + "/ATServicesRest/"})
        contracts = client.agreements([str(cid) for cid in at.tables["Companies"]])
        at.clear_log()
        lines = lines_of(client, contracts, ["500", "501"]).by_agreement
        assert sum(len(found) for found in lines.values()) == 1200
        assert all(len(found) == 2 for found in lines.values())
        # Two id batches (500 + 100 contracts). Services: 1,000 rows (2 pages) + 200 (1 page).
        # Units bounded to March (12 periods each in the table): 1,000 rows (2 pages) + 200 (1 page).
        # Bundles are read only to explain a service a contract lacks: every contract has both here.
        assert at.counts == {"ContractServices": 3, "ContractServiceUnits": 3}


class TestWrites:
    def setup_line(self, at: AutotaskStandin, units: int = 10) -> Line:
        contract = at.add_contract(at.add_company("Alpha"))
        csid = at.add_service(contract, 501, units)
        return Line(str(csid), str(contract), "501", units, product_id="501")

    def test_it_posts_the_delta_dated_to_the_period_start(self, at: AutotaskStandin) -> None:
        line = self.setup_line(at)
        assert one(make(at), line, 14) == Written(0, UPDATED, 10)
        assert at.adjustments == [{"contractID": int(line.agreement_id), "contractServiceID": int(line.id),
                                   "serviceID": 501, "effectiveDate": "2025-03-01T00:00:00", "unitChange": 4,
                                   "id": at.adjustments[0]["id"]}]
        assert at.units(int(line.id)) == 14
        assert at.units(int(line.id), date(2025, 2, 28)) == 10  # February untouched, March not prorated
        assert at.units(int(line.id), date(2025, 3, 1)) == 14

    def test_the_delta_comes_from_fresh_units_not_the_line(self, at: AutotaskStandin) -> None:
        line = self.setup_line(at)
        client = make(at)
        assert one(client, line, 14).outcome == UPDATED
        stale = one(client, line, 14)  # a plan that still says 10: the units are re-read, and nothing is posted
        assert (stale.outcome, stale.before) == (FAILED, 14)
        assert stale.message == "changed in Autotask since the plan: it held 10 then and 14 now; not written"
        assert one(client, line._replace(quantity=14), 9) == Written(0, UPDATED, 14)
        assert [a["unitChange"] for a in at.adjustments] == [4, -5]
        assert at.units(int(line.id)) == 9

    def test_rerunning_after_a_partial_failure_never_double_counts(self, at: AutotaskStandin) -> None:
        first, second = self.setup_line(at, 10), self.setup_line(at, 20)
        client = make(at)
        assert one(client, first, 11).outcome == UPDATED
        at.fail(500, 1, endpoint="ContractServiceAdjustments")
        failed = one(client, second, 25)
        assert failed.outcome == FAILED and "HTTP 500" in failed.message  # the re-read shows it did not land
        # The next run plans from what it reads: the first line holds 11 now, the second still 20.
        again = write(client, [(first._replace(quantity=11), 11), (second, 25)])
        assert [(w.outcome, w.before) for w in again] == [(UNCHANGED, 11), (UPDATED, 20)]
        assert (at.units(int(first.id)), at.units(int(second.id))) == (11, 25)
        assert [a["unitChange"] for a in at.adjustments] == [1, 5]

    def test_an_answer_lost_after_the_write_landed_is_not_applied_twice(self, at: AutotaskStandin) -> None:
        line = self.setup_line(at, 10)
        at.delay(0.5, 1, late=True, endpoint="ContractServiceAdjustments")
        assert one(make(at, section={"timeout": 0.2}), line, 13) == Written(0, UPDATED, 10)  # the re-read says so
        assert at.units(int(line.id)) == 13 and len(at.adjustments) == 1

    def test_a_post_whose_answer_is_lost_and_that_cannot_be_read_back_is_unknown(self, at: AutotaskStandin) -> None:
        # The adjustment lands, its answer never comes, and the verify read is refused: whether it landed is
        # not known, so it is neither updated nor failed (a failed item must be as it was).
        line = self.setup_line(at, 10)
        client = make(at, section={"timeout": 0.2})
        client.check()
        at.delay(0.5, 1, late=True, endpoint="ContractServiceAdjustments")
        at.before = lambda method, label: (at.fail(400, 1, endpoint="ContractServiceUnits")
                                           if label == "ContractServiceAdjustments" else None)
        written = one(client, line, 13)
        assert (written.outcome, written.before, written.transient) == (UNKNOWN, 10, True)
        assert "the re-read failed" in written.message
        assert at.units(int(line.id)) == 13 and len(at.adjustments) == 1

    def test_a_psa_that_stays_silent_is_unreachable(self, at: AutotaskStandin) -> None:
        line = self.setup_line(at)
        client = make(at)
        client.check()
        at.die_after(0)
        written = one(client, line, 12)
        assert written.outcome == FAILED and written.transient
        assert written.message.startswith("not written: Autotask is unreachable or refused the credentials")
        assert at.adjustments == []


class TestLimits:
    def test_at_most_two_requests_per_endpoint_are_in_flight(self) -> None:
        # Autotask allows 3 threads per endpoint; psabill keeps 2, headroom for a thread Autotask still counts.
        assert PER_ENDPOINT == 2
        with AutotaskStandin(today=TODAY, secret=SECRET, latency_ms=15) as at:
            seed(at, 24)
            client = make(at, section={"concurrency": 16})
            agreements = client.agreements([c.id for c in client.companies(numbers(24))])
            found = lines_of(client, agreements, ["500", "501"])
            lines = [line for agreement in agreements for line in found.by_agreement[agreement.id]]
            assert {w.outcome for w in write(client, [(line, line.quantity + 2) for line in lines[:12]])} == {UPDATED}
            assert len(lines) == 48
            assert max(at.max_inflight.values()) == 2 == at.max_inflight["ContractServiceAdjustments"]
            # zone, allowance, companies (by number and by name), contracts, the three bulk line reads;
            # then the write batch: its units read, 12 posts, the verify read.
            assert client.request_count == at.total == 1 + 1 + 2 + 1 + 3 + 1 + 12 + 1

    def test_bulk_line_reads_through_a_pool_stay_three_per_entity_and_read_the_same(self) -> None:
        with AutotaskStandin(today=TODAY, secret=SECRET, latency_ms=5) as at:
            seed(at, 1600, services=1)  # four id batches per entity
            client = make(at, section={"url": at.url + "/ATServicesRest/", "concurrency": 16})
            contracts = client.agreements([str(cid) for cid in at.tables["Companies"]])
            at.clear_log()
            pooled = lines_of(client, contracts, ["500"]).by_agreement
            counts, peak = at.counts, at.max_inflight
            assert counts == {"ContractServices": 4, "ContractServiceUnits": 4}
            assert max(peak.values()) <= 2 and max(peak.values()) > 1
            one_at_a_time = make(at, section={"url": at.url + "/ATServicesRest/", "concurrency": 1})
            assert pooled == lines_of(one_at_a_time, contracts, ["500"]).by_agreement  # the same lines
            assert sum(len(found) for found in pooled.values()) == 1600

    def test_company_and_contract_queries_side_by_side_read_the_same(self) -> None:
        with AutotaskStandin(today=TODAY, secret=SECRET, latency_ms=50) as at:  # long enough to overlap
            seed(at, 1100, services=1)
            client = make(at, section={"url": at.url + "/ATServicesRest/", "concurrency": 16})
            wanted = [f"C{n:04d}" for n in range(0, 1100, 6)] + [f"Customer {n}" for n in range(1, 1100, 6)]
            at.clear_log()  # under 500 values: a query per field (number, name) and batch
            companies = client.companies(wanted)
            assert at.counts == {"ThresholdInformation": 1, "Companies": 2} and at.max_inflight["Companies"] == 2
            every = client.companies(numbers(1100))
            at.clear_log()
            contracts = client.agreements([c.id for c in every])
            # 3 batches of 500 ids, and the Contracts picklists (GET Contracts/entityInformation/fields) once
            assert at.counts == {"Contracts": 4} and at.max_inflight["Contracts"] == 2
            one_at_a_time = make(at, section={"url": at.url + "/ATServicesRest/", "concurrency": 1})
            assert companies == one_at_a_time.companies(wanted) and len(companies) == 2 * 184
            assert contracts == one_at_a_time.agreements([c.id for c in every]) and len(contracts) == 1100

    def test_the_stand_in_answers_its_latency_after_the_request_arrived_its_work_included(self) -> None:
        # The write lands as soon as the request arrives; the answer leaves the latency after it arrived.
        with AutotaskStandin(today=TODAY, secret=SECRET, latency_ms=500) as at:
            contract = at.add_contract(at.add_company("Alpha"))
            line = Line(str(at.add_service(contract, 501, 10)), str(contract), "501", 10, product_id="501")
            client = make(at, section={"url": at.url + "/ATServicesRest/", "timeout": 10})
            client.check()  # the allowance read first, outside the timing
            with ThreadPoolExecutor(1) as pool:
                started = time.monotonic()
                answer = pool.submit(one, client, line, 12)  # the units read, then the post, then the verify
                while not at.adjustments and time.monotonic() - started < 5:
                    time.sleep(0.005)
                assert at.adjustments and not answer.done()  # the post's work is done; its answer is not back
                assert answer.result() == Written(0, UPDATED, 10)
            assert time.monotonic() - started >= 1.5  # three requests, 500 ms each

    def test_the_request_budget_stops_a_run_before_the_allowance(self) -> None:
        # [psa] budget_share 0.5 of 10,000 = 5,000, of which 4,998 are used once the zone lookup and the
        # allowance read itself are counted: this run may send 2 more requests (4 in all).
        with AutotaskStandin(today=TODAY, secret=SECRET, used_this_hour=4_996) as at:
            seed(at, 3)
            client = make(at)
            companies = client.companies(numbers(3))  # by number and by name: requests 3 and 4
            with pytest.raises(RemoteError, match="budget of 4"):
                client.agreements([c.id for c in companies])
            assert at.total == 4 == client.request_count


class TestRules:
    """Issue points, each against the stand-in behaving like live Autotask (the fixture checks the schema)."""

    def line(self, at: AutotaskStandin, units: int = 10) -> Line:
        contract = at.add_contract(at.add_company("Alpha"))
        return Line(str(at.add_service(contract, 501, units)), str(contract), "501", units, product_id="501")

    def test_unit_rows_query_is_bounded_to_the_billing_period(self, at: AutotaskStandin) -> None:
        line = self.line(at)
        assert len(at.periods(int(line.id))) == 12  # the whole term, future periods included
        lines_of(make(at), [Agreement(line.agreement_id, "1", "x")], ["501"])
        (units,) = [r for r in at.requests if r.endpoint == "ContractServiceUnits"]
        bounds = {f["field"]: (f["op"], f["value"]) for f in units.body["filter"] if f.get("field", "").endswith("Date")}
        # Bounded to the contract's billing period that holds the billing date: March, every row of it.
        assert bounds == {"startDate": ("lte", "2025-03-31T00:00:00"), "endDate": ("gte", "2025-03-01T00:00:00")}

    def test_billing_date_is_the_account_calendar_date(self, at: AutotaskStandin) -> None:
        line = self.line(at)
        assert one(make(at, billing_date=date(2025, 4, 1)), line, 12).outcome == UPDATED  # 09:00 1 April, Sydney
        assert at.adjustments[0]["effectiveDate"] == "2025-04-01T00:00:00"
        assert at.units(int(line.id), date(2025, 3, 31)) == 10 and at.units(int(line.id), date(2025, 4, 1)) == 12

    def test_current_row_is_latest_start_then_end_then_id_so_a_rerun_never_posts_twice(
            self, at: AutotaskStandin) -> None:
        line = self.line(at)
        client = make(at, billing_date=date(2025, 3, 1))  # the period's first day
        assert one(client, line, 14).outcome == UPDATED
        starts = [p["startDate"] for p in at.periods(int(line.id)) if p["startDate"].startswith("2025-03")]
        assert len(starts) == 2  # two unit rows start the same day
        [now] = lines_of(client, [Agreement(line.agreement_id, "1", "x")], ["501"]).by_agreement[line.agreement_id]
        assert now.quantity == 14  # the current row is the adjustment's, not the period's first
        assert one(client, now, 14) == Written(0, UNCHANGED, 14)  # so the re-run posts nothing
        assert [a["unitChange"] for a in at.adjustments] == [4]

    def test_posted_periods_are_never_dated_into(self, at: AutotaskStandin) -> None:
        line = self.line(at)
        at.post_period(int(line.id), TODAY)
        result = one(make(at), line, 12)
        assert result == Written(0, UPDATED, 10, "March is posted; the seats take effect 2025-04-01")
        assert at.adjustments[0]["effectiveDate"] == "2025-04-01T00:00:00"
        assert at.units(int(line.id)) == 10 and at.units(int(line.id), date(2025, 4, 1)) == 12

    def test_deterministic_errors_are_not_retried(self, at: AutotaskStandin) -> None:
        with pytest.raises(RemoteError, match="HTTP 500: IntegrationCode is invalid") as caught:
            make(at, section={"integration_code": "WRONG-CODE"}).check()
        assert at.counts["ThresholdInformation"] == 1 and SECRET not in str(caught.value)
        at.clear_log()

    def test_a_200_with_an_error_body_is_an_error(self, at: AutotaskStandin) -> None:
        at.error_in_200("Insufficient permissions", endpoint="Companies")
        with pytest.raises(RemoteError, match="Insufficient permissions"):
            make(at).companies(["Alpha"])

    def test_service_bundles_fail_the_item_naming_the_bundle(self, at: AutotaskStandin) -> None:
        """v1.json: ContractServiceBundles / ServiceBundleServices say which bundle of the contract holds it."""
        contract = at.add_contract(at.add_company("Alpha"))
        at.add_catalog_bundle("LastPass Suite", 77, services=[501, 502])
        at.add_bundle(contract, 77, 10)
        found = lines_of(make(at), [Agreement(str(contract), "1", "x")], ["501"])
        assert found.by_agreement == {str(contract): []}
        assert found.explain[(str(contract), "501")] == (
            f"service '501' is not a contract service of contract #{contract}; the contract bills through service "
            "bundle #77 'LastPass Suite', which includes it")
        assert found.hints[(str(contract), "501")].startswith(
            'map the SKU to the bundle instead: [products] <SKU> = "bundle:77"')

    def test_products_resolve_by_id_or_exact_service_name(self, at: AutotaskStandin) -> None:
        at.add_catalog_service("LastPass Business", 501)
        at.add_catalog_service("Twin", 601)
        at.add_catalog_service("Twin", 602)
        contract = at.add_contract(at.add_company("Alpha"))
        csid = str(at.add_service(contract, 501, 4))
        client = make(at)
        found = lines_of(client, [Agreement(str(contract), "1", "x")], ["501", "Twin", "Nope"])
        assert found.problems == {"Twin": "2 Autotask services are named 'Twin' (#601, #602)",
                                  "Nope": "no Autotask service is named 'Nope', nor a service bundle"}
        assert found.by_agreement[str(contract)] == [Line(csid, str(contract), "501", 4, product_id="501")]
        by_name = lines_of(client, [Agreement(str(contract), "1", "x")], ["LastPass Business"])
        assert by_name.problems == {}
        assert by_name.by_agreement[str(contract)] == [
            Line(csid, str(contract), "LastPass Business", 4, product_id="501")]

    def test_hourly_allowance_bulk_reads_before_and_after_each_batch(self, at: AutotaskStandin) -> None:
        lines = [self.line(at, 10) for _ in range(4)]
        client = make(at)
        ready(client, at)
        results = write(client, [(ln, 20) for ln in lines])
        assert [(w.outcome, w.before) for w in results] == [(UPDATED, 10)] * 4
        assert at.counts == {"ContractServiceUnits": 2, "ContractServiceAdjustments": 4}

    def test_hourly_allowance_verify_reports_a_service_that_missed_its_target(self, at: AutotaskStandin) -> None:
        first, second = self.line(at, 10), self.line(at, 10)
        at.fail(200, body={"itemId": 1}, endpoint="ContractServiceAdjustments")  # answered, never applied
        results = write(make(at), [(first, 20), (second, 20)])
        # Off target although Autotask took the post: held for approval, never counted as written.
        missed = [w for w in results if w.outcome != UPDATED]
        assert [w.outcome for w in missed] == [HELD]
        assert "Autotask holds 10 units after psabill's +10 from 10 (target 20)" in missed[0].message
        assert sorted(at.units(int(line.id)) for line in (first, second)) == [10, 20]

    def test_the_verify_read_comes_in_one_page_queries_as_many_as_its_pages(self, at: AutotaskStandin) -> None:
        lines = [self.line(at, 10) for _ in range(300)]  # after the posts, 2 March rows each: 600 rows
        client = make(at)
        client.check()
        at.clear_log()
        assert {(w.outcome, w.before) for w in write(client, [(ln, 20) for ln in lines])} == {(UPDATED, 10)}
        reads = [r for r in at.requests if r.endpoint == "ContractServiceUnits"]
        assert [r.path.rsplit("/", 1)[-1] for r in reads] == ["query"] * 3  # the read before, then 2 x 1 page
        sizes = [len(f["value"]) for r in reads for f in r.body["filter"] if f["field"] == "contractServiceID"]
        assert sizes[0] == 300 and sorted(sizes[1:]) == [50, 250]  # the two verify queries run side by side
        assert all(at.units(int(ln.id)) == 20 for ln in lines)

    def test_posts_waiting_for_a_slot_are_not_sent_once_the_run_halts(self, at: AutotaskStandin) -> None:
        # Eight workers, at most two posts in flight; halt() turns true once three adjustments have
        # arrived. A post asks when it holds its slot, so only those already on the wire then still go.
        lines = [self.line(at, 10) for _ in range(40)]
        at.latency_ms = 30
        client = make(at, section={"url": at.url + "/ATServicesRest/", "concurrency": 8})
        ready(client, at)
        before = client.request_count
        results = write(client, [(ln, 20) for ln in lines], halt=lambda: len(at.adjustments) >= 3)
        sent = len(at.adjustments)
        assert 3 <= sent <= 5  # three arrived, and at most two were on the wire by then
        halted = [w for w in results if w.message == "not written: the run stopped before it was sent"]
        assert len(halted) == 40 - sent and all(w.outcome == FAILED and w.transient for w in halted)
        assert sum(w.outcome == UPDATED for w in results) == sent  # the posts that went are verified
        # the units read, the posts, the verify read: halted posts are not counted
        assert client.request_count - before == len(at.requests) == 1 + sent + 1
        assert at.counts["ContractServiceAdjustments"] == sent

    def test_a_read_ahead_stands_for_the_batch_units_read(self, at: AutotaskStandin) -> None:
        # Two batches (500 + 20): both batches' units are read before the first post, so the second
        # batch posts without another read, while the first one's verify read runs.
        lines = [self.line(at, 10) for _ in range(IN_BATCH + 20)]
        client = make(at, section={"url": at.url + "/ATServicesRest/"})
        ready(client, at)
        results = write(client, [(ln, 20) for ln in lines])
        assert {(w.outcome, w.before) for w in results} == {(UPDATED, 10)}
        reads = [(len(next(f["value"] for f in r.body["filter"] if f["field"] == "contractServiceID")), i)
                 for i, r in enumerate(at.requests) if r.endpoint == "ContractServiceUnits"]
        posts = [i for i, r in enumerate(at.requests) if r.endpoint == "ContractServiceAdjustments"]
        # the two read-aheads, then verify reads: 500 services x 2 rows in 2 pages, 20 x 2 in 1
        assert sorted(n for n, _ in reads) == sorted([IN_BATCH, 20, 250, 250, 20])
        second = {int(ln.id) for ln in lines[IN_BATCH:]}
        first_of_second = min(i for i in posts if at.requests[i].body["contractServiceID"] in second)
        ahead = next(i for n, i in reads if n == 20)
        assert ahead < first_of_second  # batch 2 read ahead while batch 1 posted: no read before its posts
        # both read-aheads (in either order: they run side by side), and nothing else (250: batch 1 verify)
        assert sorted(n for n, i in reads if i < first_of_second and n != 250) == [20, IN_BATCH]
        assert at.counts["ContractServiceAdjustments"] == IN_BATCH + 20
        assert at.counts["ThresholdInformation"] == 1  # the allowance re-read between the batches

    def test_a_read_ahead_is_read_afresh_after_a_batch_ended_unverified(self, at: AutotaskStandin) -> None:
        # Three batches. Batch 3's units are read ahead while batch 1 posts; batch 1's verify read then
        # fails, so that read-ahead may be stale (another writer moves a line of batch 3 meanwhile) and
        # batch 3 reads its units afresh: the moved line fails as changed, it is never posted from 10.
        lines = [self.line(at, 10) for _ in range(2 * IN_BATCH + 5)]
        moved = lines[-1]
        client = make(at, section={"url": at.url + "/ATServicesRest/", "max_retries": 0})
        ready(client, at)
        calls: List[int] = []

        def units_reads() -> List[int]:
            return [len(next(f["value"] for f in r.body["filter"] if f["field"] == "contractServiceID"))
                    for r in at.requests if r.endpoint == "ContractServiceUnits"]

        def sending(batch: Sequence[Target]) -> None:
            calls.append(len(batch))
            if len(calls) == 2:  # batch 2 about to post; batch 3's read-ahead was just started
                deadline = time.monotonic() + 5
                while units_reads().count(5) < 1 and time.monotonic() < deadline:
                    time.sleep(0.002)
                assert units_reads().count(5) == 1  # batch 3's read-ahead has been answered
                at.fail(400, 1, endpoint="ContractServiceUnits")  # so this hits batch 1's verify read
            if len(calls) == 3:
                other_writer(at, int(moved.id), 15)

        results = write(client, [(ln, 20) for ln in lines], sending=sending)
        assert calls == [IN_BATCH, IN_BATCH, 5]
        assert {w.outcome for w in results[:IN_BATCH]} == {UNKNOWN}  # posted, the re-read failed: re-checked
        assert all("posted, but the re-read failed" in w.message for w in results[:IN_BATCH])
        assert {w.outcome for w in results[IN_BATCH:-1]} == {UPDATED}
        assert results[-1].outcome == FAILED
        assert results[-1].message == "changed in Autotask since the plan: it held 10 then and 15 now; not written"
        assert units_reads().count(5) >= 2  # read ahead, then afresh
        assert int(moved.id) not in {a["contractServiceID"] for a in at.adjustments}
        assert at.units(int(moved.id)) == 15
        assert len(at.adjustments) == 2 * IN_BATCH + 4

    def test_a_200_with_an_error_body_on_an_adjustment_fails_that_write(self, at: AutotaskStandin) -> None:
        line = self.line(at, 10)
        at.error_in_200("Posting refused", endpoint="ContractServiceAdjustments")
        written = one(make(at), line, 12)
        assert written.outcome == FAILED and "Posting refused" in written.message
        assert at.units(int(line.id)) == 10
