"""An Autotask REST v1.0 stand-in on loopback, for the tests, demo and benchmarks.

It behaves like live Autotask where psabill depends on it:

* ZoneInformation, ThresholdInformation; ``POST /v1.0/{Entity}/query`` for
  Companies, Contracts, ContractServices, ContractServiceUnits,
  ContractServiceBundles, ContractServiceBundleUnits, Services, ServiceBundles
  and ServiceBundleServices (filters eq, noteq, in, notIn, gt/gte/lt/lte,
  exist/notExist, and/or; ``IncludeFields``). Pages hold 500 items;
  ``nextPageUrl`` reads ``.../{Entity}/query/next?paging=...`` and must be
  POSTed with the same body: a GET there answers 405, another body 500.
* ``GET /v1.0/Contracts/entityInformation/fields`` answers the Contracts
  picklists (status, contractPeriodType, contractType) as v1.json's
  FieldInformationResultModel: ``{"fields": [{"name", "isPickList",
  "picklistValues": [{"value": "2", "label": "Monthly", ...}]}]}``. Autotask
  publishes no values; the stand-in's are in :data:`PERIOD_VALUES` and
  :data:`STATUS_VALUES`, and a test may pass others.
* A contract has a start date, an end date and a period type; its billing
  periods run from the start date in steps of the period type ("The Contract
  Start Date defines the billing periods", Datto KB360046864511).
  ContractServiceUnits (and ContractServiceBundleUnits) hold a row per billing
  period for the whole term, future periods included. Date fields are
  date-only: compared by their date, never time-zone converted. A filter on a
  date field must give a date-time string (``YYYY-MM-DDTHH:MM:SS``).
* ``POST /v1.0/ContractServiceAdjustments`` (and
  ``ContractServiceBundleAdjustments``) takes ``effectiveDate`` as
  ``YYYY-MM-DDT00:00:00`` and applies ``unitChange`` from that date on: on a
  period's first day it adds a new units row with the same dates (so two rows
  start the same day; the one with the highest id is current), inside a period
  it splits the period ("a new ContractServiceUnit is created with a start date
  equal to the effective date of the adjustment"). Later periods change too. A
  change that would touch a period with ``approveAndPostDate`` set is refused.
  :meth:`AutotaskStandin.change` makes such a change the way an admin does in
  Autotask (recorded in ``manual``, not ``adjustments``).
* More than :attr:`AutotaskStandin.thread_limit` requests in flight on one
  entity (3, Autotask's limit for integrations since 2023.1) answer HTTP 500
  with ``{"errors": ["Thread Threshold Exceeded ..."]}``: the refusal public
  clients report, which "may arrive with a non-429 status" (n8n-nodes-autotask
  CHANGELOG 2.23.0). ZoneInformation is exempt.
* Errors come the way Autotask sends them: ``{"errors": [...]}`` with HTTP 500
  for a wrong user name, integration code, field or value, 401 for a wrong
  secret. :meth:`AutotaskStandin.error_in_200` injects a 200 that carries an
  error body.

Test knobs (latency, faults, die_after, request log, per-endpoint counters and
the in-flight maximum) come from the sandbox's LoopbackServer; endpoints are
labelled by entity, which is how Autotask counts its 3-threads-per-endpoint rule.
"""

from __future__ import annotations

import calendar
import hashlib
import json
import re
from datetime import date, timedelta
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from psabill.sandbox.server import BadRequest, LoopbackServer, Reply

PAGE = 500
THREAD_REFUSAL = ("Thread Threshold Exceeded \u2014 The Autotask API thread threshold of 3 threads has been exceeded. "
                  "(Itgenatr005)")
