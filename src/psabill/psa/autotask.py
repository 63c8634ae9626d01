"""Datto Autotask PSA REST v1.0 client.

Autotask contracts prorate, so a seat count is written the way LastPass does
it: as a ``ContractServiceAdjustment`` dated to the start of the billing
period in effect today (UTC), which replaces the period's units instead of
adding a prorated slice. An adjustment carries a *delta* (``unitChange``), so
the write is not idempotent. To make a re-run (or a retry after an ambiguous
failure) never double-count, :meth:`AutotaskClient.set_quantity` re-reads the
period's units immediately before every attempt and posts ``target - current``;
when they already match it posts nothing.

"The period in effect today" is the ``ContractServiceUnits`` row with the
latest ``startDate`` <= today whose ``endDate`` >= today (dates compared as
``YYYY-MM-DD``). Taking the latest start makes a row that ends exactly today
(exclusive end) lose to its successor, and it picks the later half of a period
someone split by hand, so today's units are the ones that end up equal to the
target.

Limits: Autotask allows 3 concurrent requests per endpoint per integration and
10,000 requests an hour per database, shared by every integration. Requests
are therefore capped at 3 in flight per entity, every attempt is counted, and
the run stops with a PsaError before its ``request_budget`` would be exceeded;
:meth:`check` also lowers the budget to what is left of the hour's allowance.
"""

from __future__ import annotations

import threading
from datetime import date
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from psabill.errors import ConfigError
from psabill.settings import PsaSettings
from psabill.psa.base import AUTOTASK_TERMS, Agreement, Company, Line, PsaError, PsaUnreachable
from psabill.psa.http import HttpClient, batches, check_url, numeric_id, origin, rebase, whole

ZONE_LOOKUP = "https://webservices.autotask.net"
PER_ENDPOINT = 3
IN_BATCH = 500  # values per "in" filter; a page holds 500 items too
LIST_ALL_OVER = 500
DEFAULT_BUDGET = 5000  # half the shared hourly allowance: above 50% Autotask slows every integration
ACTIVE = 1  # Contracts.status
MAX_PAGES = 10_000
WRITE_ATTEMPTS = 3


def api_base(url: str) -> str:
    """A zone URL (``https://webservicesN.autotask.net/atservicesrest/``) -> ``.../v1.0``."""
    text = url.strip().rstrip("/")
    if "://" not in text:
        text = "https://" + text
    lower = text.lower()
    if lower.endswith("/v1.0"):
        return text
    if lower.endswith("/atservicesrest"):
        return text + "/v1.0"
    return text + "/ATServicesRest/v1.0"


