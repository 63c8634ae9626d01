"""An Autotask REST v1.0 sandbox on loopback, for the tests and benchmarks.

It implements what :class:`psabill.psa.autotask.AutotaskClient` uses:
ZoneInformation, ThresholdInformation, ``POST /v1.0/{Entity}/query`` for
Companies, Contracts, ContractServices and ContractServiceUnits (filters eq,
noteq, in, gt/gte/lt/lte, and/or; ``IncludeFields``; pages of 500 with a GET
``nextPageUrl``), and ``POST /v1.0/ContractServiceAdjustments``, which changes
the units of the period containing its effective date and, like Autotask,
splits that period when the date is not its first day.

Test knobs (latency, faults, die_after, request log, per-endpoint counters and
the in-flight maximum) come from the sandbox's LoopbackServer; endpoints are
labelled by entity, which is how Autotask counts its 3-threads-per-endpoint rule.
"""

from __future__ import annotations

import calendar
import json
import re
from datetime import date, timedelta
from typing import Any, Dict, List, Optional, Sequence
from urllib.parse import quote

from psabill.sandbox.server import BadRequest, LoopbackServer, Reply

PAGE = 500
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")
ENTITIES = ("Companies", "Contracts", "ContractServices", "ContractServiceUnits")


def month_period(day: date) -> tuple:
    last = calendar.monthrange(day.year, day.month)[1]
    return day.replace(day=1), day.replace(day=last)


def _stamp(day: date) -> str:
    return f"{day.isoformat()}T00:00:00"


class AutotaskStandin(LoopbackServer):
    LOGGED_HEADERS = ("Content-Type", "UserName", "ApiIntegrationCode")

    def __init__(self, *, today: date, username: str = "api@example.test", secret: str = "standin-secret",
                 integration_code: str = "STANDIN-CODE", latency_ms: float = 0.0,
                 threshold: int = 10_000, used_this_hour: int = 0) -> None:
        super().__init__(latency_ms=latency_ms)
        self.today = today
        self.username = username
        self.secret = secret
        self.integration_code = integration_code
        self.threshold = threshold
        self.used_this_hour = used_this_hour
        self.tables: Dict[str, Dict[int, Dict[str, Any]]] = {name: {} for name in ENTITIES}
        self.adjustments: List[Dict[str, Any]] = []
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

    def add_service(self, contract_id: int, service_id: int, units: int, *, months: int = 3) -> int:
        """A contract service with monthly periods: last month, this month, and ``months - 2`` ahead."""
        with self._lock:
            csid = self._new_id()
            self.tables["ContractServices"][csid] = {"id": csid, "contractID": contract_id, "serviceID": service_id}
            start, _ = month_period(self.today)
            start = (start - timedelta(days=1)).replace(day=1)
            for _ in range(months):
                first, last = month_period(start)
                uid = self._new_id()
                self.tables["ContractServiceUnits"][uid] = {
                    "id": uid, "contractID": contract_id, "contractServiceID": csid, "serviceID": service_id,
                    "startDate": _stamp(first), "endDate": _stamp(last), "units": float(units)}
                start = last + timedelta(days=1)
            return csid

    def units(self, csid: int, day: Optional[date] = None) -> int:
        """The units in effect on ``day`` (default: today)."""
        when = (day or self.today).isoformat()
        with self._lock:
            rows = [r for r in self.tables["ContractServiceUnits"].values()
                    if r["contractServiceID"] == csid and r["startDate"][:10] <= when <= r["endDate"][:10]]
        rows.sort(key=lambda r: r["startDate"])
        return int(rows[-1]["units"])

    def periods(self, csid: int) -> List[Dict[str, Any]]:
        with self._lock:
            return sorted((dict(r) for r in self.tables["ContractServiceUnits"].values()
                           if r["contractServiceID"] == csid), key=lambda r: r["startDate"])

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
        if (headers.get("apiintegrationcode") != self.integration_code or headers.get("username") != self.username
                or headers.get("secret") != self.secret):
            return 401, {}, {"errors": ["Unauthorized"]}
        return None

    def route(self, method: str, path: str, query: Dict[str, str], body: Any) -> Reply:
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
                if not isinstance(body, dict):
                    raise BadRequest("expected a query object")
                return self._query(entity, body, 0)
            if method == "GET" and "search" in query:
                return self._query(entity, json.loads(query["search"]), int(query.get("paging", "0")))
        if method == "POST" and entity == "ContractServiceAdjustments" and len(parts) == 3:
            return self._adjust(body)
        return 404, {}, {"errors": ["Not found"]}

    def _query(self, entity: str, search: Dict[str, Any], offset: int) -> Reply:
        filters = search.get("filter")
        if not isinstance(filters, list) or not filters:
            raise BadRequest("a query needs at least one filter")
        with self._lock:
            # The stand-in shares the client's two cores: a cheap exact-key pass on
            # numeric eq/in filters keeps it from becoming the bottleneck of a big run.
            rows = [dict(r) for r in _narrow(self.tables[entity].values(), filters)
                    if all(_match(r, f) for f in filters)]
        rows.sort(key=lambda r: r["id"])
        chunk = rows[offset: offset + PAGE]
        fields = search.get("IncludeFields")
        if fields:
            keep = {f.lower() for f in fields} | {"id"}
            chunk = [{k: v for k, v in r.items() if k.lower() in keep} for r in chunk]
        following = None
        if offset + PAGE < len(rows):
            following = (f"{self.url}/ATServicesRest/V1.0/{entity}/query?search={quote(json.dumps(search))}"
                         f"&paging={offset + PAGE}")
        return 200, {}, {"items": chunk, "pageDetails": {"count": len(chunk), "requestCount": PAGE,
                                                         "prevPageUrl": None, "nextPageUrl": following}}

    def _adjust(self, body: Any) -> Reply:
        if not isinstance(body, dict):
            raise BadRequest("expected an object")
        for key in ("contractID", "serviceID", "effectiveDate", "unitChange"):
            if key not in body:
                raise BadRequest(f"missing {key}")
        effective = str(body["effectiveDate"])
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}(T00:00:00(Z|\.000Z)?)?", effective):
            raise BadRequest(f"effectiveDate {effective!r} is not a UTC date")
        day = effective[:10]
        change = body["unitChange"]
        if isinstance(change, bool) or not isinstance(change, int):
            raise BadRequest("unitChange must be an integer")
        with self._lock:
            rows = [r for r in self.tables["ContractServiceUnits"].values()
                    if r["contractID"] == body["contractID"] and r["serviceID"] == body["serviceID"]
                    and r["startDate"][:10] <= day <= r["endDate"][:10]]
            if not rows:
                raise BadRequest("no contract service period contains effectiveDate")
            row = max(rows, key=lambda r: r["startDate"])
            if row["units"] + change < 0:
                raise BadRequest("units cannot go below zero")
            if row["startDate"][:10] != day:
                # Autotask splits the period at the effective date; the adjustment applies to the rest.
                first = date.fromisoformat(day)
                uid = self._new_id()
                self.tables["ContractServiceUnits"][uid] = dict(row, id=uid, startDate=_stamp(first))
                row["endDate"] = _stamp(first - timedelta(days=1))
                row = self.tables["ContractServiceUnits"][uid]
            row["units"] = row["units"] + change
            aid = self._new_id()
            self.adjustments.append(dict(body, id=aid))
        return 200, {}, {"itemId": aid}