# Picklist values: Autotask publishes none. Period types as the live Services.periodType picklist numbers them
# (WYRE-AI/autotask-mcp PR 284: 2 Monthly, 3 Quarterly, 4 Semi-Annual, 5 Yearly); psabill reads only the labels.
PERIOD_VALUES = {"Monthly": 2, "Quarterly": 3, "Semi-Annual": 4, "Yearly": 5}
PERIOD_MONTHS = {"Monthly": 1, "Quarterly": 3, "Semi-Annual": 6, "Yearly": 12}
STATUS_VALUES = {"Active": 1, "Inactive": 0}  # Active = 1 as public clients filter it (phyco1991, django-autotask)
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")
_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})?$")
_MIDNIGHT = re.compile(r"^\d{4}-\d{2}-\d{2}T00:00:00(\.0+)?$")
ENTITIES = ("Companies", "Contracts", "ContractServices", "ContractServiceUnits", "ContractServiceBundles",
            "ContractServiceBundleUnits", "Services", "ServiceBundles", "ServiceBundleServices")
DATE_FIELDS = {"startdate", "enddate", "approveandpostdate", "effectivedate", "createdate", "lastmodifieddate"}
FIELDS = {  # the fields the stand-in models; a filter on another one is refused like a misspelling
    "Companies": ("id", "companyName", "companyNumber", "isActive"),
    "Contracts": ("id", "companyID", "contractName", "status", "contractType", "startDate", "endDate",
                  "contractPeriodType"),
    "ContractServices": ("id", "contractID", "serviceID", "unitPrice"),
    "ContractServiceUnits": ("id", "contractID", "contractServiceID", "serviceID", "startDate", "endDate", "units",
                             "price", "approveAndPostDate"),
    "ContractServiceBundles": ("id", "contractID", "serviceBundleID", "unitPrice"),
    "ContractServiceBundleUnits": ("id", "contractID", "contractServiceBundleID", "serviceBundleID", "startDate",
                                   "endDate", "units", "price", "approveAndPostDate"),
    "Services": ("id", "name", "isActive"),
    "ServiceBundles": ("id", "name", "isActive"),
    "ServiceBundleServices": ("id", "serviceBundleID", "serviceID"),
}
ADJUSTMENT_FIELDS = {"id", "contractid", "contractserviceid", "serviceid", "unitchange", "effectivedate",
                     "adjustedunitprice", "adjustedunitcost", "allowrepeatservice", "quoteitemid", "userdefinedfields"}
BUNDLE_ADJUSTMENT_FIELDS = {"id", "contractid", "contractservicebundleid", "servicebundleid", "unitchange",
                            "effectivedate", "adjustedunitprice", "allowrepeatservicebundle", "quoteitemid",
                            "userdefinedfields"}


class _Kind:
    """Where a contract service's (or a contract service bundle's) rows live, and its adjustments' fields."""

    def __init__(self, lines: str, units: str, key: str, ref: str, fields: set) -> None:
        self.lines, self.units, self.key, self.ref, self.fields = lines, units, key, ref, fields


SERVICE = _Kind("ContractServices", "ContractServiceUnits", "contractServiceID", "serviceID", ADJUSTMENT_FIELDS)
BUNDLE = _Kind("ContractServiceBundles", "ContractServiceBundleUnits", "contractServiceBundleID", "serviceBundleID",
               BUNDLE_ADJUSTMENT_FIELDS)


class AutotaskError(Exception):
    """Refused the way Autotask refuses: HTTP 500 with {"errors": [message]}."""


def month_period(day: date) -> tuple:
    last = calendar.monthrange(day.year, day.month)[1]
    return day.replace(day=1), day.replace(day=last)


def add_months(day: date, months: int) -> date:
    """``day`` moved by whole months, kept on its day of the month where the month has it."""
    year, month = divmod(day.month - 1 + months, 12)
    year += day.year
    return date(year, month + 1, min(day.day, calendar.monthrange(year, month + 1)[1]))


def _stamp(day: date) -> str:
    return f"{day.isoformat()}T00:00:00"


