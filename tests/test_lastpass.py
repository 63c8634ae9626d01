"""``[source] kind = "lastpass"``: the real reader against the LastPass stand-in over loopback.

Every request the reader sends is also checked against the fixture of the
published documents (tests/support/schemas/lastpass.json).
"""

from __future__ import annotations

import base64
import os
import time
import unicodedata
from pathlib import Path
from typing import Any, Dict, Iterator, List
from urllib.parse import quote

import pytest

from psabill import sources
from psabill.config.settings import load as load_config
from psabill.errors import AbortError, ConfigError
from psabill.run import engine, mapping
from psabill.sandbox.lastpass import LastPassStandin, problem
from psabill.sources import lastpass
from psabill.sources.rows import Usage, UsageRow
from psabill.text import redact
from support import lastpass_schema
from support.env import settings_for

# Characters that percent-encoding and base64 both change, so every form of the key is a different string.
KEY = "lpkey_T3st+K3y/12_Zz9=Yy8&Xx7%Ww6~abcdefghijklmnop"
PRODUCTS = {"LastPass": "SEATS-STD", "LastPass+MFA": "SEATS-MFA"}
COMPANIES = "GET /v1/managed-companies"
USERS = "GET /v1/managed-companies/{id}/users"


@pytest.fixture
def lp() -> Iterator[LastPassStandin]:
    with LastPassStandin(api_key=KEY) as standin:
        yield standin


def config(tmp_path: Path, standin: LastPassStandin, *, key: str = KEY, products: Any = None,
           **source: Any) -> Any:
    conf = tmp_path / "conf"
    conf.mkdir(exist_ok=True)
    key_file = conf / "lastpass-api-key"
    key_file.write_text(key + "\n")
    os.chmod(key_file, 0o600)
    section: Dict[str, Any] = {**standin.config_section(), "api_key_file": "lastpass-api-key"}
    section.update(source)
    section = {name: value for name, value in section.items() if value is not None}  # None: leave the key out
    return settings_for(conf / "config.toml", {"source": section,
                                               "products": PRODUCTS if products is None else products})


def read(settings: Any) -> Usage:
    return sources.reader("lastpass")(settings.source, set(settings.product_map), settings.path)


def refusal(settings: Any, error: type = AbortError) -> str:
    with pytest.raises(error) as info:
        read(settings)
    message = info.value.message
    assert "\n" not in message
    return message


def assert_contract(standin: LastPassStandin) -> None:
    assert lastpass_schema.log_problems(standin.requests) == []


# -- rows ---------------------------------------------------------------------------------------------------


def test_each_managed_company_is_one_row_named_as_in_lastpass_in_nfc(tmp_path: Path, lp: LastPassStandin) -> None:
    lp.add_company("Northwind Dental", users=["enrolled"] * 3)
    lp.add_company(unicodedata.normalize("NFD", "Zürich Treuhand AG"), users=["enrolled"])
    lp.add_company("  Harbor Point Legal  ")
    usage = read(config(tmp_path, lp))
    assert usage.rows == [UsageRow("Northwind Dental", "LastPass", 3), UsageRow("Zürich Treuhand AG", "LastPass", 1),
                          UsageRow("Harbor Point Legal", "LastPass", 0)]
    assert all(row.psa_company is None for row in usage.rows)  # psa_company is a PSA pin, never LastPass's id
    assert usage.origin == f"LastPass at {lp.api_url}"
    assert not usage.unterminated
    assert_contract(lp)


def test_by_default_every_user_but_a_disabled_one_takes_a_seat(tmp_path: Path, lp: LastPassStandin) -> None:
    lp.add_company("Acme", users=["enrolled", "pending-invitation", "expired-invitation", "staged",
                                  "awaiting-approval", "disabled", "disabled"])
    assert read(config(tmp_path, lp)).rows == [UsageRow("Acme", "LastPass", 5)]


def test_count_statuses_decides_which_users_take_a_seat(tmp_path: Path, lp: LastPassStandin) -> None:
    lp.add_company("Acme", users=["enrolled", "enrolled", "pending-invitation", "staged", "disabled"])
    usage = read(config(tmp_path, lp, count_statuses=["enrolled", "pending-invitation"]))
    assert usage.rows == [UsageRow("Acme", "LastPass", 3)]


