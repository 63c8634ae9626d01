"""Datto Autotask PSA REST v1.0 client.

Autotask contracts prorate, so a seat count is written the way LastPass does
it: as a ``ContractServiceAdjustment`` dated to the start of the billing
period that holds the *billing date*, which replaces the period's units
instead of adding a prorated slice. The billing date is a date on the
account's calendar (``[account] timezone``), not the UTC date: Autotask takes
date-only fields as given, so ``effectiveDate`` is sent as
``YYYY-MM-DDT00:00:00``. An adjustment carries a *delta* (``unitChange``), so
the write is not idempotent: the units are re-read in bulk before each batch
of writes (:meth:`AutotaskClient.read_ahead` lets that read run while the
batch before posts), ``target - current`` is posted
(:meth:`AutotaskClient.post_batch`), and afterwards the batch is re-read in
bulk to verify every service holds its target
(:meth:`AutotaskClient.verify_batch`); the engine lets that verify run while
the next batch posts. The batches cover different services, so neither read
can see the other batch's writes.

``ContractServiceUnits`` has a row per billing period for the whole term,
future periods included, so the query is bounded to the period holding the
billing date (``startDate <= date <= endDate``). After an adjustment two rows
can start the same day: the current row is the one with the latest start, then
the latest end, then the highest id. A period with ``approveAndPostDate`` set
is never changed: the adjustment is dated to the first unposted period
instead, and the write says so.

Limits: Autotask allows 3 concurrent requests per endpoint per integration and
10,000 requests an hour per database, shared by every integration. Requests
are capped at 3 in flight per entity, every attempt is counted, and
:meth:`check` lowers the budget to what is left of the hour's allowance;
:meth:`write_capacity` says how many writes of a run still fit.
"""

from __future__ import annotations

import calendar
import threading
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from psabill.errors import ConfigError
from psabill.config.settings import PsaSettings
from psabill.psa.base import (AUTOTASK_TERMS, Agreement, Company, Halted, Line, PsaAuthError, PsaError, PsaNoAnswer,
                              PsaUnreachable, Run, Written)
from psabill.net.http import HttpClient, batches, check_url, numeric_id, origin, rebase, whole

ZONE_LOOKUP = "https://webservices.autotask.net"
PER_ENDPOINT = 3
IN_BATCH = 500  # values per "in" filter
PAGE = 500  # items per page of a query
LIST_ALL_OVER = 500
DEFAULT_BUDGET = 5000  # half the shared hourly allowance: above 50% Autotask slows every integration
ACTIVE = 1  # Contracts.status
MAX_PAGES = 10_000
WRITE_ATTEMPTS = 3
READS_PER_BATCH = 4  # a write batch reads units before and after: at most 2 pages each
UNIT_FIELDS = ["id", "contractServiceID", "startDate", "endDate", "units", "approveAndPostDate"]


@dataclass(frozen=True)
class Target:
    """The units row a write aims at: the billing date's period, or the first unposted one after it."""

    units: int
    start: str  # "YYYY-MM-DD"
    posted: str = ""  # the month name of the posted period this one replaces, if any
    rows: int = 1  # units rows the billing date's period held for the service: what a re-read returns


@dataclass
class Posted:
    """A write batch whose posts have returned, for :meth:`AutotaskClient.verify_batch`."""

    results: Dict[str, Union[Written, Exception]]  # lines settled without a post
    todo: List[Tuple[Line, int, int, int, int, Target]]  # (line, target units, contract, service, csid, period)
    failures: Dict[str, Optional[Exception]]  # line id -> why its post failed, None when Autotask took it
    problem: Optional[PsaError] = None  # Autotask gone or the credentials refused: the run must stop writing