def current_row(rows: Sequence[Dict[str, Any]], day: str) -> Optional[Dict[str, Any]]:
    """The units row in effect on ``day``: latest start, then latest end, then highest id."""
    holding = [r for r in rows if r["startDate"][:10] <= day <= r["endDate"][:10]]
    if not holding:
        return None
    return max(holding, key=lambda r: (r["startDate"][:10], r["endDate"][:10], r["id"]))


class AutotaskStandin(LoopbackServer):
    LOGGED_HEADERS = ("Content-Type", "UserName", "ApiIntegrationCode", "Secret")
    MASKED_HEADERS = ("Secret",)

    def __init__(self, *, today: date, username: str = "api@example.test", secret: str = "standin-secret",
                 integration_code: str = "STANDIN-CODE", latency_ms: float = 0.0,
                 threshold: int = 10_000, used_this_hour: int = 0, page_size: int = PAGE,
                 term_months: int = 12, port: int = 0, thread_limit: Optional[int] = 3,
                 period_values: Optional[Dict[str, int]] = None,
                 status_values: Optional[Dict[str, int]] = None) -> None:
        super().__init__(port=port, latency_ms=latency_ms)
        self.today = today
        self.username = username
        self.secret = secret
        self.integration_code = integration_code
        self.threshold = threshold
        self.used_this_hour = used_this_hour
        self.page_size = page_size
        self.term_months = term_months
        self.thread_limit = thread_limit
        self.period_values = dict(period_values or PERIOD_VALUES)
        self.status_values = dict(status_values or STATUS_VALUES)
        self.tables: Dict[str, Dict[int, Dict[str, Any]]] = {name: {} for name in ENTITIES}
        # Unit rows by (units entity, contractID, service or bundle id): an adjustment looks up its rows here
        # instead of scanning every period of every line (that scan, not psabill, was the benchmark's cost).
        self._units_of: Dict[Tuple[str, int, int], List[Dict[str, Any]]] = {}
        self._months: Dict[int, int] = {}  # contract id -> months a billing period lasts
        self.adjustments: List[Dict[str, Any]] = []  # what clients posted (services and bundles)
        self.manual: List[Dict[str, Any]] = []  # changes made "in Autotask" by change()
        self.paging_fault: Optional[str] = None  # "repeat": every nextPageUrl leads back to the first page
        self._pages: Dict[str, Tuple[str, str, int]] = {}  # paging token -> (entity, body, offset)
        self._next = 1000

    # -- data ------------------------------------------------------------------

    def _new_id(self) -> int:
        self._next += 1
        return self._next

    def add_company(self, name: str, number: Optional[str] = None) -> int:
        with self._lock:
            cid = self._new_id()
            self.tables["Companies"][cid] = {"id": cid, "companyName": name, "companyNumber": number, "isActive": True}
            return cid

    def set_company_active(self, company_id: int, active: bool) -> None:
        with self._lock:
            self.tables["Companies"][company_id]["isActive"] = active

    def add_contract(self, company_id: int, name: str = "Managed Services", status: int = 1, *,
                     start: Optional[date] = None, period: str = "Monthly", end: Optional[date] = None) -> int:
        """A recurring service contract. By default it starts on the first of last month, bills monthly and runs
        ``term_months`` months; its services' units rows follow its periods."""
        with self._lock:
            cid = self._new_id()
            first = start or (month_period(self.today)[0] - timedelta(days=1)).replace(day=1)
            last = end or add_months(first, self.term_months) - timedelta(days=1)
            self.tables["Contracts"][cid] = {"id": cid, "companyID": company_id, "contractName": name,
                                             "status": status, "contractType": 7, "startDate": _stamp(first),
                                             "endDate": _stamp(last),
                                             "contractPeriodType": self.period_values.get(period, 0)}
            self._months[cid] = PERIOD_MONTHS.get(period, 1)
            return cid

    def set_contract(self, contract_id: int, **fields: Any) -> None:
        """Change a contract's fields as an admin would (``status=0``, ``endDate=...``)."""
        with self._lock:
            self.tables["Contracts"][contract_id].update(fields)

    def add_catalog_service(self, name: str, service_id: Optional[int] = None, active: bool = True) -> int:
        """A row of Services (the catalogue), found by name when [products] names a service."""
        with self._lock:
            sid = service_id if service_id is not None else self._new_id()
            self.tables["Services"][sid] = {"id": sid, "name": name, "isActive": active}
            return sid

    def add_catalog_bundle(self, name: str, bundle_id: Optional[int] = None, services: Sequence[int] = ()) -> int:
        """A service bundle of the catalogue (ServiceBundles) and the services it includes (ServiceBundleServices)."""
        with self._lock:
            bid = bundle_id if bundle_id is not None else self._new_id()
            self.tables["ServiceBundles"][bid] = {"id": bid, "name": name, "isActive": True}
            for service in services:
                rid = self._new_id()
                self.tables["ServiceBundleServices"][rid] = {"id": rid, "serviceBundleID": bid, "serviceID": service}
            return bid

    def add_bundle(self, contract_id: int, bundle_id: int, units: Optional[int] = None, *,
                   months: Optional[int] = None) -> int:
        """A service bundle on a contract (ContractServiceBundles); with ``units``, its units rows too."""
        return self._add_line(BUNDLE, contract_id, bundle_id, units, months)

    def add_service(self, contract_id: int, service_id: int, units: int, *, months: Optional[int] = None) -> int:
        """A contract service with a units row per billing period of the contract, for the whole term.

        ``months`` (default: the whole term) is how many periods from the
        contract's start have rows: past, current and every future period.
        """
        return self._add_line(SERVICE, contract_id, service_id, units, months)

    def _add_line(self, kind: _Kind, contract_id: int, ref: int, units: Optional[int], periods: Optional[int]) -> int:
        with self._lock:
            line = self._new_id()
            self.tables[kind.lines][line] = {"id": line, "contractID": contract_id, kind.ref: ref, "unitPrice": 3.0}
            if units is None:
                return line
            contract = self.tables["Contracts"][contract_id]
            start = date.fromisoformat(contract["startDate"][:10])
            step = self._months.get(contract_id, 1)
            count = periods if periods is not None else -(-self.term_months // step)
            for k in range(count):
                first = add_months(start, k * step)
                last = add_months(start, (k + 1) * step) - timedelta(days=1)
                self._add_units_row(kind, {
                    "id": self._new_id(), "contractID": contract_id, kind.key: line, kind.ref: ref,
                    "startDate": _stamp(first), "endDate": _stamp(last), "units": int(units), "price": 3.0 * units,
                    "approveAndPostDate": None})
            return line

    def _add_units_row(self, kind: _Kind, row: Dict[str, Any]) -> None:
        self.tables[kind.units][row["id"]] = row
        self._units_of.setdefault((kind.units, row["contractID"], row[kind.ref]), []).append(row)

    def post_period(self, csid: int, day: date, *, bundle: bool = False) -> None:
        """Approve and post the period holding ``day``: Autotask then refuses to change it."""
        kind = BUNDLE if bundle else SERVICE
        when = day.isoformat()
        with self._lock:
            for row in self.tables[kind.units].values():
                if row[kind.key] == csid and row["startDate"][:10] <= when <= row["endDate"][:10]:
                    row["approveAndPostDate"] = _stamp(day)

    def units(self, csid: int, day: Optional[date] = None, *, bundle: bool = False) -> int:
        """The units in effect on ``day`` (default: today)."""
        kind = BUNDLE if bundle else SERVICE
        with self._lock:
            rows = [r for r in self.tables[kind.units].values() if r[kind.key] == csid]
            row = current_row(rows, (day or self.today).isoformat())
        assert row is not None, f"no period of {csid} holds {day or self.today}"
        return int(row["units"])

    def billed(self, csid: int, first: date, last: date, *, bundle: bool = False) -> Dict[str, int]:
        """Day -> units in effect, for every day from ``first`` to ``last``: what those days bill."""
        days: Dict[str, int] = {}
        day = first
        while day <= last:
            days[day.isoformat()] = self.units(csid, day, bundle=bundle)
            day += timedelta(days=1)
        return days

    def periods(self, csid: int, *, bundle: bool = False) -> List[Dict[str, Any]]:
        kind = BUNDLE if bundle else SERVICE
        with self._lock:
            return sorted((dict(r) for r in self.tables[kind.units].values()
                           if r[kind.key] == csid), key=lambda r: (r["startDate"], r["id"]))

    def change(self, csid: int, day: date, unit_change: int, *, bundle: bool = False) -> None:
        """A change made in Autotask itself (Adjust Service Units, effective ``day``): it splits the period."""
        kind = BUNDLE if bundle else SERVICE
        with self._lock:
            line = self.tables[kind.lines][csid]
            self._apply(kind, line["contractID"], line[kind.ref], csid, day.isoformat(), unit_change)
            self.manual.append({"line": csid, "effectiveDate": _stamp(day), "unitChange": unit_change})

    def error_in_200(self, message: str, times: int = 1, *, endpoint: Optional[str] = None) -> None:
        """The next matching requests answer HTTP 200 with ``{"errors": [message]}`` and no items."""
        self.fail(200, times, body={"errors": [message]}, endpoint=endpoint)

    # -- HTTP ------------------------------------------------------------------

    def endpoint(self, method: str, path: str) -> str:
        parts = path.strip("/").split("/")
        lowered = [p.lower() for p in parts]
        if "v1.0" in lowered and lowered.index("v1.0") + 1 < len(parts):
            return parts[lowered.index("v1.0") + 1]
        return path

    def picklist_fields(self) -> Dict[str, Any]:
        """``Contracts/entityInformation/fields``: the picklists, as FieldInformationResultModel spells them."""
        def picklist(values: Dict[str, int]) -> List[Dict[str, Any]]:
            return [{"value": str(value), "label": label, "isDefaultValue": n == 0, "sortOrder": n, "parentValue": "",
                     "isActive": True, "isSystem": True} for n, (label, value) in enumerate(values.items())]

        def field(name: str, data_type: str, values: Optional[Dict[str, int]] = None) -> Dict[str, Any]:
            return {"name": name, "dataType": data_type, "length": 0, "isRequired": name != "endDate",
                    "isReadOnly": name == "contractPeriodType", "isQueryable": True, "isReference": False,
                    "referenceEntityType": "", "isPickList": values is not None,
                    "picklistValues": picklist(values) if values is not None else None, "picklistParentValueField": "",
                    "isSupportedWebhookField": False}

        return {"fields": [field("id", "long"), field("contractName", "string"), field("startDate", "datetime"),
                           field("endDate", "datetime"), field("status", "integer", self.status_values),
                           field("contractPeriodType", "integer", self.period_values),
                           field("contractType", "integer", {"Recurring Service": 7, "Time & Materials": 1})]}

    def authorize(self, headers: Dict[str, str], path: str) -> Optional[Reply]:
        if path.lower().endswith("/zoneinformation"):
            return None  # the zone lookup is anonymous
        if headers.get("username") != self.username:
            return 500, {}, {"errors": ["Invalid user name"]}
        if headers.get("apiintegrationcode") != self.integration_code:
            return 500, {}, {"errors": ["IntegrationCode is invalid."]}
        if headers.get("secret") != self.secret:
            return 401, {}, {"errors": ["Unauthorized"]}
        return None

    def route(self, method: str, path: str, query: Dict[str, str], body: Any) -> Reply:
        label = self.endpoint(method, path)
        with self._lock:
            busy = self._inflight[label]  # this request included
        if self.thread_limit is not None and busy > self.thread_limit and label.lower() != "zoneinformation":
            return 500, {}, {"errors": [THREAD_REFUSAL]}
        try:
            return self._route(method, path, query, body)
        except AutotaskError as exc:
            return 500, {}, {"errors": [str(exc)]}

    def _route(self, method: str, path: str, query: Dict[str, str], body: Any) -> Reply:
        parts = path.strip("/").split("/")
        lowered = [p.lower() for p in parts]
        if lowered[:2] != ["atservicesrest", "v1.0"] or len(parts) < 3:
            return 404, {}, {"errors": ["Not found"]}
        entity = parts[2]
        if method == "GET" and lowered[2] == "zoneinformation":
            if query.get("user") != self.username:
                # As live Autotask answers an unknown user (asachs01/py-autotask tests/test_auth.py; django-autotask
                # api.py: "AT returns 500 if username is blank or incorrect").
                return 500, {}, {"errors": ["Zone information could not be determined"]}
            return 200, {}, {"zoneName": "Standin", "url": f"{self.url}/ATServicesRest/", "webUrl": self.url, "ci": 1}
        if method == "GET" and lowered[2] == "thresholdinformation":
            return 200, {}, {"externalRequestThreshold": self.threshold, "requestThresholdTimeframe": 60,
                             "currentTimeframeRequestCount": self.used_this_hour + self.total}
        if method == "GET" and lowered[2:] == ["contracts", "entityinformation", "fields"]:
            return 200, {}, self.picklist_fields()
        if entity in ENTITIES and len(parts) == 4 and lowered[3] == "query":
            if method == "POST":
                return self._query(entity, body, 0)
            if method == "GET" and "search" in query:
                return self._query(entity, json.loads(query["search"]), 0)
        if entity in ENTITIES and len(parts) == 5 and lowered[3:] == ["query", "next"]:
            if method != "POST":
                return 405, {"Allow": "POST"}, {"errors": [
                    f"The requested resource does not support http method '{method}'."]}
            page = self._pages.get(query.get("paging", ""))
            if page is None or page[0] != entity:
                raise AutotaskError("Invalid paging parameter")
            if _canonical(body) != page[1]:
                raise AutotaskError("The next page must be requested with the body of the original query")
            return self._query(entity, body, page[2])
        if method == "POST" and entity == "ContractServiceAdjustments" and len(parts) == 3:
            return self._adjust(body, SERVICE)
        if method == "POST" and entity == "ContractServiceBundleAdjustments" and len(parts) == 3:
            return self._adjust(body, BUNDLE)
        return 404, {}, {"errors": ["Not found"]}

    def _query(self, entity: str, search: Any, offset: int) -> Reply:
        if not isinstance(search, dict):
            raise AutotaskError("expected a query object")
        lowered = {str(k).lower(): v for k, v in search.items()}
        filters = lowered.get("filter")
        if not isinstance(filters, list) or not filters:
            raise AutotaskError("a query needs at least one filter")
        known = {f.lower() for f in FIELDS[entity]}
        _check_filters(entity, filters, known)
        fields = lowered.get("includefields")
        for name in fields or ():
            if str(name).lower() not in known:
                raise AutotaskError(f"Unknown field {name!r} in IncludeFields of {entity}")
        tests = [_predicate(f) for f in filters]
        with self._lock:
            # The stand-in shares the client's two cores: a cheap exact-key pass on
            # numeric eq/in filters, and filters compiled once per query rather than
            # read per row, keep it from becoming the bottleneck of a big run.
            rows = [r for r in _narrow(self.tables[entity].values(), filters) if all(t(r) for t in tests)]
            rows.sort(key=lambda r: r["id"])
            chunk = [dict(r) for r in rows[offset: offset + self.page_size]]
        if fields:
            keep = {f.lower() for f in fields} | {"id"}
            chunk = [{k: v for k, v in r.items() if k.lower() in keep} for r in chunk]
        following = None
        if offset + self.page_size < len(rows):
            canonical = _canonical(search)
            ahead = 0 if self.paging_fault == "repeat" else offset + self.page_size  # "repeat": paging that loops
            token = f"{ahead}-{offset}-{hashlib.sha1(canonical.encode()).hexdigest()[:16]}"
            with self._lock:
                self._pages[token] = (entity, canonical, ahead)
            following = f"{self.url}/ATServicesRest/V1.0/{entity}/query/next?paging={token}"
        return 200, {}, {"items": chunk, "pageDetails": {"count": len(chunk), "requestCount": self.page_size,
                                                         "prevPageUrl": None, "nextPageUrl": following}}

    def _adjust(self, body: Any, kind: _Kind) -> Reply:
        what = "ContractServiceAdjustment" if kind is SERVICE else "ContractServiceBundleAdjustment"
        if not isinstance(body, dict):
            raise AutotaskError(f"expected a {what} object")
        given = {str(k).lower(): v for k, v in body.items()}
        unknown = sorted(k for k in body if str(k).lower() not in kind.fields)
        if unknown:
            raise AutotaskError(f"Unknown field(s) {', '.join(unknown)} on {what}")
        for key in ("contractid", kind.ref.lower(), "effectivedate", "unitchange"):
            if key not in given:
                raise AutotaskError(f"{key} is required")
        effective = given["effectivedate"]
        if not isinstance(effective, str) or not _MIDNIGHT.match(effective):
            raise AutotaskError(f"effectiveDate {effective!r} must be a date: YYYY-MM-DDT00:00:00")
        day = effective[:10]
        change = given["unitchange"]
        if isinstance(change, bool) or not isinstance(change, int):
            raise AutotaskError("unitChange must be an integer")
        with self._lock:
            self._apply(kind, given["contractid"], given[kind.ref.lower()], given.get(kind.key.lower()), day, change)
            aid = self._new_id()
            self.adjustments.append(dict(body, id=aid))
        return 200, {}, {"itemId": aid}

    def _apply(self, kind: _Kind, contract: Any, ref: Any, line: Any, day: str, change: int) -> None:
        """``change`` units from ``day`` on (the lock held): a new row from ``day``, later rows moved too."""
        rows = [r for r in self._units_of.get((kind.units, contract, ref), []) if line in (None, r[kind.key])]
        row = current_row(rows, day)
        if row is None:
            raise AutotaskError("no contract service period contains effectiveDate")
        touched = [row] + [r for r in rows if r["startDate"][:10] > day]
        if any(r.get("approveAndPostDate") for r in touched):
            raise AutotaskError("The adjustment would modify a period that has been approved and posted")
        if any(r["units"] + change < 0 for r in touched):
            raise AutotaskError("units cannot go below zero")
        first = date.fromisoformat(day)
        new = dict(row, id=self._new_id(), startDate=_stamp(first), units=row["units"] + change)
        if row["startDate"][:10] != day:
            row["endDate"] = _stamp(first - timedelta(days=1))  # split the period at the effective date
        self._add_units_row(kind, new)
        for later in touched[1:]:
            later["units"] = later["units"] + change


def _canonical(body: Any) -> str:
    return json.dumps(body, sort_keys=True, separators=(",", ":"))


def _check_filters(entity: str, filters: Sequence[Any], known: set) -> None:
    for f in filters:
        if not isinstance(f, dict):
            raise AutotaskError("a filter item must be an object")
        op = str(f.get("op", "")).lower()
        if op in ("and", "or"):
            _check_filters(entity, f.get("items") or [], known)
            continue
        field = str(f.get("field", "")).lower()
        if field not in known:
            raise AutotaskError(f"Unknown field {f.get('field')!r} on {entity}")
        if field in DATE_FIELDS and op not in ("exist", "notexist"):
            values = f.get("value") if isinstance(f.get("value"), list) else [f.get("value")]
            for value in values:
                if not isinstance(value, str) or not _DATE_TIME.match(value):
                    raise AutotaskError(f"{f.get('field')} takes a date-time (YYYY-MM-DDTHH:MM:SS), not {value!r}")


def _narrow(rows: Any, filters: Sequence[Dict[str, Any]]) -> Any:
    """Rows that can still match: a superset, found by exact keys and numeric values only."""
    for f in filters:
        op, field, wanted = str(f.get("op", "")).lower(), str(f.get("field")), f.get("value")
        if op == "eq" and isinstance(wanted, int) and not isinstance(wanted, bool):
            rows = [r for r in rows if field not in r or r[field] == wanted]
        elif op in ("lte", "gte") and isinstance(wanted, str) and _DATE.match(wanted):
            day = wanted[:10]
            if op == "lte":
                rows = [r for r in rows if not isinstance(r.get(field), str) or r[field][:10] <= day]
            else:
                rows = [r for r in rows if not isinstance(r.get(field), str) or r[field][:10] >= day]
        elif op == "in" and isinstance(wanted, list) and all(isinstance(w, int) for w in wanted):
            allowed = set(wanted)
            rows = [r for r in rows if field not in r or r[field] in allowed]
    return rows


def _value(record: Dict[str, Any], field: str) -> Any:
    """A row's value of ``field``, whatever the case of its name."""
    if field in record:
        return record[field]
    for key, value in record.items():
        if key.lower() == field.lower():
            return value
    return None  # a known field this row leaves empty (the query checked the name)


def _norm(value: Any, like: Any) -> Any:
    if isinstance(value, str):
        if isinstance(like, str) and _DATE.match(value) and _DATE.match(like):
            return value[:10]
        return value.lower()
    return value


Test = Callable[[Dict[str, Any]], bool]


def _predicate(f: Dict[str, Any]) -> Test:
    """One filter item as a test of a row, built once per query (a malformed item is refused here)."""
    op = str(f.get("op", "")).lower()
    if op in ("and", "or"):
        tests = [_predicate(i) for i in f.get("items") or []]
        return (lambda r: all(t(r) for t in tests)) if op == "and" else (lambda r: any(t(r) for t in tests))
    field = str(f.get("field"))
    if op in ("exist", "notexist"):
        wanted_present = op == "exist"
        return lambda r: (_value(r, field) not in (None, "")) == wanted_present
    wanted = f.get("value")
    if op in ("in", "notin"):
        member = _membership(field, wanted)
        return member if op == "in" else (lambda r: not member(r))
    if op not in ("eq", "noteq", "gt", "gte", "lt", "lte"):
        raise BadRequest(f"unsupported op {op!r}")

    def compare(r: Dict[str, Any]) -> bool:
        actual = _value(r, field)
        a, b = _norm(actual, wanted), _norm(wanted, actual)
        if op == "eq":
            return bool(a == b)
        if op == "noteq":
            return bool(a != b)
        if a is None or b is None:
            return False
        return bool({"gt": a > b, "gte": a >= b, "lt": a < b, "lte": a <= b}[op])

    return compare


def _membership(field: str, wanted: Any) -> Test:
    """``in``: numbers compare as they are; text case-insensitively, dates by their day."""
    if not isinstance(wanted, list):
        raise BadRequest("in needs a list")
    try:
        plain = {w for w in wanted if not isinstance(w, str)}
        words = {w.lower() for w in wanted if isinstance(w, str)}
        days = {w[:10] if _DATE.match(w) else w.lower() for w in wanted if isinstance(w, str)}
    except TypeError:  # an unhashable value in the list: compare one by one
        def scan(r: Dict[str, Any]) -> bool:
            actual = _value(r, field)
            return _norm(actual, actual) in [_norm(w, actual) for w in wanted]

        return scan

    def member(r: Dict[str, Any]) -> bool:
        actual = _value(r, field)
        if not isinstance(actual, str):
            return actual in plain
        return actual[:10] in days if _DATE.match(actual) else actual.lower() in words

    return member