def test_a_suspended_company_has_zero_seats_and_its_users_are_not_read(tmp_path: Path, lp: LastPassStandin) -> None:
    lp.add_company("Active Co", users=["enrolled"] * 4)
    lp.add_company("Paused Co", status="suspended", users=["enrolled"] * 9, addons=["mfa"])
    usage = read(config(tmp_path, lp))
    assert usage.rows == [UsageRow("Active Co", "LastPass", 4), UsageRow("Paused Co", "LastPass+MFA", 0)]
    assert lp.counts == {COMPANIES: 1, USERS: 1}
    assert usage.note == "2 LastPass managed companies, 1 suspended"


def test_a_company_with_the_mfa_add_on_bills_as_mfa_sku(tmp_path: Path, lp: LastPassStandin) -> None:
    lp.add_company("Plain", users=["enrolled"])
    lp.add_company("With MFA", addons=["sso", "mfa"], users=["enrolled"] * 2)
    lp.add_company("SSO only", addons=["sso"], users=["enrolled"])
    lp.add_company("Null add-ons", fields={"addons": None}, users=["enrolled"])
    usage = read(config(tmp_path, lp, sku="LP-STD", mfa_sku="LP-MFA",
                        products={"LP-STD": "SEATS-STD", "LP-MFA": "SEATS-MFA"}))
    assert [(r.customer, r.sku) for r in usage.rows] == [
        ("Plain", "LP-STD"), ("With MFA", "LP-MFA"), ("SSO only", "LP-STD"), ("Null add-ons", "LP-STD")]


def test_the_note_counts_companies_and_suspended_ones(tmp_path: Path, lp: LastPassStandin) -> None:
    lp.add_company("Only", status="suspended")
    assert read(config(tmp_path, lp)).note == "1 LastPass managed company, 1 suspended"


def test_the_id_of_each_company_is_its_alias_for_the_mapping_file(tmp_path: Path, lp: LastPassStandin) -> None:
    first = lp.add_company("Northwind Dental")
    second = lp.add_company("ZÜRICH Treuhand")
    assert dict(read(config(tmp_path, lp)).aliases) == {"northwind dental": str(first),
                                                       "zürich treuhand": str(second)}


# -- paging and concurrency -----------------------------------------------------------------------------------


def test_companies_and_users_are_paged_at_500_following_next_page_token(tmp_path: Path, lp: LastPassStandin) -> None:
    for n in range(1, 502):
        lp.add_company(f"Customer {n:04d}", users=["enrolled"] if n % 2 else [])
    big = lp.add_company("Big Co")
    lp.add_users(big, 1201)
    usage = read(config(tmp_path, lp))
    assert len(usage.rows) == 502
    assert usage.rows[-1] == UsageRow("Big Co", "LastPass", 1201)
    assert sum(r.seats for r in usage.rows) == 251 + 1201
    assert lp.counts == {COMPANIES: 2, USERS: 502 + 2}  # 502 companies; Big Co's 1,201 users take 3 pages
    assert all(r.query["max-results"] == "500" for r in lp.requests)
    tokens = [r for r in lp.requests if "page-token" in r.query]
    assert len(tokens) == 3 and all(set(r.query) == {"max-results", "page-token"} for r in tokens)
    assert_contract(lp)


def test_user_lists_are_read_eight_at_a_time(tmp_path: Path) -> None:
    with LastPassStandin(api_key=KEY, latency_ms=30) as lp:
        for n in range(40):
            lp.add_company(f"Customer {n}", users=["enrolled"])
        started = time.monotonic()
        read(config(tmp_path, lp))
        elapsed = time.monotonic() - started
        assert 4 <= lp.max_inflight[USERS] <= lastpass.CONCURRENCY == 8
        assert elapsed < 41 * 0.030 / 2  # far below one request at a time


def test_a_page_token_handed_back_twice_stops_the_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lastpass, "PAGE_SIZE", 1)
    with LastPassStandin(api_key=KEY, loop_tokens=True) as lp:
        for name in ("A", "B", "C"):
            lp.add_company(name)
        message = refusal(config(tmp_path, lp))
        assert "GET /v1/managed-companies (page 2) handed back a nextPageToken it had given before" in message
        assert "the paging of managed companies loops; nothing was written" in message
        assert lp.counts[COMPANIES] == 2  # (user lists of the companies already listed start meanwhile)


