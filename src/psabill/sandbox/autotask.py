"""An Autotask REST v1.0 stand-in on loopback, for the tests, demo and benchmarks.

It behaves like live Autotask where psabill depends on it:

* ZoneInformation, ThresholdInformation; ``POST /v1.0/{Entity}/query`` for
  Companies, Contracts, ContractServices, ContractServiceUnits,
  ContractServiceBundles and Services (filters eq, noteq, in, notIn,
  gt/gte/lt/lte, exist/notExist, and/or; ``IncludeFields``). Pages hold 500
  items; ``nextPageUrl`` reads ``.../{Entity}/query/next?paging=...`` and must be
  POSTed with the same body: a GET there answers 405, another body 500.
* ContractServiceUnits holds a row per monthly billing period for the whole
  contract term, future periods included. Date fields are date-only: compared
  by their date, never time-zone converted. A filter on a date field must give
  a date-time string (``YYYY-MM-DDTHH:MM:SS``).
* ``POST /v1.0/ContractServiceAdjustments`` takes ``effectiveDate`` as
  ``YYYY-MM-DDT00:00:00`` and applies ``unitChange`` from that date on: on a
  period's first day it adds a new units row with the same dates (so two rows
  start the same day; the one with the highest id is current), inside a period
  it splits the period. Later periods change too. A change that would touch a
  period with ``approveAndPostDate`` set is refused.
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
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")
_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})?$")
_MIDNIGHT = re.compile(r"^\d{4}-\d{2}-\d{2}T00:00:00(\.0+)?$")
ENTITIES = ("Companies", "Contracts", "ContractServices", "ContractServiceUnits", "ContractServiceBundles",
            "Services")
DATE_FIELDS = {"startdate", "enddate", "approveandpostdate", "effectivedate", "createdate", "lastmodifieddate"}
FIELDS = {  # the fields the stand-in models; a filter on another one is refused like a misspelling
    "Companies": ("id", "companyName", "companyNumber", "isActive"),
    "Contracts": ("id", "companyID", "contractName", "status", "contractType", "startDate", "endDate"),
    "ContractServices": ("id", "contractID", "serviceID", "unitPrice"),
    "ContractServiceUnits": ("id", "contractID", "contractServiceID", "serviceID", "startDate", "endDate", "units",
                             "price", "approveAndPostDate"),
    "ContractServiceBundles": ("id", "contractID", "serviceBundleID", "unitPrice"),
    "Services": ("id", "name", "isActive"),
}
ADJUSTMENT_FIELDS = {"id", "contractid", "contractserviceid", "serviceid", "unitchange", "effectivedate",
                     "adjustedunitprice", "adjustedunitcost", "allowrepeatservice", "quoteitemid", "userdefinedfields"}


class AutotaskError(Exception):
    """Refused the way Autotask refuses: HTTP 500 with {"errors": [message]}."""


def month_period(day: date) -> tuple:
    last = calendar.monthrange(day.year, day.month)[1]
    return day.replace(day=1), day.replace(day=last)


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
                 term_months: int = 12, port: int = 0) -> None:
        super().__init__(port=port, latency_ms=latency_ms)
        self.today = today
        self.username = username
        self.secret = secret
        self.integration_code = integration_code
        self.threshold = threshold
        self.used_this_hour = used_this_hour
        self.page_size = page_size
        self.term_months = term_months
        self.tables: Dict[str, Dict[int, Dict[str, Any]]] = {name: {} for name in ENTITIES}
        # Unit rows by (contractID, serviceID): an adjustment looks up its rows here instead of
        # scanning every period of every service (that scan, not psabill, was the benchmark's cost).
        self._units_of: Dict[Tuple[int, int], List[Dict[str, Any]]] = {}
        self.adjustments: List[Dict[str, Any]] = []
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

    def add_contract(self, company_id: int, name: str = "Managed Services", status: int = 1) -> int:
        with self._lock:
            cid = self._new_id()
            self.tables["Contracts"][cid] = {"id": cid, "companyID": company_id, "contractName": name,
                                             "status": status, "contractType": 7}
            return cid

    def add_catalog_service(self, name: str, service_id: Optional[int] = None, active: bool = True) -> int:
        """A row of Services (the catalogue), found by name when [products] names a service."""
        with self._lock:
            sid = service_id if service_id is not None else self._new_id()
            self.tables["Services"][sid] = {"id": sid, "name": name, "isActive": active}
            return sid

    def add_bundle(self, contract_id: int, bundle_id: int) -> int:
        """A service bundle on a contract (ContractServiceBundles)."""
        with self._lock:
            rid = self._new_id()
            self.tables["ContractServiceBundles"][rid] = {"id": rid, "contractID": contract_id,
                                                          "serviceBundleID": bundle_id, "unitPrice": 0.0}
            return rid

    def add_service(self, contract_id: int, service_id: int, units: int, *, months: Optional[int] = None) -> int:
        """A contract service with a units row per monthly period for the whole term.

        The term starts the month before today and runs ``months`` (default
        ``term_months``) months: past, current and every future period.
        """
        with self._lock:
            csid = self._new_id()
            self.tables["ContractServices"][csid] = {"id": csid, "contractID": contract_id, "serviceID": service_id,
                                                     "unitPrice": 3.0}
            start, _ = month_period(self.today)
            start = (start - timedelta(days=1)).replace(day=1)
            for _ in range(self.term_months if months is None else months):
                first, last = month_period(start)
                uid = self._new_id()
                self._add_units_row({
                    "id": uid, "contractID": contract_id, "contractServiceID": csid, "serviceID": service_id,
                    "startDate": _stamp(first), "endDate": _stamp(last), "units": int(units), "price": 3.0 * units,
                    "approveAndPostDate": None})
                start = last + timedelta(days=1)
            return csid

    def _add_units_row(self, row: Dict[str, Any]) -> None:
        self.tables["ContractServiceUnits"][row["id"]] = row
        self._units_of.setdefault((row["contractID"], row["serviceID"]), []).append(row)

    def post_period(self, csid: int, day: date) -> None:
        """Approve and post the period holding ``day``: Autotask then refuses to change it."""
        when = day.isoformat()
        with self._lock:
            for row in self.tables["ContractServiceUnits"].values():
                if row["contractServiceID"] == csid and row["startDate"][:10] <= when <= row["endDate"][:10]:
                    row["approveAndPostDate"] = _stamp(day)

    def units(self, csid: int, day: Optional[date] = None) -> int:
        """The units in effect on ``day`` (default: today)."""
        with self._lock:
            rows = [r for r in self.tables["ContractServiceUnits"].values() if r["contractServiceID"] == csid]
            row = current_row(rows, (day or self.today).isoformat())
        assert row is not None, f"no period of {csid} holds {day or self.today}"
        return int(row["units"])

    def periods(self, csid: int) -> List[Dict[str, Any]]:
        with self._lock:
            return sorted((dict(r) for r in self.tables["ContractServiceUnits"].values()
                           if r["contractServiceID"] == csid), key=lambda r: (r["startDate"], r["id"]))

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
                return 404, {}, {"errors": ["Invalid user"]}
            return 200, {}, {"zoneName": "Standin", "url": f"{self.url}/ATServicesRest/", "webUrl": self.url, "ci": 1}
        if method == "GET" and lowered[2] == "thresholdinformation":
            return 200, {}, {"externalRequestThreshold": self.threshold, "requestThresholdTimeframe": 60,
                             "currentTimeframeRequestCount": self.used_this_hour + self.total}
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
            return self._adjust(body)
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
            token = f"{offset + self.page_size}-{hashlib.sha1(canonical.encode()).hexdigest()[:16]}"
            with self._lock:
                self._pages[token] = (entity, canonical, offset + self.page_size)
            following = f"{self.url}/ATServicesRest/V1.0/{entity}/query/next?paging={token}"
        return 200, {}, {"items": chunk, "pageDetails": {"count": len(chunk), "requestCount": self.page_size,
                                                         "prevPageUrl": None, "nextPageUrl": following}}

    def _adjust(self, body: Any) -> Reply:
        if not isinstance(body, dict):
            raise AutotaskError("expected a ContractServiceAdjustment object")
        given = {str(k).lower(): v for k, v in body.items()}
        unknown = sorted(k for k in body if str(k).lower() not in ADJUSTMENT_FIELDS)
        if unknown:
            raise AutotaskError(f"Unknown field(s) {', '.join(unknown)} on ContractServiceAdjustment")
        for key in ("contractid", "serviceid", "effectivedate", "unitchange"):
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
            rows = [r for r in self._units_of.get((given["contractid"], given["serviceid"]), [])
                    if given.get("contractserviceid") in (None, r["contractServiceID"])]
            row = current_row(rows, day)
            if row is None:
                raise AutotaskError("no contract service period contains effectiveDate")
            touched = [row] + [r for r in rows if r["startDate"][:10] > day]
            if any(r.get("approveAndPostDate") for r in touched):
                raise AutotaskError("The adjustment would modify a period that has been approved and posted")
            if any(r["units"] + change < 0 for r in touched):
                raise AutotaskError("units cannot go below zero")
            first = date.fromisoformat(day)
            uid = self._new_id()
            new = dict(row, id=uid, startDate=_stamp(first), units=row["units"] + change)
            if row["startDate"][:10] != day:
                row["endDate"] = _stamp(first - timedelta(days=1))  # split the period at the effective date
            self._add_units_row(new)
            for later in touched[1:]:
                later["units"] = later["units"] + change
            aid = self._new_id()
            self.adjustments.append(dict(body, id=aid))
        return 200, {}, {"itemId": aid}


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
