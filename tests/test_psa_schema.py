"""The schema validator itself: good requests pass, and each kind of mistake is caught by name."""

from __future__ import annotations

from typing import Any, Dict, List
from urllib.parse import urlencode

from support.psa_schema import autotask_problems, connectwise_problems, schema

CW = "https://api-na.myconnectwise.net/v2025_1/apis/3.0"
CW_HEADERS = {
    "Authorization": "Basic QUNNRStwdWI6cHJpdg==",
    "clientId": "00000000-0000-0000-0000-000000000000",
    "Accept": "application/vnd.connectwise.com+json; version=2025.1",
    "Content-Type": "application/json",
}
AT = "https://webservices5.autotask.net/ATServicesRest/v1.0"
AT_HEADERS = {
    "ApiIntegrationCode": "CODE",
    "UserName": "api@example.com",
    "Secret": "s3cret",
    "Content-Type": "application/json",
    "Accept": "application/json",
}


def cw_get(path: str, **params: Any) -> List[str]:
    query = f"?{urlencode(params)}" if params else ""
    return connectwise_problems("GET", CW + path + query, CW_HEADERS)


def at_query(entity: str, body: Dict[str, Any]) -> List[str]:
    return autotask_problems("POST", f"{AT}/{entity}/query", AT_HEADERS, body)


def mentions(problems: List[str], *words: str) -> bool:
    return any(all(word in problem for word in words) for problem in problems)


# -- the fixtures ---------------------------------------------------------------


def test_each_fixture_names_the_public_document_and_commit_it_came_from() -> None:
    for name, repo in (("connectwise", "ai-connor/connectwise"), ("autotask", "KelvinTegelaar/AutotaskAPI")):
        source = schema(name)["_source"]
        assert source["repository"] == repo
        assert len(source["commit"]) == 40


def test_the_fixtures_record_the_types_psabill_depends_on() -> None:
    addition = schema("connectwise")["entities"]["Addition"]
    assert addition["quantity"] == "number"
    assert addition["effectiveDate"] == addition["cancelledDate"] == "date-time"
    assert addition["product"] == {"reference": "IvItemReference"}
    units = schema("autotask")["entities"]["ContractServiceUnits"]["fields"]
    assert units["ApproveAndPostDate"] == units["StartDate"] == units["EndDate"] == "date-time"
    assert units["Units"] == "integer" and units["Price"] == "number"


# -- ConnectWise: requests that fit ---------------------------------------------


def test_it_accepts_the_list_requests_psabill_makes() -> None:
    assert cw_get("/company/companies", pageSize=1000, page=1, fields="id,identifier,name",
                  conditions='identifier in ("ACME","GLOBEX")') == []
    assert cw_get("/finance/agreements", pageSize=1000, page=1, fields="id,name,company,agreementStatus,cancelledFlag",
                  conditions='company/id in (1,2,3) and agreementStatus="Active" and cancelledFlag=false') == []
    assert cw_get("/finance/agreements/7/additions", fields="id,product,quantity,cancelledDate",
                  conditions="cancelledDate=null") == []
    assert cw_get("/system/info") == []


def test_it_accepts_dates_nulls_groups_and_nested_references_in_conditions() -> None:
    condition = ("(cancelledDate=null or cancelledDate>[2026-12-01T00:00:00Z]) and "
                 "effectiveDate<=[2026-12-01T00:00:00Z] and product/identifier=\"LP-MFA\" and quantity>=1.5")
    assert cw_get("/finance/agreements/7/additions", conditions=condition) == []


def test_it_accepts_the_on_premises_codebase_and_a_patch_of_quantity() -> None:
    url = "https://psa.example.com/v4_6_release/apis/3.0/finance/agreements/7/additions/9"
    body = [{"op": "replace", "path": "quantity", "value": 12}]
    assert connectwise_problems("PATCH", url, CW_HEADERS, body) == []
    assert connectwise_problems("PATCH", url, CW_HEADERS, [{"op": "replace", "path": "/quantity", "value": 12.5}]) == []


def test_it_accepts_the_unauthenticated_companyinfo_lookup() -> None:
    assert connectwise_problems("GET", "https://na.myconnectwise.net/login/companyinfo/acme", {}) == []


# -- ConnectWise: mistakes ------------------------------------------------------


def test_it_refuses_a_condition_on_a_field_the_entity_does_not_have() -> None:
    problems = cw_get("/finance/agreements/7/additions", conditions="canceledDate=null")
    assert mentions(problems, "Addition has no field 'canceledDate'")