def test_more_pages_than_the_bound_stop_the_read(tmp_path: Path, lp: LastPassStandin,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lastpass, "PAGE_SIZE", 1)
    monkeypatch.setattr(lastpass, "MAX_PAGES", 2)
    for name in ("A", "B", "C"):
        lp.add_company(name)
    message = refusal(config(tmp_path, lp))
    assert "GET /v1/managed-companies gave more than 2 pages of managed companies at 1 each" in message
    assert lp.counts[COMPANIES] == 2


# -- errors --------------------------------------------------------------------------------------------------


def _forms(secret: str) -> List[str]:
    raw = secret.encode()
    return [secret, quote(secret, safe=""), quote(secret), base64.b64encode(raw).decode(),
            base64.urlsafe_b64encode(raw).decode().rstrip("="), base64.b64encode(b"api-key " + raw).decode()]


@pytest.mark.parametrize("form, named", [
    ("file", "[source] api_key_file ("), ("env", "[source] api_key_env ($LP_TEST_KEY)"), ("literal", "[source] api_key ("),
])
def test_a_refused_key_aborts_naming_api_key_and_never_showing_the_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, form: str, named: str) -> None:
    wrong = KEY.replace("abcdefghijklmnop", "ponmlkjihgfedcba")
    with LastPassStandin(api_key=KEY, leak_key=True) as lp:  # its 401 echoes what it was sent, in every form
        lp.add_company("Acme")
        if form == "file":
            cfg = config(tmp_path, lp, key=wrong)
        elif form == "env":
            monkeypatch.setenv("LP_TEST_KEY", wrong)
            cfg = config(tmp_path, lp, api_key_env="LP_TEST_KEY", api_key_file=None)
        else:
            cfg = config(tmp_path, lp, api_key=wrong, api_key_file=None)
        message = refusal(cfg)
        assert named in message
        assert "HTTP 401" in message and "Unauthorized: The API key is missing or invalid." in message
        assert "Admin Console > Advanced > LastPass API" in message and "nothing was written" in message
        for shown in _forms(wrong):
            assert shown not in message
        assert "[redacted]" in message  # the echo was there, and was scrubbed
        assert redact.scrub(f"x {wrong} y") == "x [redacted] y"  # registered process-wide too
        assert lp.counts == {COMPANIES: 1}


def test_a_403_is_a_refused_key_too(tmp_path: Path, lp: LastPassStandin) -> None:
    lp.add_company("Acme", users=["enrolled"])
    lp.fail(403, body=problem(403, "Forbidden", "The admin level may not view users.")[2], endpoint="/users")
    message = refusal(config(tmp_path, lp))
    assert "refused the API key in [source] api_key_file" in message
    assert "HTTP 403" in message and "Forbidden: The admin level may not view users." in message


def test_a_429_is_waited_out_honouring_retry_after(tmp_path: Path, lp: LastPassStandin) -> None:
    lp.add_company("Acme", users=["enrolled"] * 2)
    lp.throttle(1, retry_after="1", endpoint="/users")
    started = time.monotonic()
    usage = read(config(tmp_path, lp))
    assert time.monotonic() - started >= 1.0
    assert usage.rows == [UsageRow("Acme", "LastPass", 2)]
    assert lp.counts == {COMPANIES: 1, USERS: 2}
    assert [r.status for r in lp.requests] == [200, 429, 200]
    assert lastpass.MAX_WAIT == 60.0  # no single Retry-After holds a run longer than a minute


def test_a_429_that_outlasts_the_retries_aborts_for_a_later_firing(tmp_path: Path, lp: LastPassStandin,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lastpass, "MAX_RETRIES", 1)
    lp.add_company("Acme")
    lp.throttle(2, retry_after="0")
    message = refusal(config(tmp_path, lp))
    assert "HTTP 429: Too Many Requests: Rate limit exceeded; retry later. (after 2 attempts)" in message
    assert message.endswith("a later firing within catch-up tries again)")