class AutotaskClient:
    kind = "autotask"
    terms = AUTOTASK_TERMS
    bulk_lines = True
    budgeted = True

    def __init__(
        self,
        settings: PsaSettings,
        secret: str,
        *,
        zone_lookup: str = ZONE_LOOKUP,
        request_budget: int = DEFAULT_BUDGET,
        today: Optional[Callable[[], date]] = None,
        backoff: float = 0.5,
        max_wait: float = 60.0,
    ) -> None:
        missing = [k for k in ("username", "integration_code") if not getattr(settings, k)]
        if missing:
            raise ConfigError(f"[psa] kind = \"autotask\" needs {', '.join(missing)}")
        if not secret:
            raise ConfigError("[psa] the Autotask secret is empty")
        self.username = str(settings.username)
        self._zone_lookup = zone_lookup.rstrip("/")
        self._base: Optional[str] = api_base(settings.url) if settings.url else None
        if self._base:
            check_url(self._base)
        self._base_lock = threading.Lock()
        self._today = today or _utc_today
        integration_code = str(settings.integration_code)
        self.http = HttpClient(
            headers={
                "ApiIntegrationCode": integration_code,
                "UserName": self.username,
                "Secret": secret,
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
            secrets=[secret, integration_code],
            timeout=settings.timeout,
            max_retries=settings.max_retries,
            ca_file=str(settings.ca_file) if settings.ca_file else None,
            concurrency=settings.concurrency,
            per_endpoint=PER_ENDPOINT,
            max_requests=request_budget,
            backoff=backoff,
            max_wait=max_wait,
        )

    @property
    def request_count(self) -> int:
        return self.http.request_count

    @property
    def remaining_budget(self) -> int:
        limit = self.http.max_requests
        return max(0, limit - self.request_count) if limit is not None else 1 << 30

    def ensure_budget(self, planned: int) -> None:
        """Raise PsaError now if ``planned`` more requests would overrun the budget."""
        if planned > self.remaining_budget:
            raise PsaError(
                f"this run needs about {planned} more Autotask requests but only {self.remaining_budget} "
                f"remain in its budget (Autotask allows 10,000 an hour, shared by all integrations)"
            )

    # -- zone ----------------------------------------------------------------

    @property
    def base(self) -> str:
        with self._base_lock:
            if self._base is None:
                self._base = self._discover_zone()
            return self._base

    def _discover_zone(self) -> str:
        url = f"{self._zone_lookup}/ATServicesRest/v1.0/ZoneInformation"
        info = self.http.get_json(url, params={"user": self.username}, endpoint="ZoneInformation")
        zone = info.get("url") if isinstance(info, dict) else None
        if not isinstance(zone, str) or not zone:
            raise PsaError(f"Autotask zone lookup for {self.username!r} returned no zone URL")
        base = api_base(zone)
        check_url(base)
        return base

    # -- reads ---------------------------------------------------------------

    def check(self) -> str:
        """Authenticate, and shrink the budget to what is left of this hour's allowance."""
        info = self.http.get_json(self.base + "/ThresholdInformation", endpoint="ThresholdInformation")
        if isinstance(info, dict):
            threshold = info.get("externalRequestThreshold")
            used = info.get("currentTimeframeRequestCount")
            if isinstance(threshold, int) and isinstance(used, int):
                left = max(0, threshold - used) + self.request_count
                if self.http.max_requests is None or left < self.http.max_requests:
                    self.http.max_requests = left
                return (f"Autotask at {origin(self.base)} as {self.username}: "
                        f"{used}/{threshold} requests used this hour")
        return f"Autotask at {origin(self.base)} as {self.username}"

    def companies(self, identifiers: Sequence[str] = (), names: Sequence[str] = ()) -> List[Company]:
        ids = {i.lower() for i in identifiers}
        wanted_names = {n.lower() for n in names}
        fields = ["id", "companyName", "companyNumber"]
        if not ids and not wanted_names:
            return [_company(r) for r in self._query("Companies", [_all_ids()], fields)]
        rows: List[Dict[str, Any]] = []
        if len(ids) + len(wanted_names) > LIST_ALL_OVER:
            rows = list(self._query("Companies", [_all_ids()], fields))
        else:
            # An identifier is an account number, or the id of an account that has none.
            numeric: List[Any] = sorted({int(i) for i in identifiers if i.strip().isdigit()})
            for field, values in (("companyNumber", sorted(set(identifiers))), ("id", numeric),
                                  ("companyName", sorted(set(names)))):
                for batch in batches(values, IN_BATCH):
                    rows.extend(self._query("Companies", [_in(field, batch)], fields))
        found: Dict[str, Company] = {}
        for row in rows:
            company = _company(row)
            if (company.identifier.lower() in ids or company.id in ids
                    or company.name.lower() in wanted_names):
                found[company.id] = company
        return sorted(found.values(), key=lambda c: int(c.id) if c.id.isdigit() else 0)

    def agreements(self, company_ids: Sequence[str]) -> List[Agreement]:
        wanted = sorted({_numeric(i, "company id") for i in company_ids})
        result = []
        for batch in batches(wanted, IN_BATCH):
            filters = [_eq("status", ACTIVE), _in("companyID", batch)]
            for row in self._query("Contracts", filters, ["id", "companyID", "contractName", "status"]):
                if row.get("status") == ACTIVE and row.get("companyID") in batch:
                    result.append(Agreement(id=str(row["id"]), company_id=str(row["companyID"]),
                                            name=str(row.get("contractName") or "")))
        return sorted(result, key=lambda a: int(a.id))

    def lines(self, agreement: Agreement) -> List[Line]:
        return self.lines_for([agreement])[agreement.id]

    def lines_for(self, agreements: Sequence[Agreement]) -> Dict[str, List[Line]]:
        """Lines of many contracts, read in bulk with ``in`` filters (500 ids a query)."""
        ids = sorted({_numeric(a.id, "contract id") for a in agreements})
        result: Dict[str, List[Line]] = {str(cid): [] for cid in ids}
        services: List[Dict[str, Any]] = []
        current: Dict[int, Tuple[int, str]] = {}
        for batch in batches(ids, IN_BATCH):
            services.extend(self._query("ContractServices", [_in("contractID", batch)],
                                        ["id", "contractID", "serviceID"]))
            current.update(self._current_units([_in("contractID", batch)]))
        for row in services:
            period = current.get(int(row["id"]))
            if period is None or str(row.get("contractID")) not in result:
                continue  # no billing period covers today: nothing to bill against
            result[str(row["contractID"])].append(Line(id=str(row["id"]), agreement_id=str(row["contractID"]),
                                                       product=str(row.get("serviceID")), quantity=period[0]))
        return result

    def _current_units(self, filters: List[Dict[str, Any]]) -> Dict[int, Tuple[int, str]]:
        """contract service id -> (units, period start "YYYY-MM-DD") for today's period."""
        today = self._today().isoformat()
        best: Dict[int, Tuple[int, str]] = {}
        rows = self._query("ContractServiceUnits", filters + [{"op": "gte", "field": "endDate", "value": today}],
                           ["id", "contractServiceID", "startDate", "endDate", "units"])
        for row in rows:
            start = str(row.get("startDate") or "")[:10]
            end = str(row.get("endDate") or "")[:10]
            if not start or not (start <= today <= end):
                continue
            key = int(row["contractServiceID"])
            if key not in best or start > best[key][1]:
                best[key] = (whole(row.get("units")), start)
        return best

    # -- the write -----------------------------------------------------------

    def set_quantity(self, line: Line, quantity: int) -> int:
        if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 0:
            raise PsaError(f"refusing to set units {quantity!r} on contract service {line.id}: not a whole number >= 0")
        contract_id = _numeric(line.agreement_id, "contract id")
        service_id = _numeric(line.product, "service id")
        csid = _numeric(line.id, "contract service id")
        found: Optional[int] = None
        for attempt in range(WRITE_ATTEMPTS):
            period = self._current_units([_eq("contractServiceID", csid)]).get(csid)
            if period is None:
                raise PsaError(f"contract service {csid} on contract {contract_id} has no billing period covering "
                               f"{self._today().isoformat()}")
            current, start = period
            found = current if found is None else found
            if current == quantity:
                return found
            body = {"contractID": contract_id, "serviceID": service_id, "effectiveDate": start,
                    "unitChange": quantity - current}
            try:
                self.http.request("POST", self.base + "/ContractServiceAdjustments", json=body,
                                  endpoint="ContractServiceAdjustments", idempotent=False)
                return found
            except PsaUnreachable:
                # The adjustment may or may not have landed: re-read before trying again.
                if attempt == WRITE_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        self.http.close()

    # -- paging --------------------------------------------------------------

    def _query(self, entity: str, filters: List[Dict[str, Any]], fields: Sequence[str]) -> Iterator[Dict[str, Any]]:
        base = self.base
        response = self.http.request("POST", f"{base}/{entity}/query",
                                     json={"filter": filters, "IncludeFields": list(fields)}, endpoint=entity)
        seen = set()
        for _ in range(MAX_PAGES):
            body = self.http.json_of(response, f"query {entity}")
            if not isinstance(body, dict) or not isinstance(body.get("items"), list):
                raise PsaError(f"query {entity}: expected an object with items")
            for item in body["items"]:
                if isinstance(item, dict) and "id" in item:
                    yield item
            link = (body.get("pageDetails") or {}).get("nextPageUrl")
            if not link:
                return
            following = rebase(link, base)
            if following in seen:
                raise PsaError(f"query {entity}: nextPageUrl repeats itself")
            seen.add(following)
            response = self.http.request("GET", following, endpoint=entity)
        raise PsaError(f"query {entity}: more than {MAX_PAGES} pages")


def _utc_today() -> date:
    from psabill import clock

    return clock.now().date()


def _all_ids() -> Dict[str, Any]:
    # Autotask refuses a query without a filter; this one matches everything.
    return {"op": "gte", "field": "id", "value": 0}


def _eq(field: str, value: Any) -> Dict[str, Any]:
    return {"op": "eq", "field": field, "value": value}


def _in(field: str, values: Sequence[Any]) -> Dict[str, Any]:
    return {"op": "in", "field": field, "value": list(values)}


def _company(row: Mapping[str, Any]) -> Company:
    number = row.get("companyNumber")
    return Company(id=str(row["id"]), identifier=str(number) if number else str(row["id"]),
                   name=str(row.get("companyName") or ""))


def _numeric(value: Any, what: str) -> int:
    return numeric_id(value, f"Autotask {what}")