def test_it_refuses_a_nested_field_the_reference_does_not_have() -> None:
    problems = cw_get("/finance/agreements", conditions='company/number="ACME"')
    assert mentions(problems, "company/number")


def test_it_refuses_a_date_compared_as_a_string() -> None:
    problems = cw_get("/finance/agreements/7/additions", conditions='effectiveDate<="2026-12-01"')
    assert mentions(problems, "effectiveDate is date-time", "string")


def test_it_refuses_a_number_compared_with_a_string_field_and_the_reverse() -> None:
    assert mentions(cw_get("/company/companies", conditions="identifier=12"), "identifier is string")
    assert mentions(cw_get("/finance/agreements", conditions='company/id="12"'), "company/id is integer")


def test_it_refuses_comparing_a_whole_reference_object() -> None:
    assert mentions(cw_get("/finance/agreements", conditions="company=12"), "reference object")


def test_it_refuses_conditions_it_cannot_parse() -> None:
    assert mentions(cw_get("/company/companies", conditions='identifier in ("A"'), "conditions")


def test_it_refuses_an_unknown_field_in_fields() -> None:
    assert mentions(cw_get("/finance/agreements/7/additions", fields="id,qty"), "'qty'")


def test_it_refuses_a_missing_client_id_and_a_wrong_accept_header() -> None:
    headers = dict(CW_HEADERS)
    del headers["clientId"]
    headers["Accept"] = "application/json"
    problems = connectwise_problems("GET", CW + "/system/info", headers)
    assert mentions(problems, "missing header clientId")
    assert mentions(problems, "header Accept")


def test_it_refuses_a_misspelled_connectwise_path() -> None:
    assert mentions(cw_get("/finance/agreement/7/additions"), "no such path")


def test_it_refuses_a_url_without_a_codebase() -> None:
    problems = connectwise_problems("GET", "https://na.myconnectwise.net/apis/3.0/system/info", CW_HEADERS)
    assert mentions(problems, "not a codebase")


def test_it_refuses_a_method_the_path_does_not_allow() -> None:
    problems = connectwise_problems("PATCH", CW + "/finance/agreements/7/additions", CW_HEADERS, [])
    assert mentions(problems, "allows only GET")


def test_it_refuses_a_patch_of_an_unknown_addition_field() -> None:
    url = CW + "/finance/agreements/7/additions/9"
    problems = connectwise_problems("PATCH", url, CW_HEADERS, [{"op": "replace", "path": "qty", "value": 3}])
    assert mentions(problems, "'qty' is not a field of Addition")


def test_it_refuses_a_patch_value_of_the_wrong_type() -> None:
    url = CW + "/finance/agreements/7/additions/9"
    problems = connectwise_problems("PATCH", url, CW_HEADERS, [{"op": "replace", "path": "quantity", "value": "12"}])
    assert mentions(problems, "quantity is number")


def test_it_refuses_a_patch_body_that_is_not_a_list() -> None:
    url = CW + "/finance/agreements/7/additions/9"
    problems = connectwise_problems("PATCH", url, CW_HEADERS, {"quantity": 12})
    assert mentions(problems, "JSON Patch list")


# -- Autotask: requests that fit ------------------------------------------------


def test_it_accepts_autotask_queries_with_groups_lists_and_dates() -> None:
    body = {
        "filter": [
            {"op": "in", "field": "contractID", "value": [1, 2]},
            {"op": "lte", "field": "startDate", "value": "2026-11-30T00:00:00"},
            {"op": "or", "items": [{"op": "gte", "field": "endDate", "value": "2026-11-30T00:00:00Z"},
                                   {"op": "notExist", "field": "approveAndPostDate"}]},
        ],
        "IncludeFields": ["id", "contractServiceID", "startDate", "endDate", "units", "approveAndPostDate"],
        "MaxRecords": 500,
    }
    assert at_query("ContractServiceUnits", body) == []
    assert at_query("Companies", {"filter": [{"op": "in", "field": "companyNumber", "value": ["A1"]}]}) == []
    assert at_query("Services", {"filter": [{"op": "eq", "field": "isActive", "value": True}]}) == []
    assert at_query("ContractServiceBundles", {"filter": [{"op": "eq", "field": "serviceBundleID", "value": 4}]}) == []