@dataclass
class ReadAhead:
    """A write batch's bulk units read, started early by :meth:`AutotaskClient.read_ahead`."""

    csids: Tuple[int, ...]
    generation: int  # the client's count of failed batches when the read started
    rows: Iterator[Dict[int, Target]]

    def take(self, csids: Tuple[int, ...], generation: int) -> Optional[Dict[int, Target]]:
        """The units read, if it is for ``csids``, nothing failed since it started, and it succeeded."""
        if csids != self.csids or generation != self.generation:
            return None
        try:
            return next(self.rows)
        except PsaError:
            return None  # read afresh: that read raises what the batch must stop on


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
    bulk_writes = True
    write_batch = IN_BATCH

    def __init__(
        self,
        settings: PsaSettings,
        secret: str,
        *,
        zone_lookup: str = ZONE_LOOKUP,
        request_budget: int = DEFAULT_BUDGET,
        billing_date: Optional[date] = None,
        zone: Optional[tzinfo] = None,
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
        self._zone = zone
        # The date on the account's calendar; without one (psabill check), the UTC date.
        self.billing_date = billing_date or _utc_today()
        self._timeframe = 60  # minutes: ThresholdInformation.requestThresholdTimeframe
        self._bundles: Dict[str, List[int]] = {}
        self._generation = 0  # write batches that raised or ended unverified: a read-ahead from before is stale
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

    def write_capacity(self, writes: int) -> Tuple[int, str]:
        """(how many of ``writes`` fit in what is left of the allowance, the message for the rest)."""
        left = self.remaining_budget
        fits = writes
        while fits > 0 and fits + READS_PER_BATCH * -(-fits // self.write_batch) > left:
            fits -= 1
        after = _now() + timedelta(minutes=self._timeframe)
        if self._zone is not None:
            after = after.astimezone(self._zone)
        return fits, f"hourly API allowance exhausted; re-run after {after:%H:%M}"

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
            timeframe = info.get("requestThresholdTimeframe")
            if isinstance(timeframe, int) and timeframe > 0:
                self._timeframe = timeframe
            if isinstance(threshold, int) and isinstance(used, int):
                left = max(0, threshold - used) + self.request_count
                if self.http.max_requests is None or left < self.http.max_requests:
                    self.http.max_requests = left
                return (f"Autotask at {origin(self.base)} as {self.username}: "
                        f"{used}/{threshold} requests used this hour")
        return f"Autotask at {origin(self.base)} as {self.username}"

    def resolve_products(self, values: Sequence[str]) -> Tuple[Dict[str, str], Dict[str, str]]:
        """[products] values -> service ids, and values -> why they cannot be used.

        A value is a service id (a TOML integer or a numeric string) or a
        service name, found in Services by exact name, once per run.
        """
        resolved: Dict[str, str] = {}
        problems: Dict[str, str] = {}
        names = sorted({v for v in values if not v.strip().isdigit()})
        for value in values:
            if value.strip().isdigit():
                resolved[value] = str(int(value.strip()))
        found: Dict[str, List[int]] = {}
        for batch in batches(names, IN_BATCH):
            for row in self._query("Services", [_in("name", batch)], ["id", "name", "isActive"]):
                found.setdefault(str(row.get("name") or ""), []).append(int(row["id"]))
        for name in names:
            ids = sorted(set(found.get(name, [])))  # exact: the API compares names ignoring case
            if len(ids) == 1:
                resolved[name] = str(ids[0])
            elif ids:
                problems[name] = (f"{len(ids)} Autotask services are named {name!r} "
                                  f"(#{', #'.join(str(i) for i in ids[:5])})")
            else:
                problems[name] = f"no Autotask service is named {name!r}"
        return resolved, problems

    def companies(self, identifiers: Sequence[str] = (), names: Sequence[str] = (), run: Run = map) -> List[Company]:
        """Companies by account number, id or name; the queries are independent and go through ``run``."""
        ids = {i.lower() for i in identifiers}
        wanted_names = {n.lower() for n in names}
        fields = ["id", "companyName", "companyNumber"]
        if not ids and not wanted_names:
            return [_company(r) for r in self._query("Companies", [_all_ids()], fields)]
        queries: List[List[Dict[str, Any]]] = []
        if len(ids) + len(wanted_names) > LIST_ALL_OVER:
            queries.append([_all_ids()])
        else:
            # An identifier is an account number, or the id of an account that has none.
            numeric: List[Any] = sorted({int(i) for i in identifiers if i.strip().isdigit()})
            for field, values in (("companyNumber", sorted(set(identifiers))), ("id", numeric),
                                  ("companyName", sorted(set(names)))):
                queries.extend([_in(field, batch)] for batch in batches(values, IN_BATCH))
        found: Dict[str, Company] = {}
        for rows in run(lambda filters: list(self._query("Companies", filters, fields)), queries):
            for row in rows:
                company = _company(row)
                if (company.identifier.lower() in ids or company.id in ids
                        or company.name.lower() in wanted_names):
                    found[company.id] = company
        return sorted(found.values(), key=lambda c: int(c.id) if c.id.isdigit() else 0)

    def agreements(self, company_ids: Sequence[str], run: Run = map) -> List[Agreement]:
        """Active contracts of the companies, 500 companies a query; the queries go through ``run``."""
        wanted = sorted({_numeric(i, "company id") for i in company_ids})
        fields = ["id", "companyID", "contractName", "status"]

        def query(batch: Sequence[int]) -> List[Dict[str, Any]]:
            rows = self._query("Contracts", [_eq("status", ACTIVE), _in("companyID", batch)], fields)
            return [row for row in rows if row.get("status") == ACTIVE and row.get("companyID") in batch]

        result = [Agreement(id=str(row["id"]), company_id=str(row["companyID"]), name=str(row.get("contractName") or ""))
                  for rows in run(query, list(batches(wanted, IN_BATCH))) for row in rows]
        return sorted(result, key=lambda a: int(a.id))

    def lines(self, agreement: Agreement) -> List[Line]:
        return self.lines_for([agreement])[agreement.id]

    def lines_for(self, agreements: Sequence[Agreement], run: Run = map) -> Dict[str, List[Line]]:
        """Lines of many contracts, read in bulk with ``in`` filters (500 ids a query).

        A line's quantity is the units of the period a write would change: the
        billing date's, or the first unposted one after it. Service bundles on
        the contracts are read too, so a product billed through one can say so.
        The queries go through ``run`` (the engine passes its thread pool's
        ``map``): they are independent, and the per-entity cap of 3 requests in
        flight holds however many run at once; only a query's pages are serial.
        """
        ids = sorted({_numeric(a.id, "contract id") for a in agreements})
        result: Dict[str, List[Line]] = {str(cid): [] for cid in ids}
        services: List[Dict[str, Any]] = []
        current: Dict[int, Target] = {}
        jobs = [(entity, batch) for batch in batches(ids, IN_BATCH)
                for entity in ("ContractServices", "ContractServiceUnits", "ContractServiceBundles")]
        for (entity, _batch), found in zip(jobs, run(self._contract_rows, jobs)):
            if entity == "ContractServices":
                services.extend(found)
            elif entity == "ContractServiceUnits":
                current.update(found)
            else:
                for row in found:
                    self._bundles.setdefault(str(row.get("contractID")), []).append(whole(row.get("serviceBundleID")))
        for row in services:
            period = current.get(int(row["id"]))
            if period is None or str(row.get("contractID")) not in result:
                continue  # no billing period covers the billing date: nothing to bill against
            result[str(row["contractID"])].append(Line(id=str(row["id"]), agreement_id=str(row["contractID"]),
                                                       product=str(row.get("serviceID")), quantity=period.units))
        return result

    def _contract_rows(self, job: Tuple[str, Sequence[int]]) -> Any:
        """One of :meth:`lines_for`'s queries: an entity's rows for a batch of contract ids."""
        entity, batch = job
        if entity == "ContractServiceUnits":
            return self._targets([_in("contractID", batch)])
        fields = {"ContractServices": ["id", "contractID", "serviceID"],
                  "ContractServiceBundles": ["id", "contractID", "serviceBundleID"]}[entity]
        return list(self._query(entity, [_in("contractID", batch)], fields))

    def missing_note(self, agreement_id: str, product: str) -> Optional[str]:
        """Why ``product`` has no line on the contract, when a service bundle explains it."""
        bundles = sorted(set(self._bundles.get(str(agreement_id), [])))
        if not bundles:
            return None
        shown = ", ".join(f"#{b}" for b in bundles[:5])
        return (f"service {product!r} is not a contract service of contract #{agreement_id}; the contract bills "
                f"through service bundle {shown}, and psabill adjusts contract services only")

    def _targets(self, filters: List[Dict[str, Any]]) -> Dict[int, Target]:
        """contract service id -> the units row a write aims at (see the module docstring)."""
        day = self.billing_date.isoformat()
        stamp = _stamp(self.billing_date)
        bounded = filters + [{"op": "lte", "field": "startDate", "value": stamp},
                             {"op": "gte", "field": "endDate", "value": stamp}]
        rows: Dict[int, List[Dict[str, Any]]] = {}
        for row in self._query("ContractServiceUnits", bounded, UNIT_FIELDS):
            rows.setdefault(int(row["contractServiceID"]), []).append(row)
        best: Dict[int, Target] = {}
        posted: Dict[int, str] = {}
        for csid, candidates in rows.items():
            row = _current(candidates, day)
            if row is None:
                continue
            if row.get("approveAndPostDate"):
                posted[csid] = calendar.month_name[int(_day(row["startDate"])[5:7])]
            else:
                best[csid] = Target(whole(row.get("units")), _day(row["startDate"]), rows=len(candidates))
        for batch in batches(sorted(posted), IN_BATCH):
            later: Dict[int, List[Dict[str, Any]]] = {}
            filters_later = [_in("contractServiceID", list(batch)), {"op": "gt", "field": "startDate", "value": stamp},
                             {"op": "notExist", "field": "approveAndPostDate"}]
            for row in self._query("ContractServiceUnits", filters_later, UNIT_FIELDS):
                later.setdefault(int(row["contractServiceID"]), []).append(row)
            for csid, candidates in later.items():
                first = min(_day(r["startDate"]) for r in candidates)
                row = _current([r for r in candidates if _day(r["startDate"]) == first], first)
                if row is not None:
                    best[csid] = Target(whole(row.get("units")), first, posted[csid], len(rows[csid]))
        return best

    # -- writes --------------------------------------------------------------

    def set_quantity(self, line: Line, quantity: int) -> Union[int, Written]:
        """One line, re-read right before each attempt (the bulk path is :meth:`post_batch`)."""
        contract_id, service_id, csid = self._ids(line, quantity)
        found: Optional[int] = None
        for attempt in range(WRITE_ATTEMPTS):
            target = self._targets([_eq("contractServiceID", csid)]).get(csid)
            if target is None:
                raise self._no_period(csid, contract_id)
            found = target.units if found is None else found
            if target.units == quantity:
                return _written(found, quantity, target)
            try:
                self._post(contract_id, service_id, csid, target, quantity - target.units)
                return _written(found, quantity, target)
            except PsaUnreachable:
                # The adjustment may or may not have landed: re-read before trying again.
                if attempt == WRITE_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def read_ahead(self, targets: Sequence[Tuple[Line, int]], run: Run = map) -> Optional[ReadAhead]:
        """Start a later batch's bulk units read now, for :meth:`post_batch` to take.

        With the engine's pool the read runs while an earlier batch posts (it
        is on ContractServiceUnits, the posts on ContractServiceAdjustments);
        with plain ``map`` it runs when taken. Either way it precedes the
        batch's own posts. :meth:`post_batch` reads afresh instead when the
        read failed, or when a batch raised, stopped or ended unverified
        before the batch took it: the fresh read then finds out whether the PSA
        is still there. (The engine's next batch may take its read while the
        batch before is still verifying; the two batches share no service.)
        """
        try:
            csids = tuple(sorted({_numeric(line.id, "contract service id") for line, _qty in targets}))
        except PsaError:
            return None  # post_batch says why
        if not csids:
            return None
        return ReadAhead(csids, self._generation, run(self._units_of, [csids]))

    def set_quantities(self, targets: Sequence[Tuple[Line, int]], run: Run = map,
                       ahead: Optional[ReadAhead] = None) -> Dict[str, Union[Written, Exception]]:
        """Write one batch: :meth:`post_batch`, then :meth:`verify_batch`. Refused credentials raise."""
        posted = self.post_batch(targets, run, ahead)
        results, problem = self.verify_batch(posted, run)
        problem = posted.problem or problem
        if isinstance(problem, PsaAuthError):
            raise problem
        return results

    def post_batch(self, targets: Sequence[Tuple[Line, int]], run: Run = map, ahead: Optional[ReadAhead] = None,
                   halt: Callable[[], bool] = lambda: False) -> "Posted":
        """Read a batch's units in bulk (or take ``ahead``), and post each service's delta.

        ``run`` maps the post over the batch (the engine passes its thread
        pool's ``map``); ``ahead``, from :meth:`read_ahead`, is the batch's
        units read already started. A failed bulk read raises: nothing of the
        batch was written. Once a post finds Autotask gone or the credentials
        refused (that error is ``Posted.problem``), or once ``halt()`` is true,
        the posts not yet sent are not sent, their lines getting
        :class:`Halted`: each post asks as it takes its concurrency slot, so
        only one that took it in the instant before the stop was known still
        goes. A post whose answer was lost (:class:`PsaNoAnswer`) stops
        nothing: it may have landed, and the verify read says.
        """
        try:
            posted = self._post_batch(targets, run, ahead, halt)
        except BaseException:
            self._generation += 1
            raise
        if posted.problem is not None:
            self._generation += 1
        return posted

    def verify_batch(self, posted: "Posted", run: Run = map,
                     ) -> Tuple[Dict[str, Union[Written, Exception]], Optional[PsaError]]:
        """Re-read a posted batch in bulk: line id -> Written or that line's exception, and the read's error.

        Every post that was sent is re-read, also when the run is stopping: a
        post whose answer was lost may have landed. When the re-read fails, a
        post Autotask answered counts as written (a re-run re-reads before any
        delta), and the read's error comes back for the engine to stop on.
        """
        results = dict(posted.results)
        sent = []
        for job in posted.todo:
            failure = posted.failures.get(job[0].id)
            if isinstance(failure, Halted):
                results[job[0].id] = failure
            else:
                sent.append(job)
        if not sent:
            return results, None
        try:
            # The posts added a units row to each unposted period: the re-read is sized for that.
            after = self._reread({job[4]: job[5].rows + (0 if job[5].posted else 1) for job in sent}, run)
        except PsaError as unverified:
            # Autotask took the posts it answered; the rest stay unknown until a re-run re-reads them.
            self._generation += 1
            for line, qty, _contract_id, _service_id, _csid, target in sent:
                exc = posted.failures.get(line.id)
                results[line.id] = exc if exc is not None else _written(target.units, qty, target)
            return results, unverified
        for line, qty, _contract_id, _service_id, csid, target in sent:
            now = after.get(csid)
            exc = posted.failures.get(line.id)
            if now is not None and now.units == qty:
                results[line.id] = _written(target.units, qty, target)  # landed, even if the answer was lost
            elif exc is not None:
                results[line.id] = exc
            else:
                results[line.id] = PsaError(
                    f"contract service {csid} holds {now.units if now else 'no'} units after the adjustment, "
                    f"not {qty}")
        return results, None

    def _units_of(self, csids: Sequence[int]) -> Dict[int, Target]:
        return self._targets([_in("contractServiceID", list(csids))])

    def _reread(self, expected: Mapping[int, int], run: Run) -> Dict[int, Target]:
        """Units of services expected to hold so many rows: in queries of one page each, run at once.

        One query for them all would page, and its pages come one after another;
        split by the rows expected, the same number of requests run side by side.
        """
        chunks: List[List[int]] = []
        size = 0
        for csid in sorted(expected):
            rows = max(1, expected[csid])
            if not chunks or size + rows > PAGE or len(chunks[-1]) == IN_BATCH:
                chunks.append([])
                size = 0
            chunks[-1].append(csid)
            size += rows
        found: Dict[int, Target] = {}
        for part in run(self._units_of, chunks):
            found.update(part)
        return found

    def _post_batch(self, targets: Sequence[Tuple[Line, int]], run: Run, ahead: Optional[ReadAhead],
                    halt: Callable[[], bool]) -> "Posted":
        if halt():  # stopped before this batch began: not even its units are read
            return Posted({line.id: Halted("not written: the run stopped before this batch") for line, _ in targets},
                          [], {})
        checked = [(line, qty) + self._ids(line, qty) for line, qty in targets]
        csids = sorted({c[4] for c in checked})
        before = ahead.take(tuple(csids), self._generation) if ahead is not None else None
        if before is None:
            before = self._units_of(csids)
        results: Dict[str, Union[Written, Exception]] = {}
        todo = []
        for line, qty, contract_id, service_id, csid in checked:
            target = before.get(csid)
            if target is None:
                results[line.id] = self._no_period(csid, contract_id)
            elif target.units == qty:
                results[line.id] = _written(target.units, qty, target)
            else:
                todo.append((line, qty, contract_id, service_id, csid, target))

        problems: List[PsaError] = []

        def go() -> bool:
            return not problems and not halt()

        def post(job: Tuple[Any, ...]) -> Optional[Exception]:
            line, qty, contract_id, service_id, csid, target = job
            try:
                self._post(contract_id, service_id, csid, target, qty - target.units, go)
            except Halted:
                return Halted(f"not written: the run stopped before contract service {csid} was adjusted")
            except PsaNoAnswer as exc:
                return exc  # it may have landed: the verify read says
            except (PsaUnreachable, PsaAuthError) as exc:
                problems.append(exc)  # the first such error stops the batch's posts not yet sent
                return exc
            except PsaError as exc:
                return exc
            return None

        failures = dict(zip((job[0].id for job in todo), run(post, todo)))
        return Posted(results, todo, failures, problems[0] if problems else None)

    def _ids(self, line: Line, quantity: int) -> Tuple[int, int, int]:
        if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 0:
            raise PsaError(f"refusing to set units {quantity!r} on contract service {line.id}: not a whole number >= 0")
        return (_numeric(line.agreement_id, "contract id"), _numeric(line.product, "service id"),
                _numeric(line.id, "contract service id"))

    def _no_period(self, csid: int, contract_id: int) -> PsaError:
        return PsaError(f"contract service {csid} on contract {contract_id} has no unposted billing period "
                        f"from {self.billing_date.isoformat()}")

    def _post(self, contract_id: int, service_id: int, csid: int, target: Target, change: int,
              go: Optional[Callable[[], bool]] = None) -> None:
        body = {"contractID": contract_id, "contractServiceID": csid, "serviceID": service_id,
                "effectiveDate": f"{target.start}T00:00:00", "unitChange": change}
        response = self.http.request("POST", self.base + "/ContractServiceAdjustments", json=body,
                                     endpoint="ContractServiceAdjustments", idempotent=False, go=go)
        answer = self.http.json_of(response, "POST ContractServiceAdjustments")
        errors = answer.get("errors") if isinstance(answer, dict) else None
        if errors:
            raise PsaError(self.http.scrub(f"Autotask refused the adjustment: {'; '.join(map(str, errors))}"))

    def close(self) -> None:
        self.http.close()

    # -- paging --------------------------------------------------------------

    def _query(self, entity: str, filters: List[Dict[str, Any]], fields: Sequence[str]) -> Iterator[Dict[str, Any]]:
        """Every item of a query. A next page is POSTed to nextPageUrl (on our origin) with the same body."""
        base = self.base
        query = {"filter": filters, "IncludeFields": list(fields)}
        response = self.http.request("POST", f"{base}/{entity}/query", json=query, endpoint=entity)
        seen = set()
        for _ in range(MAX_PAGES):
            body = self.http.json_of(response, f"query {entity}")
            if isinstance(body, dict) and body.get("errors"):
                raise PsaError(self.http.scrub(f"query {entity}: Autotask answered with errors: "
                                               f"{'; '.join(map(str, body['errors']))}"))
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
            response = self.http.request("POST", following, json=query, endpoint=entity)
        raise PsaError(f"query {entity}: more than {MAX_PAGES} pages")


def _now() -> datetime:
    from psabill import clock

    return clock.now()


def _utc_today() -> date:
    return _now().date()


def _stamp(day: date) -> str:
    return f"{day.isoformat()}T00:00:00"


def _day(value: Any) -> str:
    return str(value or "")[:10]


def _current(rows: Sequence[Mapping[str, Any]], day: str) -> Optional[Mapping[str, Any]]:
    """The row in effect on ``day``: latest start, then latest end, then highest id."""
    holding = [r for r in rows if _day(r.get("startDate")) and _day(r.get("startDate")) <= day <= _day(r.get("endDate"))]
    if not holding:
        return None
    return max(holding, key=lambda r: (_day(r.get("startDate")), _day(r.get("endDate")), whole(r.get("id"))))


def _written(before: int, quantity: int, target: Target) -> Union[int, Written]:
    if target.posted:
        return Written(before, f"{target.posted} is posted; {quantity} seats take effect {target.start}")
    return before


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