def test_a_problem_details_answer_is_shown_by_title_and_detail(tmp_path: Path, lp: LastPassStandin) -> None:
    lp.add_company("Acme", users=["enrolled"])
    body = problem(400, "Bad Request", "One or more parameters are invalid.",
                   errors=[("/max-results", "must be at most 500")])[2]
    lp.fail(400, body=body, endpoint="/users")
    message = refusal(config(tmp_path, lp))
    assert ("HTTP 400: Bad Request: One or more parameters are invalid. (/max-results: must be at most 500); "
            "nothing was written") in message
    assert "{" not in message  # the title and detail, not the JSON


def test_an_error_that_is_not_problem_details_shows_its_start(tmp_path: Path, lp: LastPassStandin,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lastpass, "MAX_RETRIES", 1)
    lp.fail(500, 2, body={"message": "upstream exploded"})
    message = refusal(config(tmp_path, lp))
    assert 'HTTP 500: {"message": "upstream exploded"}' in message


def test_an_unreachable_lastpass_aborts_for_a_later_firing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lastpass, "MAX_RETRIES", 0)
    standin = LastPassStandin(api_key=KEY)
    cfg = config(tmp_path, standin)
    standin.stop()  # never started: the port is closed
    message = refusal(cfg)
    assert message.startswith(f"LastPass at {standin.api_url} could not be reached: ")
    assert "a later firing within catch-up tries again" in message


def test_plain_http_to_another_host_is_refused_before_any_request(tmp_path: Path, lp: LastPassStandin) -> None:
    message = refusal(config(tmp_path, lp, url="http://api.lastpass.example/business"), ConfigError)
    assert "[source] url: refusing plain-HTTP URL http://api.lastpass.example/business" in message
    assert lp.total == 0


@pytest.mark.parametrize("setup, expected", [
    pytest.param(lambda lp: lp.fail(200, body={"items": {"id": 1}, "nextPageToken": None}),
                 "GET /v1/managed-companies: items is an object, not a list", id="items-not-a-list"),
    pytest.param(lambda lp: lp.fail(200, body=[{"id": 1}]),
                 "GET /v1/managed-companies answered a list, not an object with items and nextPageToken",
                 id="body-a-list"),
    pytest.param(lambda lp: lp.fail(200, body={"companies": []}),
                 "GET /v1/managed-companies answered an object without items", id="no-items"),
    pytest.param(lambda lp: lp.fail(200, body={"items": [], "nextPageToken": 7}),
                 "GET /v1/managed-companies: nextPageToken is a number, not a string or null", id="token-a-number"),
    pytest.param(lambda lp: lp.add_company("Acme", omit=["id"]),
                 "GET /v1/managed-companies items[0] has no id", id="company-without-id"),
    pytest.param(lambda lp: lp.add_company("Acme", fields={"id": "A-1"}),
                 "GET /v1/managed-companies items[0]: id 'A-1' is not a managed company id", id="company-id-not-a-number"),
    pytest.param(lambda lp: lp.add_company("Acme", omit=["name"], id=7),
                 "GET /v1/managed-companies items[0] (managed company id 7) has no name", id="company-without-name"),
    pytest.param(lambda lp: lp.add_company("   ", id=7),
                 "GET /v1/managed-companies items[0] (managed company id 7): name is '   ', not a company name",
                 id="company-name-blank"),
    pytest.param(lambda lp: lp.add_company("Acme", omit=["status"], id=7),
                 "items[0] (managed company 'Acme', id 7) has no status", id="company-without-status"),
    pytest.param(lambda lp: lp.add_company("Acme", status="trial", id=7),
                 "items[0] (managed company 'Acme', id 7): status 'trial' is not one psabill knows (active, "
                 "suspended), so whether it bills is unknown", id="company-status-unknown"),
    pytest.param(lambda lp: lp.add_company("Acme", omit=["addons"], id=7),
                 "items[0] (managed company 'Acme', id 7) has no addons", id="company-without-addons"),
    pytest.param(lambda lp: lp.add_company("Acme", fields={"addons": "mfa"}, id=7),
                 "items[0] (managed company 'Acme', id 7): addons is 'mfa', not a list of names",
                 id="company-addons-a-string"),
    pytest.param(lambda lp: lp.add_user(lp.add_company("Acme", id=7), omit=["accountStatus"], id=70),
                 "GET /v1/managed-companies/7/users items[0] (user id 70) has no accountStatus",
                 id="user-without-account-status"),
    pytest.param(lambda lp: lp.add_user(lp.add_company("Acme", id=7), "frozen", id=70),
                 "GET /v1/managed-companies/7/users items[0] (user id 70): accountStatus 'frozen' is not one psabill "
                 "knows", id="user-status-unknown"),
    pytest.param(lambda lp: lp.add_user(lp.add_company("Acme", id=7), omit=["id"]),
                 "GET /v1/managed-companies/7/users items[0] has no id", id="user-without-id"),
    pytest.param(lambda lp: (lp.add_company("Acme", id=7),
                             lp.fail(200, body={"items": ["x"], "nextPageToken": None}, endpoint="/users")),
                 "GET /v1/managed-companies/7/users items[0] is a string, not a user object", id="user-not-an-object"),
])
def test_an_answer_of_an_unexpected_shape_aborts_naming_the_field(tmp_path: Path, lp: LastPassStandin,
                                                                  setup: Any, expected: str) -> None:
    setup(lp)
    message = refusal(config(tmp_path, lp))
    assert message.startswith(f"LastPass at {lp.api_url}: ")
    assert expected in message
    assert message.endswith("; nothing was written")


