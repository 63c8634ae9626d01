"""Datto Autotask PSA REST v1.0 client.

Autotask contracts prorate, so a seat count is written the way LastPass does
it: as a ``ContractServiceAdjustment`` dated to the start of the billing
period that holds the *billing date*, which replaces the period's units
instead of adding a prorated slice. The billing date is a date on the
account's calendar (``[account] timezone``), not the UTC date: Autotask takes
date-only fields as given, so ``effectiveDate`` is sent as
``YYYY-MM-DDT00:00:00``.

An adjustment carries a *delta* (``unitChange``), so the write is not
idempotent. :meth:`AutotaskClient.write` therefore works in batches of
:data:`IN_BATCH` services, and the batches overlap one stage apart:

1. the batch's units are re-read in bulk (started one batch early, while the
   batch before posts); a service that no longer holds what the plan saw fails
   with "changed in Autotask since the plan", and is not posted;
2. the run is told (``sending``), and records its intent;
3. ``target - current`` is posted per service;
4. the batch is re-read to verify, while the next batch posts. A service off
   its target after our own post is corrected when our posts explain it (a
   post that landed twice), and otherwise held for approval: another writer
   changed it during the run.

``ContractServiceUnits`` has a row per billing period for the whole term,
future periods included, so the query is bounded to the period holding the
billing date (``startDate <= date <= endDate``). After an adjustment a row can
be cut short at the adjustment's date; the current row is the one with the
latest start, then the latest end, then the highest id. A period with
``approveAndPostDate`` set is never changed: the adjustment is dated to the
first unposted period instead, and the write says so. Units Autotask answers
as null (or not a whole number) are unknown: that service fails, and nothing
is written to it.

Limits. Autotask allows 3 concurrent requests per endpoint per integration
(ThresholdInformation counts too) and 10,000 requests an hour per database,
shared by every integration. This client keeps at most :data:`PER_ENDPOINT`
in flight per entity, headroom below 3, because Autotask counts a thread a
little longer than the client holds its slot (n8n-nodes-autotask, PR 107); it
retries the thread-limit refusal ("Thread Threshold Exceeded", code
``Itgenatr005``), which may come with any status, with backoff; and it reads
ThresholdInformation first and again between write batches, so the whole
database (every integration together) never passes ``[psa] budget_share`` of
its hourly allowance. Writes that no longer fit end "not written" for a later
firing within catch-up, which continues where this run stopped.
"""

from __future__ import annotations

import calendar
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import date, datetime, timedelta, tzinfo
from typing import Any, Callable, Dict, Iterator, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from psabill.config.schema import PsaSettings
from psabill.config.secrets import resolve
from psabill.errors import ConfigError
from psabill.net.errors import AuthRefused, Halted, NoAnswer, RemoteError, Unreachable
from psabill.net.http import HttpClient, check_url, origin, rebase
from psabill.psa.base import (FAILED, HELD, UNCHANGED, UNKNOWN, UPDATED, Agreement, Company, Line, Lines, PsaClient, Sending,
                              Stop, Target, Terms, Written, changed_since_plan, not_written, numeric_id)

ZONE_LOOKUP = "https://webservices.autotask.net"
PER_ENDPOINT = 2  # Autotask's limit is 3 per endpoint; a client at 3 can still reach a 4th (see the docstring)
# Autotask refuses a query with more than 500 OR conditions, and an `in` list counts as that many
# ("Queries are limited to 500 or fewer 'OR' conditions").
IN_BATCH = 500
PAGE = 500  # items per page of a query (Autotask's maximum)
LIST_ALL_OVER = 500
ALLOWANCE = 10_000  # requests an hour per database, when ThresholdInformation does not say
ACTIVE = 1  # Contracts.status
# A query this long (500,000 rows) is no book: a nextPageUrl that never ends stops here.
MAX_PAGES = 1000
READS_PER_BATCH = 5  # a write batch's units read before and after (at most 2 pages each) and a threshold check
UNIT_FIELDS = ["id", "contractServiceID", "startDate", "endDate", "units", "approveAndPostDate"]
TERMS = Terms("Autotask", "contract", "contract service")
_VERIFY_WORKERS = 3