def test_it_accepts_a_next_page_posted_with_the_same_body() -> None:
    url = f"{AT}/Companies/query/next?paging=%7B%22pageSize%22%3A500%7D"
    assert autotask_problems("POST", url, AT_HEADERS, {"filter": [{"op": "gte", "field": "id", "value": 0}]}) == []


def test_it_accepts_an_adjustment_dated_at_midnight() -> None:
    body = {"contractID": 1, "serviceID": 2, "effectiveDate": "2026-11-01T00:00:00", "unitChange": -3}
    assert autotask_problems("POST", f"{AT}/ContractServiceAdjustments", AT_HEADERS, body) == []


def test_it_accepts_threshold_and_zone_lookups_in_either_version_case() -> None:
    assert autotask_problems("GET", f"{AT}/ThresholdInformation", AT_HEADERS) == []
    zone = "https://webservices.autotask.net/atservicesrest/V1.0/ZoneInformation?user=api%40example.com"
    assert autotask_problems("GET", zone, AT_HEADERS) == []


# -- Autotask: mistakes ---------------------------------------------------------


def test_it_refuses_an_unknown_field_in_an_autotask_filter_even_inside_a_group() -> None:
    body = {"filter": [{"op": "and", "items": [{"op": "eq", "field": "contractId", "value": 1},
                                               {"op": "eq", "field": "quantity", "value": 1}]}]}
    assert mentions(at_query("ContractServiceUnits", body), "no field 'quantity'")


def test_it_refuses_a_filter_value_of_the_wrong_type() -> None:
    body = {"filter": [{"op": "eq", "field": "contractID", "value": "12"}]}
    assert mentions(at_query("ContractServices", body), "contractID is integer")


def test_it_refuses_a_date_only_value_on_a_date_time_field() -> None:
    body = {"filter": [{"op": "gte", "field": "endDate", "value": "2026-11-30"}]}
    assert mentions(at_query("ContractServiceUnits", body), "endDate is date-time")


def test_it_refuses_an_in_filter_without_a_list() -> None:
    body = {"filter": [{"op": "in", "field": "id", "value": 5}]}
    assert mentions(at_query("Contracts", body), "takes a non-empty list")


def test_it_refuses_an_unknown_include_field() -> None:
    body = {"filter": [{"op": "gte", "field": "id", "value": 0}], "IncludeFields": ["id", "quantity"]}
    assert mentions(at_query("ContractServices", body), "IncludeFields names 'quantity'")


def test_it_refuses_a_get_on_a_next_page() -> None:
    url = f"{AT}/Companies/query/next?paging=%7B%7D"
    assert mentions(autotask_problems("GET", url, AT_HEADERS), "allows only POST", "next page")


def test_it_refuses_a_missing_autotask_header() -> None:
    headers = {k: v for k, v in AT_HEADERS.items() if k != "Secret"}
    assert mentions(autotask_problems("GET", f"{AT}/ThresholdInformation", headers), "missing header Secret")


def test_it_refuses_a_misspelled_autotask_path() -> None:
    body = {"filter": [{"op": "gte", "field": "id", "value": 0}]}
    assert mentions(at_query("ContractServiceUnit", body), "no such path")


def test_it_refuses_a_zone_lookup_without_a_user() -> None:
    zone = "https://webservices.autotask.net/atservicesrest/v1.0/ZoneInformation"
    assert mentions(autotask_problems("GET", zone, AT_HEADERS), "missing query parameter 'user'")


def test_it_refuses_an_adjustment_effective_date_in_the_wrong_format() -> None:
    url = f"{AT}/ContractServiceAdjustments"
    for date in ("2026-11-01", "2026-11-01T09:30:00", "2026-11-01T00:00:00Z"):
        body = {"contractID": 1, "serviceID": 2, "effectiveDate": date, "unitChange": 1}
        assert mentions(autotask_problems("POST", url, AT_HEADERS, body), "effectiveDate", "YYYY-MM-DDT00:00:00")


def test_it_refuses_an_adjustment_with_an_unknown_or_mistyped_field() -> None:
    url = f"{AT}/ContractServiceAdjustments"
    body = {"contractID": 1, "serviceID": 2, "effectiveDate": "2026-11-01T00:00:00", "units": 3, "unitChange": 1.5}
    problems = autotask_problems("POST", url, AT_HEADERS, body)
    assert mentions(problems, "no field 'units'")
    assert mentions(problems, "unitChange is integer")