def test_a_user_listed_twice_is_refused_rather_than_counted_twice(tmp_path: Path, lp: LastPassStandin) -> None:
    lp.add_company("Acme", id=7)
    page = {"items": [{"id": 1, "name": "a", "email": "a@x", "accountStatus": "enrolled"}] * 2,
            "nextPageToken": None}
    lp.fail(200, body=page, endpoint="/users")
    assert "lists user id 1 again" in refusal(config(tmp_path, lp))


def test_two_companies_with_one_name_are_refused(tmp_path: Path, lp: LastPassStandin) -> None:
    lp.add_company("Zürich Treuhand", id=11)
    lp.add_company(unicodedata.normalize("NFD", "ZÜRICH TREUHAND"), id=12, addons=["mfa"])
    message = refusal(config(tmp_path, lp))
    assert message == (f"LastPass at {lp.api_url}: managed companies id 11 and id 12 are both named 'ZÜRICH TREUHAND' "
                       "(names are compared ignoring case and accents' encoding): rename one in the LastPass Admin "
                       "Console so each bills to its own PSA company; nothing was written")


def test_a_control_character_in_a_company_name_is_refused_as_in_a_csv_row(tmp_path: Path,
                                                                         lp: LastPassStandin) -> None:
    lp.add_company("Acme\x1b[2Jevil", id=7)
    assert refusal(config(tmp_path, lp)) == (f"LastPass at {lp.api_url} managed company id 7: customer "
                                             "'Acme\\x1b[2Jevil' holds a control character")


def test_a_company_with_no_users_has_a_row_with_zero_seats(tmp_path: Path, lp: LastPassStandin) -> None:
    lp.add_company("Empty Co")
    assert read(config(tmp_path, lp)).rows == [UsageRow("Empty Co", "LastPass", 0)]


def test_no_companies_at_all_is_an_empty_source_for_the_guard_to_judge(tmp_path: Path, lp: LastPassStandin) -> None:
    usage = read(config(tmp_path, lp))
    assert usage.rows == [] and usage.note == "0 LastPass managed companies, 0 suspended"


def test_a_sku_missing_from_products_aborts_naming_the_sku_and_the_fix(tmp_path: Path, lp: LastPassStandin) -> None:
    lp.add_company("Plain")
    lp.add_company("With MFA", addons=["mfa"], id=42)
    message = refusal(config(tmp_path, lp, products={"LastPass": "SEATS-STD"}))
    assert message == (f"LastPass at {lp.api_url}: managed company 'With MFA' (id 42) bills as SKU 'LastPass+MFA' "
                       "([source] mfa_sku), which is not a key of [products] (LastPass): add \"LastPass+MFA\" = "
                       "\"<PSA product>\" to [products], or set [source] mfa_sku to one of its keys; nothing was "
                       "written")
    assert lp.counts.get(USERS, 0) <= 1  # found on the company list, before users are read


