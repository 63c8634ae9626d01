"""The LastPass stand-in refuses what the published API refuses, the way the documents say it does."""

from __future__ import annotations

from typing import Any, Dict, Iterator, Optional

import httpx
import pytest

from psabill.sandbox.lastpass import DEFAULT_KEY, LastPassStandin
from psabill.sources.rows import folded
from support import lastpass_schema

AUTH = {"Authorization": f"api-key {DEFAULT_KEY}"}


@pytest.fixture
def lp() -> Iterator[LastPassStandin]:
    with LastPassStandin() as standin:
        for n in range(1, 26):
            standin.add_company(f"Company {n:02d}", users=["enrolled"] * (n % 3))
        yield standin


def get(lp: LastPassStandin, path: str, params: Optional[Dict[str, Any]] = None,
        headers: Optional[Dict[str, str]] = None) -> httpx.Response:
    return httpx.get(lp.api_url + path, params=params, headers=AUTH if headers is None else headers)


def assert_problem(response: httpx.Response, status: int, detail: str) -> None:
    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/problem+json"
    body = response.json()
    assert lastpass_schema.problem_details_problems(body) == []
    assert body["status"] == status and detail in body["detail"]


@pytest.mark.parametrize("headers", [{}, {"Authorization": "api-key wrong"}, {"Authorization": DEFAULT_KEY},
                                     {"Authorization": f"Bearer {DEFAULT_KEY}"}])
def test_a_missing_or_wrong_key_is_refused_with_401_problem_details(lp: LastPassStandin, headers: Dict[str, str]) -> None:
    assert_problem(get(lp, "/v1/managed-companies", headers=headers), 401, "The API key is missing or invalid.")


def test_the_log_keeps_only_the_shape_of_the_authorization_header(lp: LastPassStandin) -> None:
    for headers in ({}, {"Authorization": "api-key wrong"}, {"Authorization": DEFAULT_KEY}, AUTH):
        get(lp, "/v1/managed-companies", headers=headers)
    assert [r.headers["Authorization"] for r in lp.requests] == [
        "[missing]", "api-key [redacted]", "[malformed]", "api-key [redacted]"]
    assert all(DEFAULT_KEY not in str(r) for r in lp.requests)


def test_a_list_pages_ten_at_a_time_unless_max_results_says_otherwise(lp: LastPassStandin) -> None:
    first = get(lp, "/v1/managed-companies").json()
    assert len(first["items"]) == 10 and isinstance(first["nextPageToken"], str)
    names = [c["name"] for c in first["items"]]
    token = first["nextPageToken"]
    while token:
        page = get(lp, "/v1/managed-companies", {"page-token": token}).json()
        names += [c["name"] for c in page["items"]]
        token = page["nextPageToken"]
    assert names == lp.customers() and len(names) == 25
    whole = get(lp, "/v1/managed-companies", {"max-results": 500}).json()
    assert len(whole["items"]) == 25 and whole["nextPageToken"] is None


@pytest.mark.parametrize("value", ["0", "501", "-1", "ten", ""])
def test_max_results_outside_1_to_500_is_refused(lp: LastPassStandin, value: str) -> None:
    response = get(lp, "/v1/managed-companies", {"max-results": value})
    assert_problem(response, 400, "max-results must be")
    assert response.json()["errors"][0]["pointer"] == "/max-results"


def test_an_unknown_page_token_is_refused(lp: LastPassStandin) -> None:
    assert_problem(get(lp, "/v1/managed-companies", {"page-token": "made-up"}), 400, "page-token is invalid")


def test_a_page_token_must_come_with_the_parameters_it_was_issued_for(lp: LastPassStandin) -> None:
    token = get(lp, "/v1/managed-companies", {"max-results": 5}).json()["nextPageToken"]
    assert_problem(get(lp, "/v1/managed-companies", {"page-token": token}), 400, "issued for another query")
    assert get(lp, "/v1/managed-companies", {"max-results": 5, "page-token": token}).status_code == 200