def _narrow(rows: Any, filters: Sequence[Dict[str, Any]]) -> Any:
    """Rows that can still match: a superset, found by exact keys and numeric values only."""
    for f in filters:
        op, field, wanted = str(f.get("op", "")).lower(), str(f.get("field")), f.get("value")
        if op == "eq" and isinstance(wanted, int) and not isinstance(wanted, bool):
            rows = [r for r in rows if field not in r or r[field] == wanted]
        elif op == "in" and isinstance(wanted, list) and all(isinstance(w, int) for w in wanted):
            allowed = set(wanted)
            rows = [r for r in rows if field not in r or r[field] in allowed]
    return rows


def _value(record: Dict[str, Any], field: str) -> Any:
    for key, value in record.items():
        if key.lower() == field.lower():
            return value
    raise BadRequest(f"Unknown field {field!r}")


def _norm(value: Any, like: Any) -> Any:
    if isinstance(value, str):
        if isinstance(like, str) and _DATE.match(value) and _DATE.match(like):
            return value[:10]
        return value.lower()
    return value


def _match(record: Dict[str, Any], f: Dict[str, Any]) -> bool:
    op = str(f.get("op", "")).lower()
    if op in ("and", "or"):
        items: Sequence[Dict[str, Any]] = f.get("items") or []
        results = (_match(record, i) for i in items)
        return all(results) if op == "and" else any(results)
    actual = _value(record, str(f.get("field")))
    wanted = f.get("value")
    if op == "in":
        if not isinstance(wanted, list):
            raise BadRequest("in needs a list")
        return _norm(actual, actual) in {_norm(w, actual) for w in wanted}
    a, b = _norm(actual, wanted), _norm(wanted, actual)
    if op == "eq":
        return a == b
    if op == "noteq":
        return a != b
    if a is None or b is None:
        return False
    if op in ("gt", "gte", "lt", "lte"):
        return {"gt": a > b, "gte": a >= b, "lt": a < b, "lte": a <= b}[op]
    raise BadRequest(f"unsupported op {op!r}")