def test_a_sku_that_no_company_uses_need_not_be_in_products(tmp_path: Path, lp: LastPassStandin) -> None:
    lp.add_company("Plain", users=["enrolled"])
    assert read(config(tmp_path, lp, products={"LastPass": "SEATS-STD"})).rows == [UsageRow("Plain", "LastPass", 1)]


@pytest.mark.parametrize("statuses, expected", [
    ([], "[source] count_statuses is empty: no user would ever be billed"),
    (["enroled"], "[source] count_statuses names 'enroled', which is not a LastPass accountStatus (enrolled, "),
])
def test_count_statuses_must_name_lastpass_statuses(tmp_path: Path, lp: LastPassStandin, statuses: List[str],
                                                    expected: str) -> None:
    assert expected in refusal(config(tmp_path, lp, count_statuses=statuses), ConfigError)
    assert lp.total == 0


# -- digest ---------------------------------------------------------------------------------------------------


def test_identical_answers_give_identical_digests_and_any_change_another(tmp_path: Path, lp: LastPassStandin) -> None:
    acme = lp.add_company("Acme", users=["enrolled", "disabled"])
    lp.add_company("Globex", status="suspended")
    cfg = config(tmp_path, lp)
    first = read(cfg).digest
    assert len(first) == 64 and read(cfg).digest == first
    lp.add_user(acme, "disabled")  # no seat changes, but the answer did
    assert read(cfg).digest != first


def test_the_digest_ignores_the_order_of_the_answers() -> None:
    one = lastpass.Company("1", "A", False, False, {"id": 1, "name": "A"})
    two = lastpass.Company("2", "B", False, False, {"id": 2, "name": "B"})
    users = {"1": [{"id": 10}, {"id": 11}], "2": []}
    flipped = {"1": [{"id": 11}, {"id": 10}], "2": []}
    assert lastpass.digest([one, two], users) == lastpass.digest([two, one], flipped)


# -- the contract ---------------------------------------------------------------------------------------------


def test_every_request_of_a_realistic_read_matches_the_published_fixture(tmp_path: Path) -> None:
    with LastPassStandin.sample(companies=60, users=(0, 700), seed=5, api_key=KEY) as lp:
        usage = read(config(tmp_path, lp))
        assert len(usage.rows) == 60
        assert lp.requests and all(r.status == 200 for r in lp.requests)
        assert_contract(lp)
        assert {r.headers["Authorization"] for r in lp.requests} == {"api-key [redacted]"}


def test_the_users_list_is_marked_as_an_assumption_in_the_fixture() -> None:
    assumed = lastpass_schema.assumptions("GET", "/business/v1/managed-companies/7/users")
    assert "GET /v1/managed-companies/{child-company-id}/users" in assumed
    assert "response_200" in lastpass_schema.assumptions("GET", "/business/v1/managed-companies")
    assert lastpass_schema.fixture_problems() == []


def test_the_checker_flags_requests_that_break_the_fixture() -> None:
    problems = lastpass_schema.request_problems(
        "GET", "/business/v1/managed-companies", {"max-results": "501", "include": "users"},
        {"Authorization": "Bearer [redacted]"})
    assert problems == ["GET /v1/managed-companies: max-results=501 is outside 1..500",
                        "GET /v1/managed-companies: unknown query parameter 'include'",
                        "GET /v1/managed-companies: header Authorization is not of the form 'api-key <key>'"]
    assert lastpass_schema.request_problems("GET", "/v1/managed-companies", {}, {"Authorization": "api-key x"}) == [
        "GET /v1/managed-companies: not under the base path /business (base URL https://api.lastpass.com/business)"]
    assert lastpass_schema.request_problems(
        "GET", "/business/v1/managed-companies/acme/users", {}, {"Authorization": "api-key x"}) == [
        "GET /v1/managed-companies/{child-company-id}/users: path parameter child-company-id='acme' is not an integer"]


# -- config, registry, mapping --------------------------------------------------------------------------------