@pytest.mark.parametrize("path, params", [
    ("/v1/managed-companies", {"include": "users"}),
    ("/v1/managed-companies", {"account-status": "enrolled"}),
    ("/v1/managed-companies/{first}/users", {"status": "active"}),
])
def test_an_unknown_query_parameter_is_refused(lp: LastPassStandin, path: str, params: Dict[str, str]) -> None:
    assert_problem(get(lp, path.format(first=min(lp.companies)), params), 400, "Unknown query parameter")


def test_filters_take_only_their_published_values(lp: LastPassStandin) -> None:
    assert_problem(get(lp, "/v1/managed-companies", {"status": "trial"}), 400, "is not one of active, suspended")
    assert_problem(get(lp, f"/v1/managed-companies/{min(lp.companies)}/users", {"account-status": "active"}), 400,
                   "account-status 'active' is not one of")
    assert_problem(get(lp, "/v1/managed-companies", {"sort": "licenseLimit:asc"}), 400, "sort")


def test_filters_and_sorting_work_as_published(lp: LastPassStandin) -> None:
    lp.add_company("Paused", status="suspended", addons=["mfa"])
    assert [c["name"] for c in get(lp, "/v1/managed-companies", {"status": "suspended"}).json()["items"]] == ["Paused"]
    assert [c["name"] for c in get(lp, "/v1/managed-companies", {"addon": "mfa"}).json()["items"]] == ["Paused"]
    assert len(get(lp, "/v1/managed-companies", {"name": "company 1%", "max-results": 50}).json()["items"]) == 10
    top = get(lp, "/v1/managed-companies", {"sort": "name:desc", "max-results": 1}).json()["items"][0]
    assert top["name"] == "Paused"


def test_unknown_companies_and_users_are_404_problem_details(lp: LastPassStandin) -> None:
    assert_problem(get(lp, "/v1/managed-companies/999999/users"), 404, "Managed company 999999 was not found")
    assert_problem(get(lp, f"/v1/managed-companies/{min(lp.companies)}/users/999999"), 404,
                   "User 999999 was not found")
    assert_problem(get(lp, "/v1/nothing-here"), 404, "No resource")


def test_a_user_can_be_read_on_its_own_as_published(lp: LastPassStandin) -> None:
    cid = lp.add_company("Solo")
    uid = lp.add_user(cid, "staged", name="Ana Silva", email="ana@solo.example")
    assert get(lp, f"/v1/managed-companies/{cid}/users/{uid}").json() == {
        "id": uid, "name": "Ana Silva", "email": "ana@solo.example", "accountStatus": "staged"}


def test_a_throttled_request_gets_429_with_retry_after(lp: LastPassStandin) -> None:
    lp.throttle(1, retry_after="7")
    response = get(lp, "/v1/managed-companies")
    assert response.status_code == 429 and response.headers["Retry-After"] == "7"
    assert lastpass_schema.problem_details_problems(response.json()) == []
    assert get(lp, "/v1/managed-companies").status_code == 200


def test_the_sample_looks_like_a_real_msp_book() -> None:
    standin = LastPassStandin.sample(companies=200, seed=3)
    again = LastPassStandin.sample(companies=200, seed=3)
    try:
        companies = list(standin.companies.values())
        names = [c["name"] for c in companies]
        assert names == [c["name"] for c in again.companies.values()]  # deterministic by seed
        assert len({folded(n) for n in names}) == 200
        assert any(not n.isascii() for n in names)
        suspended = [c for c in companies if c["status"] == "suspended"]
        mfa = [c for c in companies if "mfa" in c["addons"]]
        assert 2 <= len(suspended) <= 30 and 40 <= len(mfa) <= 110
        statuses = {u["accountStatus"] for users in standin.users.values() for u in users.values()}
        assert {"enrolled", "disabled", "pending-invitation"} <= statuses
        assert all(3 <= len(standin.users[c["id"]]) <= 60 for c in companies)
    finally:
        standin.stop()
        again.stop()