def is_thread_limit(refusal: str) -> bool:
    """Autotask's thread-limit refusal, by its code or its wording (n8n-nodes-autotask PR 107)."""
    text = refusal.lower()
    return "itgenatr005" in text or "thread threshold" in text


class Period(NamedTuple):
    """The units row a write aims at: the billing date's period, or the first unposted one after it."""

    units: Optional[int]  # None: Autotask answered null or not a whole number
    start: str  # "YYYY-MM-DD"
    posted: str = ""  # the month name of the posted period this one replaces, if any
    rows: int = 1  # units rows the billing date's period held for the service: what a re-read returns


class _Job(NamedTuple):
    target: Target
    contract: int
    service: int
    csid: int
    period: Period


class _Posted(NamedTuple):
    """A write batch whose posts have returned."""

    results: List[Written]  # targets settled without a post
    jobs: List[_Job]
    failures: Dict[int, Optional[Exception]]  # target key -> why its post failed; None: Autotask took it
    problem: Optional[RemoteError]  # Autotask gone or the credentials refused: stop writing


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


class AutotaskClient(PsaClient):
    kind = "autotask"
    terms = TERMS

    def __init__(
        self,
        settings: PsaSettings,
        *,
        billing_date: Optional[date] = None,
        zone: Optional[tzinfo] = None,
        zone_lookup: str = ZONE_LOOKUP,
        backoff: float = 0.5,
        max_wait: float = 60.0,
    ) -> None:
        missing = [k for k in ("username", "integration_code") if not getattr(settings, k)]
        if missing:
            raise ConfigError(f"[psa] kind = \"autotask\" needs {', '.join(missing)}")
        self.username = str(settings.username)
        self._zone_lookup = zone_lookup.rstrip("/")
        self._base: Optional[str] = api_base(settings.url) if settings.url else None
        if self._base:
            check_url(self._base)
        secret = resolve(settings.secret)
        self._base_lock = threading.Lock()
        self._zone = zone
        self._share = settings.budget_share
        # The date on the account's calendar; without one (psabill check), the UTC date.
        self.billing_date = billing_date or _utc_today()
        self._timeframe = 60  # minutes: ThresholdInformation.requestThresholdTimeframe
        self._threshold_read = False
        self._threshold_lock = threading.Lock()
        self._bundles: Dict[str, List[int]] = {}
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
            ca_label="[psa] ca_file",
            concurrency=settings.concurrency,
            per_endpoint=PER_ENDPOINT,
            max_requests=int(ALLOWANCE * self._share),
            backoff=backoff,
            max_wait=max_wait,
            transient_refusal=is_thread_limit,
        )
        self._pool = ThreadPoolExecutor(max_workers=max(1, settings.concurrency), thread_name_prefix="psabill-at")

    @property
    def request_count(self) -> int:
        return self.http.request_count

    @property
    def remaining_budget(self) -> int:
        limit = self.http.max_requests
        return max(0, limit - self.request_count) if limit is not None else 1 << 30

    # -- zone and allowance ------------------------------------------------------

    @property
    def base(self) -> str:
        with self._base_lock:
            if self._base is None:
                self._base = self._discover_zone()
            return self._base

    def _discover_zone(self) -> str:
        url = f"{self._zone_lookup}/ATServicesRest/v1.0/ZoneInformation"
        fix = ("set [psa] url to your zone's API base (Autotask shows it under Admin > Extensions & Integrations; "
               "e.g. https://webservices5.autotask.net/ATServicesRest/)")
        try:
            info = self.http.get_json(url, params={"user": self.username}, endpoint="ZoneInformation")
        except AuthRefused:
            raise
        except RemoteError as exc:
            raise type(exc)(f"Autotask zone lookup for {self.username!r} failed ({exc}): {fix}",
                            status=exc.status) from None
        zone = info.get("url") if isinstance(info, dict) else None
        if not isinstance(zone, str) or not zone:
            raise RemoteError(f"Autotask zone lookup for {self.username!r} returned no zone URL: {fix}")
        base = api_base(zone)
        check_url(base)
        return base

    def _allowance(self) -> Tuple[Optional[int], Optional[int]]:
        """Read ThresholdInformation: set this run's budget to what keeps the database within its share."""
        info = self.http.get_json(self.base + "/ThresholdInformation", endpoint="ThresholdInformation")
        if not isinstance(info, dict):
            return None, None
        threshold = info.get("externalRequestThreshold")
        used = info.get("currentTimeframeRequestCount")
        timeframe = info.get("requestThresholdTimeframe")
        if isinstance(timeframe, int) and timeframe > 0:
            self._timeframe = timeframe
        if isinstance(threshold, int) and isinstance(used, int) and threshold > 0:
            # `used` counts every integration's requests this hour, ours included.
            self.http.max_requests = self.request_count + max(0, int(threshold * self._share) - used)
            return used, threshold
        return None, None

    def _ensure_allowance(self) -> None:
        with self._threshold_lock:
            if not self._threshold_read:
                self._threshold_read = True
                self._allowance()

    def _allowance_message(self) -> str:
        after = _now() + timedelta(minutes=self._timeframe)
        if self._zone is not None:
            after = after.astimezone(self._zone)
        return (f"Autotask's hourly allowance for this run ([psa] budget_share = {self._share:g} of the database's, "
                f"all integrations together) is used up; a firing after {after:%H:%M} continues")

    # -- reads -------------------------------------------------------------------

    def check(self) -> str:
        used, threshold = self._allowance()
        self._threshold_read = True
        where = f"Autotask at {origin(self.base)} as {self.username}"
        return f"{where}: {used}/{threshold} requests used this hour" if used is not None else where

    def companies(self, wanted: Sequence[str]) -> List[Company]:
        """Companies by account number, id or name; an inactive company (``isActive`` false) never matches."""
        self._ensure_allowance()  # first: what it says is left must cover every request of this run
        keys = {w.casefold() for w in wanted}
        fields = ["id", "companyName", "companyNumber", "isActive"]
        if not keys:
            return []
        live = {"op": "eq", "field": "isActive", "value": True}
        queries: List[List[Dict[str, Any]]] = []
        values = sorted(set(wanted))
        if len(values) > LIST_ALL_OVER:
            queries.append([live])
        else:
            # An identifier is an account number, or the id of an account that has none.
            numeric: List[Any] = sorted({int(v) for v in values if v.strip().isdigit() and v.strip().isascii()})
            for field, group in (("companyNumber", values), ("id", numeric), ("companyName", values)):
                queries.extend([_in(field, batch), live] for batch in _batches(group, IN_BATCH))
        found: Dict[str, Company] = {}
        for rows in self._pool.map(lambda filters: list(self._query("Companies", filters, fields)), queries):
            for row in rows:
                if row.get("isActive") is False:
                    continue
                company = _company(row)
                if (company.identifier.casefold() in keys or company.id in keys
                        or company.name.strip().casefold() in keys):
                    found[company.id] = company
        return sorted(found.values(), key=lambda c: int(c.id) if c.id.isdigit() else 0)

    def agreements(self, company_ids: Sequence[str]) -> List[Agreement]:
        """Active contracts of the companies, 500 companies a query, the queries side by side."""
        wanted = sorted({_numeric(i, "company id") for i in company_ids})
        fields = ["id", "companyID", "contractName", "status"]

        def query(batch: Sequence[int]) -> List[Dict[str, Any]]:
            rows = self._query("Contracts", [_eq("status", ACTIVE), _in("companyID", batch)], fields)
            return [row for row in rows if row.get("status") == ACTIVE and row.get("companyID") in batch]

        result = [Agreement(id=str(_numeric(row["id"], "contract id")), company_id=str(row["companyID"]),
                            name=str(row.get("contractName") or ""))
                  for rows in self._pool.map(query, list(_batches(wanted, IN_BATCH))) for row in rows]
        return sorted(result, key=lambda a: int(a.id))

    def lines(self, agreements: Sequence[Agreement], products: Sequence[str]) -> Lines:
        """Contract services of many contracts, read in bulk with ``in`` filters, the queries side by side.

        ``products`` are service ids (a TOML integer or a numeric string) or
        exact service names, found in Services once per run. A line's quantity
        is the units of the period a write would change: the billing date's,
        or the first unposted one after it. Service bundles on the contracts
        are read too, so a product billed through one can say so.
        """
        resolved, problems = self._resolve_products(products)
        by_service: Dict[str, str] = {}
        for value, service in resolved.items():
            by_service.setdefault(service, value)
        ids = sorted({_numeric(a.id, "contract id") for a in agreements})
        result: Dict[str, List[Line]] = {str(cid): [] for cid in ids}
        services: List[Dict[str, Any]] = []
        current: Dict[int, Period] = {}
        jobs = [(entity, batch) for batch in _batches(ids, IN_BATCH)
                for entity in ("ContractServices", "ContractServiceUnits", "ContractServiceBundles")]
        for (entity, _batch), found in zip(jobs, self._pool.map(self._contract_rows, jobs)):
            if entity == "ContractServices":
                services.extend(found)
            elif entity == "ContractServiceUnits":
                current.update(found)
            else:
                for row in found:
                    self._bundles.setdefault(str(row.get("contractID")), []).append(
                        _numeric(row.get("serviceBundleID"), "service bundle id"))
        for row in services:
            period = current.get(int(row["id"]))
            product = by_service.get(str(row.get("serviceID")))
            if period is None or product is None or str(row.get("contractID")) not in result:
                continue  # no billing period covers the billing date, or not a service we bill
            problem = "" if period.units is not None else (
                "Autotask answered its units as null or not a whole number, so how many it bills is unknown; "
                "nothing is written to it")
            result[str(row["contractID"])].append(Line(
                id=str(row["id"]), agreement_id=str(row["contractID"]), product=product, quantity=period.units,
                note=_dated(period), problem=problem, product_id=str(row.get("serviceID"))))
        explain = {}
        for agreement in agreements:
            bundles = sorted(set(self._bundles.get(agreement.id, [])))
            if bundles:
                shown = ", ".join(f"#{b}" for b in bundles[:5])
                for product in products:
                    explain[(agreement.id, product)] = (
                        f"service {product!r} is not a contract service of contract #{agreement.id}; the contract "
                        f"bills through service bundle {shown}, and psabill adjusts contract services only")
        return Lines(result, problems, explain)

    def _resolve_products(self, values: Sequence[str]) -> Tuple[Dict[str, str], Dict[str, str]]:
        """[products] values -> service ids, and values -> why they cannot be used."""
        resolved: Dict[str, str] = {}
        problems: Dict[str, str] = {}
        names = sorted({v for v in values if not v.strip().isdigit()})
        for value in values:
            if value.strip().isdigit():
                resolved[value] = str(int(value.strip()))
        found: Dict[str, List[int]] = {}
        for batch in _batches(names, IN_BATCH):
            for row in self._query("Services", [_in("name", list(batch))], ["id", "name", "isActive"]):
                found.setdefault(str(row.get("name") or ""), []).append(_numeric(row["id"], "service id"))
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

    def _contract_rows(self, job: Tuple[str, Sequence[int]]) -> Any:
        """One of :meth:`lines`' queries: an entity's rows for a batch of contract ids."""
        entity, batch = job
        if entity == "ContractServiceUnits":
            return self._periods([_in("contractID", list(batch))])
        fields = {"ContractServices": ["id", "contractID", "serviceID"],
                  "ContractServiceBundles": ["id", "contractID", "serviceBundleID"]}[entity]
        return list(self._query(entity, [_in("contractID", list(batch))], fields))

    def _periods(self, filters: List[Dict[str, Any]]) -> Dict[int, Period]:
        """contract service id -> the units row a write aims at (see the module docstring)."""
        day = self.billing_date.isoformat()
        stamp = _stamp(self.billing_date)
        bounded = filters + [{"op": "lte", "field": "startDate", "value": stamp},
                             {"op": "gte", "field": "endDate", "value": stamp}]
        rows: Dict[int, List[Dict[str, Any]]] = {}
        for row in self._query("ContractServiceUnits", bounded, UNIT_FIELDS):
            rows.setdefault(_numeric(row["contractServiceID"], "contract service id"), []).append(row)
        best: Dict[int, Period] = {}
        posted: Dict[int, str] = {}
        for csid, candidates in rows.items():
            row = _current(candidates, day)
            if row is None:
                continue
            if row.get("approveAndPostDate"):
                posted[csid] = calendar.month_name[int(_day(row["startDate"])[5:7])]
            else:
                best[csid] = Period(_units(row.get("units")), _day(row["startDate"]), rows=len(candidates))
        for batch in _batches(sorted(posted), IN_BATCH):
            later: Dict[int, List[Dict[str, Any]]] = {}
            filters_later = [_in("contractServiceID", list(batch)), {"op": "gt", "field": "startDate", "value": stamp},
                             {"op": "notExist", "field": "approveAndPostDate"}]
            for row in self._query("ContractServiceUnits", filters_later, UNIT_FIELDS):
                later.setdefault(_numeric(row["contractServiceID"], "contract service id"), []).append(row)
            for csid, candidates in later.items():
                first = min(_day(r["startDate"]) for r in candidates)
                row = _current([r for r in candidates if _day(r["startDate"]) == first], first)
                if row is not None:
                    best[csid] = Period(_units(row.get("units")), first, posted[csid], len(rows[csid]))
        return best

    # -- writes --------------------------------------------------------------

    def write(self, targets: Sequence[Target], *, halt: Callable[[], bool], sending: Sending) -> Iterator[Written]:
        """The batches of the module docstring, one stage apart; each batch's results as it is verified."""
        self._ensure_allowance()
        fits = self._capacity(len(targets))
        message = self._allowance_message()
        for target in targets[fits:]:
            yield not_written(target, message)
        targets = list(targets[:fits])
        batches = [targets[start: start + IN_BATCH] for start in range(0, len(targets), IN_BATCH)]
        if not batches:
            return
        stop = threading.Event()
        generation = [0]  # batches that raised or ended unverified: a read-ahead from before them is stale
        aheads: Dict[int, Tuple[int, "Future[Dict[int, Period]]"]] = {}

        def read_ahead(index: int) -> None:
            csids = [_numeric(t.line.id, "contract service id") for t in batches[index]]
            aheads[index] = (generation[0], self._pool.submit(self._units_of, csids))

        def units_for(index: int) -> Dict[int, Period]:
            started, future = aheads.pop(index, (None, None))
            if future is not None and started == generation[0]:
                try:
                    return future.result()
                except RemoteError:
                    pass  # read afresh: that read raises what the batch must stop on
            csids = [_numeric(t.line.id, "contract service id") for t in batches[index]]
            return self._units_of(csids)

        def post(index: int) -> _Posted:
            try:
                return self._post_batch(batches[index], units_for(index), halt, stop)
            except BaseException:
                generation[0] += 1
                raise

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="psabill-at-post") as poster, \
                ThreadPoolExecutor(max_workers=_VERIFY_WORKERS, thread_name_prefix="psabill-at-verify") as checker:
            for index in range(min(2, len(batches))):
                read_ahead(index)
            posting: Optional["Future[_Posted]"] = self._start(poster, post, 0, batches[0], sending, halt, stop)
            last = len(batches)  # lowered when the allowance runs out between batches
            try:
                for index, batch in enumerate(batches):
                    if index >= last:
                        break
                    if posting is None:  # stopped before this batch
                        for target in batch:
                            yield not_written(target, "Autotask became unreachable, refused the credentials, or the "
                                                      "run stopped before this batch")
                        continue
                    posted: Optional[_Posted] = None
                    results: List[Written] = []
                    try:
                        posted = posting.result()
                    except (Unreachable, AuthRefused) as exc:
                        stop.set()
                        results = [not_written(t, f"Autotask is unreachable or refused the credentials: {exc}")
                                   for t in batch]
                    except Stop as exc:
                        stop.set()
                        results = [not_written(t, str(exc) or "the run stopped") for t in batch]
                    except RemoteError as exc:
                        results = [Written(t.key, FAILED, None, f"update failed: {exc}", transient=exc.transient)
                                   for t in batch]
                    else:
                        if posted.problem is not None:
                            stop.set()
                    posting = None
                    if index + 1 < len(batches) and not stop.is_set() and not halt():
                        if index + 2 < len(batches):
                            read_ahead(index + 2)
                        if self._capacity(sum(len(b) for b in batches[index + 1:]), recheck=True) == 0:
                            stop.set()
                            for later in batches[index + 1:]:
                                for target in later:
                                    results.append(not_written(target, self._allowance_message()))
                            last = index + 1
                        else:
                            posting = self._start(poster, post, index + 1, batches[index + 1], sending, halt, stop)
                    if posted is not None:
                        verified, problem = self._verify(posted, checker.map)
                        results.extend(verified)
                        if problem is not None:
                            generation[0] += 1
                            if isinstance(problem, (Unreachable, AuthRefused)):
                                stop.set()
                    yield from results
            finally:
                stop.set()  # on Ctrl-C or SIGTERM too: posts not yet sent are never sent

    def _start(self, poster: ThreadPoolExecutor, post: Callable[[int], _Posted], index: int, batch: Sequence[Target],
               sending: Sending, halt: Callable[[], bool], stop: threading.Event) -> Optional["Future[_Posted]"]:
        """Tell the run (its intent is recorded before anything is sent), then post the batch."""
        if stop.is_set() or halt():
            return None
        try:
            sending(batch)
        except Stop as exc:
            stop.set()
            future: "Future[_Posted]" = Future()
            future.set_exception(exc)
            return future
        return poster.submit(post, index)

    def _capacity(self, writes: int, *, recheck: bool = False) -> int:
        """How many of ``writes`` fit in what is left of the allowance (re-read between batches)."""
        if recheck and writes:
            try:
                self._allowance()
            except RemoteError:
                pass  # the hard budget still stops the run before it overruns
        left = self.remaining_budget
        fits = writes
        while fits > 0 and fits + READS_PER_BATCH * -(-fits // IN_BATCH) > left:
            fits -= 1
        return fits

    def _units_of(self, csids: Sequence[int]) -> Dict[int, Period]:
        return self._periods([_in("contractServiceID", list(csids))])

    def _post_batch(self, batch: Sequence[Target], before: Mapping[int, Period], halt: Callable[[], bool],
                    stop: threading.Event) -> _Posted:
        results: List[Written] = []
        jobs: List[_Job] = []
        for target in batch:
            contract, service, csid = self._ids(target)
            period = before.get(csid)
            if period is None:
                results.append(Written(target.key, FAILED, None, self._no_period(csid, contract)))
            elif period.units is None:
                results.append(Written(target.key, FAILED, None, "Autotask answered the units as null or not a "
                                       "whole number; nothing was written"))
            elif period.units != target.old:
                results.append(changed_since_plan(target, period.units, TERMS))
            elif period.units == target.new:
                results.append(Written(target.key, UNCHANGED, period.units, _dated(period)))
            else:
                jobs.append(_Job(target, contract, service, csid, period))

        problems: List[RemoteError] = []

        def go() -> bool:
            return not problems and not halt() and not stop.is_set()

        def one(job: _Job) -> Optional[Exception]:
            assert job.period.units is not None
            try:
                self._post(job, job.target.new - job.period.units, go)
            except Halted:
                return Halted(f"not written: the run stopped before contract service {job.csid} was adjusted")
            except NoAnswer as exc:
                return exc  # it may have landed: the verify read says
            except (Unreachable, AuthRefused) as exc:
                problems.append(exc)  # the first such error stops the batch's posts not yet sent
                return exc
            except RemoteError as exc:
                return exc
            return None

        failures = dict(zip((job.target.key for job in jobs), self._pool.map(one, jobs)))
        return _Posted(results, jobs, failures, problems[0] if problems else None)

    def _verify(self, posted: _Posted, run: Callable[..., Any]) -> Tuple[List[Written], Optional[RemoteError]]:
        """Re-read a posted batch: each target's outcome, and the re-read's error if any."""
        results = list(posted.results)
        sent = []
        for job in posted.jobs:
            failure = posted.failures.get(job.target.key)
            if isinstance(failure, Halted):
                results.append(not_written(job.target, "the run stopped before it was sent"))
            else:
                sent.append(job)
        if not sent:
            return results, None
        try:
            # The posts added a units row to each unposted period: the re-read is sized for that.
            after = self._reread({job.csid: job.period.rows + (0 if job.period.posted else 1) for job in sent}, run)
        except RemoteError as unverified:
            for job in sent:
                failure = posted.failures.get(job.target.key)
                # A post whose answer was lost (NoAnswer) may have landed too: unknown, never assumed failed.
                results.append(Written(job.target.key, UNKNOWN, job.period.units,
                                       f"posted, but the re-read failed ({unverified}): re-checked at the next run",
                                       transient=True) if failure is None or isinstance(failure, NoAnswer)
                               else self._failed(job, failure))
            return results, unverified
        for job in sent:
            now = after.get(job.csid)
            failure = posted.failures.get(job.target.key)
            units = now.units if now is not None else None
            if units == job.target.new:
                results.append(Written(job.target.key, UPDATED, job.period.units, _dated(job.period)))
            elif units == job.period.units and failure is not None:
                results.append(self._failed(job, failure))  # the post did not land
            else:
                results.append(self._off_target(job, units))
        return results, None

    def _off_target(self, job: _Job, units: Optional[int]) -> Written:
        """A service that holds neither its old units nor its target after our post."""
        before = job.period.units
        assert before is not None
        delta = job.target.new - before
        if units is not None and delta and (units - before) % delta == 0 and (units - before) // delta >= 2:
            # Our own post landed more than once (a retry after a lost answer): take the extra back.
            try:
                self._post(job, job.target.new - units, None)
                fixed = self._units_of([job.csid]).get(job.csid)
            except RemoteError as exc:
                return Written(job.target.key, UNKNOWN, before, f"our adjustment landed twice; the correction "
                               f"failed ({exc}): re-checked at the next run", transient=True)
            if fixed is not None and fixed.units == job.target.new:
                return Written(job.target.key, UPDATED, before,
                               f"our adjustment landed twice and was corrected; {_dated(job.period)}".rstrip("; "))
        shown = "no units" if units is None else f"{units} units"
        # Held at what Autotask holds now: an approval re-reads it, and writes the target from there.
        return Written(job.target.key, HELD, units,
                       f"Autotask holds {shown} after psabill's {delta:+d} from {before} (target {job.target.new}): "
                       "another writer changed it during this run",
                       hint=f"check contract service {job.csid} in Autotask; 'psabill approve' sets it to "
                            f"{job.target.new}")

    def _failed(self, job: _Job, failure: Exception) -> Written:
        transient = isinstance(failure, RemoteError) and failure.transient
        return Written(job.target.key, FAILED, job.period.units, f"update failed: {failure}", transient=transient,
                       hint="re-run once Autotask is reachable; nothing is double-counted" if transient else
                       "check the contract service in Autotask, then re-run; other updates are kept")

    def _reread(self, expected: Mapping[int, int], run: Callable[..., Any]) -> Dict[int, Period]:
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
        found: Dict[int, Period] = {}
        for part in run(self._units_of, chunks):
            found.update(part)
        return found

    def _ids(self, target: Target) -> Tuple[int, int, int]:
        line = target.line
        return (_numeric(line.agreement_id, "contract id"), _numeric(line.product_id or line.product, "service id"),
                _numeric(line.id, "contract service id"))

    def _no_period(self, csid: int, contract_id: int) -> str:
        return (f"contract service {csid} on contract {contract_id} has no unposted billing period "
                f"from {self.billing_date.isoformat()}")

    def _post(self, job: _Job, change: int, go: Optional[Callable[[], bool]]) -> None:
        body = {"contractID": job.contract, "contractServiceID": job.csid, "serviceID": job.service,
                "effectiveDate": f"{job.period.start}T00:00:00", "unitChange": change}
        response = self.http.request("POST", self.base + "/ContractServiceAdjustments", json=body,
                                     endpoint="ContractServiceAdjustments", idempotent=False, go=go)
        answer = self.http.json_of(response, "POST ContractServiceAdjustments")
        errors = answer.get("errors") if isinstance(answer, dict) else None
        if errors:
            raise RemoteError(self.http.scrub(f"Autotask refused the adjustment: {'; '.join(map(str, errors))}"))

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.http.close()

    # -- paging --------------------------------------------------------------

    def _query(self, entity: str, filters: List[Dict[str, Any]], fields: Sequence[str]) -> Iterator[Dict[str, Any]]:
        """Every item of a query. A next page is POSTed to nextPageUrl (on our origin) with the same body."""
        base = self.base
        query = {"filter": filters, "IncludeFields": list(fields)}
        response = self.http.request("POST", f"{base}/{entity}/query", json=query, endpoint=entity)
        seen_links = set()
        seen_ids: set = set()
        for _ in range(MAX_PAGES):
            body = self.http.json_of(response, f"query {entity}")
            if isinstance(body, dict) and body.get("errors"):
                raise RemoteError(self.http.scrub(f"query {entity}: Autotask answered with errors: "
                                                  f"{'; '.join(map(str, body['errors']))}"))
            if not isinstance(body, dict) or not isinstance(body.get("items"), list):
                raise RemoteError(f"query {entity}: expected an object with items")
            fresh = 0
            for item in body["items"]:
                if isinstance(item, dict) and "id" in item:
                    key = str(item["id"])
                    if key in seen_ids:
                        continue
                    seen_ids.add(key)
                    fresh += 1
                    yield item
            link = (body.get("pageDetails") or {}).get("nextPageUrl")
            if not link:
                return
            if body["items"] and not fresh:
                raise RemoteError(f"query {entity}: Autotask's next page repeats items already read; the read stops "
                                  "here and nothing is written")
            following = rebase(link, base)
            if following in seen_links:
                raise RemoteError(f"query {entity}: nextPageUrl repeats itself; nothing is written")
            seen_links.add(following)
            response = self.http.request("POST", following, json=query, endpoint=entity)
        raise RemoteError(f"query {entity}: more than {MAX_PAGES} pages of {PAGE}: the paging never ends; "
                          "nothing is written")


def _now() -> datetime:
    from psabill import clock  # the one clock: PSABILL_NOW pins it for tests

    return clock.now()


def _utc_today() -> date:
    return _now().date()


def _stamp(day: date) -> str:
    return f"{day.isoformat()}T00:00:00"


def _day(value: Any) -> str:
    return str(value or "")[:10]


def _units(value: Any) -> Optional[int]:
    """Units as a whole number, or None when Autotask answered null or anything else."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _dated(period: Period) -> str:
    if period.posted:
        return f"{period.posted} is posted; the seats take effect {period.start}"
    return ""


def _current(rows: Sequence[Mapping[str, Any]], day: str) -> Optional[Mapping[str, Any]]:
    """The row in effect on ``day``: latest start, then latest end, then highest id."""
    holding = [r for r in rows if _day(r.get("startDate")) and _day(r.get("startDate")) <= day <= _day(r.get("endDate"))]
    if not holding:
        return None
    return max(holding, key=lambda r: (_day(r.get("startDate")), _day(r.get("endDate")),
                                       _units(r.get("id")) or 0))


def _batches(values: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start: start + size]


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