def test_a_config_with_source_kind_lastpass_loads(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('version = 1\n\n[source]\nkind = "lastpass"\napi_key_env = "LASTPASS_API_KEY"\n'
                    'count_statuses = ["enrolled"]\n\n[products]\nLastPass = "SEATS-STD"\n"LastPass+MFA" = "SEATS-MFA"\n')
    os.chmod(path, 0o600)
    settings = load_config(path, check_addresses=False)
    assert settings.source.kind == "lastpass"
    assert settings.source.url == "https://api.lastpass.com/business"
    assert settings.source.count_statuses == ("enrolled",)
    assert (settings.source.sku, settings.source.mfa_sku) == ("LastPass", "LastPass+MFA")
    assert settings.source.api_key.env == "LASTPASS_API_KEY"


def test_the_registry_returns_this_reader_for_lastpass() -> None:
    assert "lastpass" in sources.kinds()
    assert sources.reader("lastpass") is lastpass.read


def _mapping(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mapping.csv"
    path.write_text(text)
    os.chmod(path, 0o600)
    return path


def test_the_mapping_file_pins_a_managed_company_by_its_id_or_its_name(tmp_path: Path) -> None:
    aliases = {"northwind dental": "4711", "zürich treuhand": "4712"}
    pins = mapping.load(_mapping(tmp_path, "customer,psa_company\n4711,NWD\nZÜRICH TREUHAND,ZT\n"), aliases)
    assert pins["northwind dental"].psa_company == "NWD"
    assert pins["zürich treuhand"].psa_company == "ZT"


def test_a_customer_pinned_by_name_and_by_id_is_refused(tmp_path: Path) -> None:
    path = _mapping(tmp_path, "customer,psa_company\nNorthwind Dental,NWD\n4711,OTHER\n")
    with pytest.raises(AbortError) as info:
        mapping.load(path, {"northwind dental": "4711"})
    assert info.value.message == (f"mapping file {path} lines 2 and 3 both pin customer 'northwind dental', by its "
                                  "name and by its id 4711; keep one")


def test_a_key_that_is_one_companys_id_and_anothers_name_is_refused_unless_the_first_is_pinned_by_name(
        tmp_path: Path) -> None:
    aliases = {"northwind dental": "4711", "4711": "9000"}  # a company named "4711"
    path = _mapping(tmp_path, "customer,psa_company\n4711,X\n")
    with pytest.raises(AbortError) as info:
        mapping.load(path, aliases)
    assert "'4711' is the id of customer 'northwind dental' and the name of another customer" in info.value.message
    pins = mapping.load(_mapping(tmp_path, "customer,psa_company\n4711,X\nNorthwind Dental,NWD\n"), aliases)
    assert pins["4711"].psa_company == "X" and pins["northwind dental"].psa_company == "NWD"


def test_without_aliases_the_mapping_file_reads_as_before(tmp_path: Path) -> None:
    pins = mapping.load(_mapping(tmp_path, "customer,psa_company\n4711,NWD\n"))
    assert set(pins) == {"4711"}


def test_a_lastpass_company_pinned_by_id_plans_against_its_psa_company(tmp_path: Path, lp: LastPassStandin) -> None:
    from psabill.psa.base import open_client
    from psabill.sandbox.connectwise import Sandbox

    northwind = lp.add_company("Northwind Dental", users=["enrolled"] * 7)
    lp.add_company("Globex Corporation", users=["enrolled"] * 2, addons=["mfa"])
    usage = read(config(tmp_path, lp))
    with Sandbox() as cw:
        holding = cw.add_company("NWH", "Northwind Holdings")  # no name match: only the pin finds it
        cw.add_addition(cw.add_agreement(holding), "SEATS-STD", 3)
        globex = cw.add_company("GLOBEX", "Globex Corporation")
        cw.add_addition(cw.add_agreement(globex), "SEATS-MFA", 2)
        key = tmp_path / "cw-key"
        key.write_text(cw.private_key)
        os.chmod(key, 0o600)
        psa = settings_for(tmp_path / "config.toml", {"psa": {**cw.config_section(), "private_key_file": str(key)},
                                                     "products": PRODUCTS})
        pins = mapping.load(_mapping(tmp_path, f"customer,psa_company\n{northwind},NWH\n"), usage.aliases)
        client = open_client(psa.psa)
        try:
            items = engine.plan(client, usage.rows, products=psa.product_map, pins=pins, where="ConnectWise")
        finally:
            client.close()
    assert [(i.customer, i.psa_company, i.outcome, i.old, i.new) for i in items] == [
        ("Northwind Dental", "NWH", "planned", 3, 7), ("Globex Corporation", "GLOBEX", "unchanged", 2, 2)]
