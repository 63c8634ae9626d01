"""Datto Autotask PSA REST v1.0 client.

Billing periods. Autotask contracts prorate, so a seat count is written the
way LastPass does it ("the integration uploads seat counts with the start date
of the current billing period"): dated to the first day of the billing period
that holds the *billing date*, so the whole period bills the seat count and no
prorated slice is made. The period is the contract's: periods run from the
contract's ``startDate`` in steps of its ``contractPeriodType`` ("The Contract
Start Date defines the billing periods of the services", Datto KB360046864511),
whose labels (Monthly, Quarterly, Semi-Annual, Yearly) are read at run time
from ``Contracts/entityInformation/fields``: Autotask does not publish the
picklist values. A units row is not a period: "When the number of Service units
... is adjusted, a new ContractServiceUnit is created with a start date equal
to the effective date of the adjustment" (developer help,
ContractServiceUnitsEntity.htm). So after a change made in Autotask on 10 March
the period holds two rows, and psabill leaves *every* row of the period at the
seat count: one adjustment dated to the period's start, and, for each later row
of the period that holds another number, one dated to that row's start that
brings it back (an adjustment is a delta from its date on). The item's message
says what was done. The billing date is a date on the account's calendar
(``[account] timezone``): Autotask takes date-only fields as given, so
``effectiveDate`` is sent as ``YYYY-MM-DDT00:00:00``.

Service bundles: a ``[products]`` value ``"bundle:<id>"``, or the name of a
service bundle when no service has that name, is written the same way through
``ContractServiceBundles`` / ``ContractServiceBundleUnits`` /
``ContractServiceBundleAdjustments``, which v1.json models exactly like the
service entities (units rows per period, a create-only delta with an
``effectiveDate``). A service the contract bills only inside a bundle fails
naming the bundle and the ``"bundle:<id>"`` to map instead.

Contracts: an inactive contract whose term holds the billing date still bills
("Inactivating a Recurring Service Contract will NOT stop the services from
being billed", Datto KB370000000540): its lines fail "inactive and still
billing" rather than go unseen. A contract whose end date has passed says it
expired.

An adjustment carries a *delta* (``unitChange``), so the write is not
idempotent. :meth:`AutotaskClient.write` therefore works in batches of
:data:`IN_BATCH` lines, and the batches overlap one stage apart:

1. the batch's units are re-read in bulk (started one batch early, while the
   batch before posts); a line that no longer holds what the plan saw fails
   with "changed in Autotask since the plan", and is not posted;
2. the run is told (``sending``), and records its intent;
3. the deltas are posted per line, computed from that fresh read;
4. the batch is re-read to verify, while the next batch posts. A line off
   its target after our own post is corrected when our posts explain it (a
   post that landed twice), and otherwise held for approval: another writer
   changed it during the run.

``ContractServiceUnits`` has a row per billing period for the whole term,
future periods included, so the query is bounded to the billing period
(``startDate <= its last day``, ``endDate >= its first day``). A period with
``approveAndPostDate`` set on a row is never changed: the adjustment is dated
to the next period instead, and the write says so. Units Autotask answers as
null (or not a whole number) are unknown: that line fails, and nothing is
written to it.

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
import re
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import date, datetime, timedelta, tzinfo
from typing import Any, Callable, Dict, Iterator, List, Mapping, NamedTuple, Optional, Sequence, Set, Tuple

from psabill.config.schema import PsaSettings
from psabill.config.secrets import resolve
from psabill.errors import ConfigError
from psabill.net.errors import AuthRefused, Halted, NoAnswer, RemoteError, Unreachable
from psabill.net.http import HttpClient, check_url, origin, rebase
from psabill.psa.base import (FAILED, HELD, UNCHANGED, UNKNOWN, UPDATED, Agreement, Company, Line, Lines, PsaClient, Sending,
                              Stop, Target, Terms, Written, changed_since_plan, not_written, numeric_id)

ZONE_LOOKUP = "https://webservices.autotask.net"
PER_ENDPOINT = 2  # Autotask's limit is 3 per endpoint; a client at 3 can still reach a 4th (see the docstring)
# Autotask refuses a query with more than 500 OR conditions, and an `in` list counts as that many: "Queries are
# limited to 500 or fewer 'OR' conditions" (Autotask developer help, SOAP_Thresholds_Limits.htm; the same refusal
# of a REST `in` list: n8n-nodes-autotask CHANGELOG 2.12.6, which batches its `in` lists at 500).
IN_BATCH = 500
PAGE = 500  # items per page of a query (Autotask's maximum)
LIST_ALL_OVER = 500
ALLOWANCE = 10_000  # requests an hour per database, when ThresholdInformation does not say
ACTIVE = 1  # Contracts.status "Active" when the picklist does not say (phyco1991/AutotaskAPI, django-autotask)
# A query this long (500,000 rows) is no book: a nextPageUrl that never ends stops here.
MAX_PAGES = 1000
READS_PER_BATCH = 5  # a write batch's units read before and after (at most 2 pages each) and a threshold check
VERIFY_READS = 2  # the units read after a batch (at most 2 pages)
# Contracts that ended this recently are read too, so a line on one says "expired" instead of "not on".
EXPIRED_WITHIN = timedelta(days=366)
CONTRACT_FIELDS = ["id", "companyID", "contractName", "status", "startDate", "endDate", "contractPeriodType"]
BUNDLE = "bundle:"  # a [products] value naming a service bundle by id: "bundle:77"
# contractPeriodType labels -> months a period lasts (the label is the tenant's text; checked in this order).
PERIOD_WORDS = (("semi", 6), ("half", 6), ("quarter", 3), ("month", 1), ("annual", 12), ("year", 12))
TERMS = Terms("Autotask", "contract", "contract service")
_VERIFY_WORKERS = 3


def is_thread_limit(refusal: str) -> bool:
    """Autotask's thread-limit refusal, by its code or its wording (n8n-nodes-autotask PR 107)."""
    text = refusal.lower()
    return "itgenatr005" in text or "thread threshold" in text


class Kind(NamedTuple):
    """A contract service, or a service bundle on a contract: the entities and fields each is written through."""

    name: str
    lines: str  # the entity of its lines on a contract
    units: str  # the entity of its units rows, one per billing period (more after a change within one)
    adjustments: str  # create-only: a delta of units from an effective date on
    key: str  # the units rows' and adjustments' field naming the line
    ref: str  # the field naming the catalogue item (service or service bundle)
    word: str  # in messages


SERVICE = Kind("service", "ContractServices", "ContractServiceUnits", "ContractServiceAdjustments",
               "contractServiceID", "serviceID", "contract service")
SERVICE_BUNDLE = Kind("bundle", "ContractServiceBundles", "ContractServiceBundleUnits",
                      "ContractServiceBundleAdjustments", "contractServiceBundleID", "serviceBundleID",
                      "contract service bundle")


class Contract(NamedTuple):
    id: int
    company_id: int
    name: str
    start: Optional[date]
    end: Optional[date]
    active: bool
    months: Optional[int]  # how long a billing period lasts; None: its period type is not one psabill can date
    period_type: str  # the picklist label, for messages

    def undatable(self) -> str:
        """Why this contract's billing periods cannot be found ("" when they can)."""
        if self.start is None:
            return f"contract #{self.id} has no start date, so its billing periods are unknown; nothing is written"
        if self.months is None:
            return (f"contract #{self.id}'s period type {self.period_type or 'unknown'!r} is not one psabill can date "
                    "(Monthly, Quarterly, Semi-Annual or Yearly); nothing is written")
        return ""

    def period(self, day: date) -> Optional[Tuple[date, date]]:
        """The billing period holding ``day``: periods run from the start date in steps of the period type."""
        if self.start is None or self.months is None or day < self.start:
            return None
        step = self.months
        k = max(0, ((day.year - self.start.year) * 12 + day.month - self.start.month) // step)
        while k > 0 and _add_months(self.start, k * step) > day:
            k -= 1
        while _add_months(self.start, (k + 1) * step) <= day:
            k += 1
        return _add_months(self.start, k * step), _add_months(self.start, (k + 1) * step) - timedelta(days=1)


class Period(NamedTuple):
    """The billing period a write aims at: the billing date's, or the next one when that is posted."""

    units: Optional[int]  # in effect on the billing date (or on the next period's first day); None: unknown
    start: str  # "YYYY-MM-DD": the period's first day
    end: str
    segments: Tuple[Tuple[str, Optional[int]], ...] = ()  # (first day, units) of each units row of the period
    posted: str = ""  # the name of the posted period this one replaces, if any
    rows: int = 1  # units rows read for the line: what a re-read returns
    name: str = ""  # "March", or "the period 2025-01-15 to 2025-02-14"
    problem: str = ""  # why nothing may be written to it

    @property
    def uneven(self) -> bool:
        return len({units for _, units in self.segments}) > 1


class _Slot(NamedTuple):
    """Where a target's write goes."""

    kind: Kind
    contract: int
    ref: int  # service id / service bundle id
    line: int  # contract service id / contract service bundle id

    @property
    def key(self) -> Tuple[str, int]:
        return self.kind.name, self.line


class _Job(NamedTuple):
    target: Target
    slot: _Slot
    period: Period
    posts: Tuple[Tuple[str, int], ...]  # (effective date, unit change), in date order


class _Posted(NamedTuple):
    """A write batch whose posts have returned."""

    results: List[Written]  # targets settled without a post
    jobs: List[_Job]
    failures: Dict[int, Optional[Exception]]  # target key -> why its posts failed; None: Autotask took them
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


def period_months(label: str) -> Optional[int]:
    """How many months a ``contractPeriodType`` label's period lasts ("Semi-Annual" -> 6); None: not known."""
    text = label.casefold()
    return next((months for word, months in PERIOD_WORDS if word in text), None)


def adjustments_for(period: Period, new: int) -> Tuple[Tuple[str, int], ...]:
    """The deltas, by effective date, that leave every units row of ``period`` at ``new``.

    An adjustment applies from its date on, so a row's units move by every
    adjustment dated on or before its start: the first row's delta is dated to
    its start (the period's first day), and each later row that holds another
    number gets the difference back from its own start.
    """
    posts: List[Tuple[str, int]] = []
    moved = 0
    for day, units in period.segments:
        assert units is not None
        change = new - units - moved
        if change:
            posts.append((day, change))
            moved += change
    return tuple(posts)


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
        self._contracts: Dict[int, Contract] = {}  # read once a run: a contract's dates and period type
        self._contract_lock = threading.Lock()
        self._contract_fetch = threading.Lock()
        self._picklist: Optional[Dict[str, Dict[str, str]]] = None  # Contracts field -> picklist value -> label
        self._picklist_lock = threading.Lock()
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
                    continue  # left out of matching: an inactive company never makes a name ambiguous
                company = _company(row)
                if (company.identifier.casefold() in keys or company.id in keys
                        or company.name.strip().casefold() in keys):
                    found[company.id] = company
        return sorted(found.values(), key=lambda c: int(c.id) if c.id.isdigit() else 0)

    def agreements(self, company_ids: Sequence[str]) -> List[Agreement]:
        """The companies' contracts whose term holds the billing date, and those that expired this past year.

        Chosen by their dates, not their status: an inactive contract still
        bills until its end date (Datto KB370000000540), so it is returned with
        a note, and its lines fail saying so. An expired one is returned so a
        line on it can say it expired. 500 companies a query, side by side.
        """
        wanted = sorted({_numeric(i, "company id") for i in company_ids})
        if not wanted:
            return []
        self._picklists()  # once, before the queries side by side
        since = {"op": "gte", "field": "endDate", "value": _stamp(self.billing_date - EXPIRED_WITHIN)}

        def query(batch: Sequence[int]) -> List[Contract]:
            rows = self._query("Contracts", [_in("companyID", batch), since], CONTRACT_FIELDS)
            return [self._contract(row) for row in rows if row.get("companyID") in batch]

        result = []
        for contracts in self._pool.map(query, list(_batches(wanted, IN_BATCH))):
            for contract in contracts:
                with self._contract_lock:
                    self._contracts[contract.id] = contract
                if contract.start is not None and contract.start > self.billing_date:
                    continue  # it bills from a later date
                note = ""
                if not contract.active and not _expired(contract, self.billing_date):
                    note = f"contract #{contract.id} is inactive and still billing" + (
                        f" until {contract.end.isoformat()}" if contract.end else "")
                result.append(Agreement(id=str(contract.id), company_id=str(contract.company_id),
                                        name=contract.name, note=note))
        return sorted(result, key=lambda a: int(a.id))

    def lines(self, agreements: Sequence[Agreement], products: Sequence[str]) -> Lines:
        """The lines of many contracts, read in bulk with ``in`` filters, the queries side by side.

        ``products`` are service ids (a TOML integer or a numeric string),
        ``"bundle:<id>"`` for a service bundle, or names: a service's name, or a
        service bundle's when no service has it, matched ignoring case as
        Autotask's own queries do. A line's quantity is the units in effect on
        the billing date, in the period a write would change: the billing
        date's, or the next one when that is posted.
        """
        resolved, problems = self._resolve_products(products)
        by_ref: Dict[Tuple[str, int], str] = {}
        for value, (kind, ref) in resolved.items():
            by_ref.setdefault((kind.name, ref), value)
        ids = sorted({_numeric(a.id, "contract id") for a in agreements})
        result: Dict[str, List[Line]] = {str(cid): [] for cid in ids}
        contracts = self._contracts_of(ids)
        kinds = [k for k in (SERVICE, SERVICE_BUNDLE) if any(kind is k for kind, _ in resolved.values())]
        dated = [cid for cid in ids if cid in contracts and not contracts[cid].undatable()
                 and not _expired(contracts[cid], self.billing_date)]
        jobs: List[Tuple[str, Kind, Sequence[int]]] = []
        for kind in kinds:
            jobs.extend(("lines", kind, batch) for batch in _batches(ids, IN_BATCH))
            jobs.extend(("units", kind, batch) for batch in _batches(dated, IN_BATCH))
        held: Dict[str, List[Dict[str, Any]]] = {k.name: [] for k in kinds}  # the contracts' lines, by kind
        periods: Dict[Tuple[str, int], Period] = {}
        for (what, kind, _batch), found in zip(jobs, self._pool.map(self._contract_rows, jobs)):
            if what == "lines":
                held[kind.name].extend(found)
            else:
                periods.update(found)
        present: Set[Tuple[int, str]] = set()  # (contract, product) with a line
        on_contract: Set[Tuple[int, str]] = set()  # (contract, product) the contract has, billing now or not
        for kind in kinds:
            for row in held[kind.name]:
                cid = _numeric(row.get("contractID"), "contract id")
                product = by_ref.get((kind.name, _numeric(row.get(kind.ref), f"{kind.ref}")))
                contract = contracts.get(cid)
                if product is None or str(cid) not in result or contract is None:
                    continue
                on_contract.add((cid, product))
                if _expired(contract, self.billing_date):
                    continue  # said in explain: it expired
                line_id = _numeric(row["id"], f"{kind.word} id")
                line = self._line(kind, contract, row, line_id, product, periods.get((kind.name, line_id)))
                if line is not None:
                    result[str(cid)].append(line)
                    present.add((cid, product))
        explain, hints = self._explain(agreements, resolved, contracts, present, on_contract)
        return Lines(result, problems, explain, hints=hints)

    def _line(self, kind: Kind, contract: Contract, row: Mapping[str, Any], line_id: int, product: str,
              period: Optional[Period]) -> Optional[Line]:
        """One line, with what it holds and why it cannot be written, if so; None: it does not bill now."""
        ref = _numeric(row.get(kind.ref), kind.ref)
        product_id = f"{BUNDLE}{ref}" if kind is SERVICE_BUNDLE else str(ref)
        common = dict(id=str(line_id), agreement_id=str(contract.id), product=product, product_id=product_id)
        reason = contract.undatable()
        if reason:
            return Line(quantity=None, problem=reason, **common)  # type: ignore[arg-type]
        if period is None:
            return None  # no units row holds the billing date: it does not bill now
        problem = period.problem
        if not problem and (period.units is None or any(units is None for _, units in period.segments)):
            problem = ("Autotask answered its units as null or not a whole number, so how many it bills is "
                       "unknown; nothing is written to it")
        if not problem and not contract.active:
            until = contract.end.isoformat() if contract.end else "not set"
            problem = (f"contract {contract.name!r} (#{contract.id}) is inactive and still billing: Autotask bills a "
                       f"recurring contract's services until its end date ({until}) even when it is inactive; set "
                       "that end date to stop the billing, or reactivate the contract so psabill keeps it in step; "
                       "nothing is written")
        note = _dated(period) or (f"{period.name} holds {_held(period)}" if period.uneven else "")
        return Line(quantity=period.units, note=note, problem=problem, uneven=period.uneven,
                    **common)  # type: ignore[arg-type]

    def _explain(self, agreements: Sequence[Agreement], resolved: Mapping[str, Tuple[Kind, int]],
                 contracts: Mapping[int, Contract], present: Set[Tuple[int, str]],
                 on_contract: Set[Tuple[int, str]]) -> Tuple[Dict[Tuple[str, str], str], Dict[Tuple[str, str], str]]:
        """Why a product has no line on a contract, when Autotask can say: expired, or billed in a bundle."""
        explain: Dict[Tuple[str, str], str] = {}
        hints: Dict[Tuple[str, str], str] = {}
        unbundled: Dict[int, List[str]] = {}  # contract -> service products it lacks
        for agreement in agreements:
            cid = _numeric(agreement.id, "contract id")
            contract = contracts.get(cid)
            if contract is None:
                continue
            for value, (kind, _ref) in resolved.items():
                if (cid, value) in present:
                    continue
                if _expired(contract, self.billing_date) and (cid, value) in on_contract:
                    assert contract.end is not None
                    explain[(agreement.id, value)] = (
                        f"contract {contract.name!r} (#{cid}) expired on {contract.end.isoformat()}: Autotask bills "
                        f"{value!r} on it no more, and psabill writes only to contracts that bill now")
                    hints[(agreement.id, value)] = ("renew the contract, or extend its end date, in Autotask; or pin "
                                                    "the customer's current contract in the mapping file")
                elif kind is SERVICE and (cid, value) not in on_contract:
                    unbundled.setdefault(cid, []).append(value)
        if unbundled:
            for cid, value, bundle, name in self._bundled(unbundled, resolved):
                shown = f"#{bundle}" + (f" {name!r}" if name else "")
                explain[(str(cid), value)] = (
                    f"service {value!r} is not a contract service of contract #{cid}; the contract bills through "
                    f"service bundle {shown}, which includes it")
                hints[(str(cid), value)] = ("map the SKU to the bundle instead: [products] <SKU> = "
                                            f"\"{BUNDLE}{bundle}\"; psabill then keeps the bundle's units at the "
                                            "seat count")
        return explain, hints

    def _bundled(self, wanting: Mapping[int, Sequence[str]], resolved: Mapping[str, Tuple[Kind, int]]
                 ) -> List[Tuple[int, str, int, str]]:
        """(contract, service product, service bundle, its name) for services the contract bills in a bundle."""
        try:
            on: Dict[int, List[int]] = {}
            for batch in _batches(sorted(wanting), IN_BATCH):
                for row in self._query("ContractServiceBundles", [_in("contractID", list(batch))],
                                       ["id", "contractID", "serviceBundleID"]):
                    on.setdefault(_numeric(row.get("contractID"), "contract id"), []).append(
                        _numeric(row.get("serviceBundleID"), "service bundle id"))
            bundles = sorted({b for found in on.values() for b in found})
            if not bundles:
                return []
            holds: Dict[int, Set[int]] = {}
            names: Dict[int, str] = {}
            for batch in _batches(bundles, IN_BATCH):
                for row in self._query("ServiceBundleServices", [_in("serviceBundleID", list(batch))],
                                       ["id", "serviceBundleID", "serviceID"]):
                    holds.setdefault(_numeric(row.get("serviceBundleID"), "service bundle id"), set()).add(
                        _numeric(row.get("serviceID"), "service id"))
                for row in self._query("ServiceBundles", [_in("id", list(batch))], ["id", "name"]):
                    names[_numeric(row["id"], "service bundle id")] = str(row.get("name") or "")
        except (Unreachable, AuthRefused):
            raise
        except RemoteError:
            return []  # only an explanation: the item fails "not on the contract" instead
        found = []
        for cid, values in wanting.items():
            for value in values:
                service = resolved[value][1]
                inside = [b for b in sorted(set(on.get(cid, []))) if service in holds.get(b, set())]
                if inside:
                    found.append((cid, value, inside[0], names.get(inside[0], "")))
        return found

    def _resolve_products(self, values: Sequence[str]) -> Tuple[Dict[str, Tuple[Kind, int]], Dict[str, str]]:
        """[products] values -> (service or bundle, its id), and values -> why they cannot be used.

        Names match ignoring case, as Autotask compares strings ("any strings
        are always matched case insensitive by the API", ecitsolutions/Autotask
        Docs/How to Query.md); two that differ only in case are ambiguous.
        """
        resolved: Dict[str, Tuple[Kind, int]] = {}
        problems: Dict[str, str] = {}
        names: List[str] = []
        for value in values:
            text = value.strip()
            bundle = re.fullmatch(r"bundle:\s*(\d+)", text, re.IGNORECASE)
            if text.isdigit() and text.isascii():
                resolved[value] = (SERVICE, int(text))
            elif bundle and bundle.group(1).isascii():
                resolved[value] = (SERVICE_BUNDLE, int(bundle.group(1)))
            else:
                names.append(value)
        unnamed = self._by_name("Services", SERVICE, sorted(set(names)), resolved, problems)
        if unnamed:  # a service bundle's name, when no service has it
            left = self._by_name("ServiceBundles", SERVICE_BUNDLE, unnamed, resolved, problems)
            for name in left:
                problems[name] = f"no Autotask service is named {name!r}, nor a service bundle"
        return resolved, problems

    def _by_name(self, entity: str, kind: Kind, names: Sequence[str], resolved: Dict[str, Tuple[Kind, int]],
                 problems: Dict[str, str]) -> List[str]:
        """Resolve ``names`` in ``entity``; the names nothing there has."""
        found: Dict[str, Dict[int, str]] = {}  # folded name -> id -> its spelling
        for batch in _batches(list(names), IN_BATCH):
            for row in self._query(entity, [_in("name", list(batch))], ["id", "name"]):
                spelled = str(row.get("name") or "")
                found.setdefault(spelled.strip().casefold(), {})[_numeric(row["id"], f"{kind.word} id")] = spelled
        missing = []
        for name in names:
            ids = found.get(name.strip().casefold(), {})
            if len(ids) == 1:
                resolved[name] = (kind, next(iter(ids)))
            elif ids:
                exact = all(spelled == name for spelled in ids.values())
                shown = ", ".join(f"#{i}" if exact else f"#{i} {ids[i]!r}" for i in sorted(ids)[:5])
                said = (f"{len(ids)} Autotask services are named {name!r}" if kind is SERVICE
                        else f"{len(ids)} Autotask service bundles are named {name!r}")
                problems[name] = said + ("" if exact else " ignoring case") + f" ({shown})"
            else:
                missing.append(name)
        return missing

    def _contract_rows(self, job: Tuple[str, Kind, Sequence[int]]) -> Any:
        """One of :meth:`lines`' queries: a batch of contracts' lines, or their periods, of one kind."""
        what, kind, batch = job
        if what == "units":
            return self._periods(kind, "contractID", {cid: cid for cid in batch})
        return list(self._query(kind.lines, [_in("contractID", list(batch))], ["id", "contractID", kind.ref]))

    # -- contracts and their billing periods -------------------------------------

    def _picklists(self) -> Dict[str, Dict[str, str]]:
        """Contracts' picklists (status, contractPeriodType), read once: value -> label, per field.

        Autotask publishes no picklist values ("picklist values ... may vary
        between Autotask implementations ... use the GET API calls", REST
        entities overview): ``GET Contracts/entityInformation/fields`` has them.
        """
        with self._picklist_lock:
            if self._picklist is None:
                answer = self.http.get_json(self.base + "/Contracts/entityInformation/fields", endpoint="Contracts")
                fields = answer.get("fields") if isinstance(answer, dict) else None
                if not isinstance(fields, list):
                    raise RemoteError("GET Contracts/entityInformation/fields: expected an object with fields")
                picklist: Dict[str, Dict[str, str]] = {}
                for field in fields:
                    if isinstance(field, dict) and field.get("isPickList"):
                        values = field.get("picklistValues") or []
                        picklist[str(field.get("name", "")).casefold()] = {
                            str(v.get("value")): str(v.get("label") or "") for v in values if isinstance(v, dict)}
                self._picklist = picklist
            return self._picklist

    def _contract(self, row: Mapping[str, Any]) -> Contract:
        picklist = self._picklists()
        statuses = picklist.get("status", {})
        active = {value for value, label in statuses.items() if label.strip().casefold() == "active"} or {str(ACTIVE)}
        label = picklist.get("contractperiodtype", {}).get(str(row.get("contractPeriodType")), "")
        return Contract(id=_numeric(row["id"], "contract id"), company_id=_numeric(row.get("companyID"), "company id"),
                        name=str(row.get("contractName") or ""), start=_date(row.get("startDate")),
                        end=_date(row.get("endDate")), active=str(row.get("status")) in active,
                        months=period_months(label) if label else None,
                        period_type=label or str(row.get("contractPeriodType") or ""))

    def _contracts_of(self, ids: Sequence[int]) -> Dict[int, Contract]:
        """These contracts, read when this run has not read them yet (an approval, a write on its own)."""
        with self._contract_fetch:  # two read-aheads at once read a contract once
            with self._contract_lock:
                missing = [cid for cid in sorted(set(ids)) if cid not in self._contracts]
            for batch in _batches(missing, IN_BATCH):
                for row in self._query("Contracts", [_in("id", list(batch))], CONTRACT_FIELDS):
                    contract = self._contract(row)
                    with self._contract_lock:
                        self._contracts[contract.id] = contract
        with self._contract_lock:
            return {cid: self._contracts[cid] for cid in ids if cid in self._contracts}

    def _periods(self, kind: Kind, by: str, owners: Mapping[int, int]) -> Dict[Tuple[str, int], Period]:
        """(kind, line id) -> the period a write aims at, for the lines found by ``by`` in ``owners``.

        ``owners`` maps each value of the ``by`` filter (a contract id, or a
        line id) to its contract. The rows are read bounded to each contract's
        billing period: contracts that share a period share a query.
        """
        contracts = self._contracts_of(sorted(set(owners.values())))
        groups: Dict[Tuple[date, date], List[int]] = {}
        for value, cid in owners.items():
            contract = contracts.get(cid)
            span = contract.period(self.billing_date) if contract is not None else None
            if span is not None:
                groups.setdefault(span, []).append(value)
        best: Dict[Tuple[str, int], Period] = {}
        posted: Dict[Tuple[date, date], Dict[int, Tuple[int, str, int]]] = {}  # next span -> line -> (contract, ..)
        for span, values in sorted(groups.items()):
            for batch in _batches(sorted(values), IN_BATCH):
                rows = self._unit_rows(kind, [_in(by, list(batch))], span)
                for line, found in rows.items():
                    cid = _numeric(found[0].get("contractID"), "contract id")
                    period, closed = _period_of(found, span, self.billing_date, contracts.get(cid), kind, line)
                    if period is None:
                        continue
                    if closed:
                        following = _following(span, contracts[cid])
                        posted.setdefault(following, {})[line] = (cid, period.name, len(found))
                    else:
                        best[(kind.name, line)] = period
        for span, lines in sorted(posted.items()):
            for batch in _batches(sorted(lines), IN_BATCH):
                rows = self._unit_rows(kind, [_in(kind.key, list(batch))], span)
                for line in batch:
                    cid, name, count = lines[line]
                    found = rows.get(line, [])
                    period, closed = _period_of(found, span, None, contracts.get(cid), kind, line) if found \
                        else (None, False)
                    if period is None or closed:
                        best[(kind.name, line)] = Period(None, span[0].isoformat(), span[1].isoformat(), posted=name,
                                                         rows=count, problem=self._no_period(kind, line, cid))
                    else:
                        best[(kind.name, line)] = period._replace(posted=name, rows=count)
        return best

    def _unit_rows(self, kind: Kind, filters: List[Dict[str, Any]], span: Tuple[date, date]
                   ) -> Dict[int, List[Dict[str, Any]]]:
        """Line id -> its units rows within ``span`` (the query bounded to it: the term's other periods stay out)."""
        bounded = filters + [{"op": "lte", "field": "startDate", "value": _stamp(span[1])},
                             {"op": "gte", "field": "endDate", "value": _stamp(span[0])}]
        fields = ["id", "contractID", kind.key, "startDate", "endDate", "units", "approveAndPostDate"]
        rows: Dict[int, List[Dict[str, Any]]] = {}
        for row in self._query(kind.units, bounded, fields):
            rows.setdefault(_numeric(row.get(kind.key), f"{kind.word} id"), []).append(row)
        return rows

    def _no_period(self, kind: Kind, line: int, contract_id: int) -> str:
        return (f"{kind.word} {line} on contract {contract_id} has no unposted billing period "
                f"from {self.billing_date.isoformat()}")

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
        aheads: Dict[int, Tuple[int, "Future[Dict[Tuple[str, int], Period]]"]] = {}

        def read_ahead(index: int) -> None:
            slots = [self._slot(t) for t in batches[index]]
            aheads[index] = (generation[0], self._pool.submit(self._units_of, slots))

        def units_for(index: int) -> Dict[Tuple[str, int], Period]:
            started, future = aheads.pop(index, (None, None))
            if future is not None and started == generation[0]:
                try:
                    return future.result()
                except RemoteError:
                    pass  # read afresh: that read raises what the batch must stop on
            return self._units_of([self._slot(t) for t in batches[index]])

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
            # The batch just posted is verified after this check: its reads stay in the budget, even when
            # other integrations have taken the database past its share meanwhile (else it ends unknown).
            try:
                self._allowance()
            except RemoteError:
                pass  # the hard budget still stops the run before it overruns
            floor = self.request_count + VERIFY_READS
            if self.http.max_requests is not None and self.http.max_requests < floor:
                self.http.max_requests = floor
        left = self.remaining_budget
        fits = writes
        while fits > 0 and fits + READS_PER_BATCH * -(-fits // IN_BATCH) > left:
            fits -= 1
        return fits

    def _slot(self, target: Target) -> _Slot:
        line = target.line
        product = (line.product_id or line.product).strip()
        contract = _numeric(line.agreement_id, "contract id")
        if product.lower().startswith(BUNDLE):
            return _Slot(SERVICE_BUNDLE, contract, _numeric(product[len(BUNDLE):].strip(), "service bundle id"),
                         _numeric(line.id, "contract service bundle id"))
        return _Slot(SERVICE, contract, _numeric(product, "service id"), _numeric(line.id, "contract service id"))

    def _units_of(self, slots: Sequence[_Slot]) -> Dict[Tuple[str, int], Period]:
        found: Dict[Tuple[str, int], Period] = {}
        for kind in (SERVICE, SERVICE_BUNDLE):
            mine = {slot.line: slot.contract for slot in slots if slot.kind is kind}
            if mine:
                found.update(self._periods(kind, kind.key, mine))
        return found

    def _post_batch(self, batch: Sequence[Target], before: Mapping[Tuple[str, int], Period], halt: Callable[[], bool],
                    stop: threading.Event) -> _Posted:
        results: List[Written] = []
        jobs: List[_Job] = []
        for target in batch:
            slot = self._slot(target)
            period = before.get(slot.key)
            if period is None:
                contract = self._contracts.get(slot.contract)
                why = contract.undatable() if contract is not None else ""
                results.append(Written(target.key, FAILED, None, why or (
                    f"{slot.kind.word} {slot.line} on contract {slot.contract} has no units row for "
                    f"{self.billing_date.isoformat()}; nothing was written")))
            elif period.problem:
                results.append(Written(target.key, FAILED, None, period.problem))
            elif period.units is None or any(units is None for _, units in period.segments):
                results.append(Written(target.key, FAILED, None, "Autotask answered the units as null or not a "
                                       "whole number; nothing was written"))
            elif period.units != target.old:
                results.append(changed_since_plan(target, period.units, TERMS))
            else:
                posts = adjustments_for(period, target.new)
                if posts:
                    jobs.append(_Job(target, slot, period, posts))
                else:
                    results.append(Written(target.key, UNCHANGED, period.units, _dated(period)))

        problems: List[RemoteError] = []

        def go() -> bool:
            return not problems and not halt() and not stop.is_set()

        def one(job: _Job) -> Optional[Exception]:
            for done, (day, change) in enumerate(job.posts):  # in date order: each after the one before landed
                try:
                    self._post(job.slot, day, change, go)
                except Halted:
                    if done:  # some landed: the verify read says where the line stands
                        return RemoteError(f"the run stopped after {done} of its {len(job.posts)} adjustments",
                                           status=503)
                    return Halted(f"not written: the run stopped before {job.slot.kind.word} {job.slot.line} "
                                  "was adjusted")
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
            if isinstance(failure, Halted):  # stopped before its first post: nothing of it was sent
                results.append(not_written(job.target, "the run stopped before it was sent"))
            else:
                sent.append(job)
        if not sent:
            return results, None
        try:
            after = self._reread({job.slot: job.period.rows + len(job.posts) for job in sent}, run)
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
            now = after.get(job.slot.key)
            failure = posted.failures.get(job.target.key)
            if now is not None and now.segments and all(units == job.target.new for _, units in now.segments):
                results.append(Written(job.target.key, UPDATED, job.period.units, _written(job)))
            elif now is not None and now.segments == job.period.segments and failure is not None:
                results.append(self._failed(job, failure))  # none of its posts landed
            else:
                results.append(self._off_target(job, now))
        return results, None

    def _off_target(self, job: _Job, now: Optional[Period]) -> Written:
        """A line that holds neither what it held nor its target after our posts."""
        before = job.period.units
        assert before is not None
        units = now.units if now is not None else None
        if len(job.posts) == 1 and units is not None and now is not None and not now.uneven:
            day, delta = job.posts[0]
            if (units - before) % delta == 0 and (units - before) // delta >= 2:
                # Our own post landed more than once (a retry after a lost answer): take the extra back.
                try:
                    self._post(job.slot, day, job.target.new - units, None)
                    fixed = self._units_of([job.slot]).get(job.slot.key)
                except RemoteError as exc:
                    return Written(job.target.key, UNKNOWN, before, f"our adjustment landed twice; the correction "
                                   f"failed ({exc}): re-checked at the next run", transient=True)
                if fixed is not None and fixed.units == job.target.new:
                    return Written(job.target.key, UPDATED, before,
                                   f"our adjustment landed twice and was corrected; {_dated(job.period)}".rstrip("; "))
        shown = "no units" if units is None else f"{units} units"
        if now is not None and now.uneven:
            shown = _held(now)
        change = ", ".join(f"{delta:+d}" for _, delta in job.posts)
        # Held at what Autotask holds now: an approval re-reads it, and writes the target from there.
        return Written(job.target.key, HELD, units,
                       f"Autotask holds {shown} after psabill's {change} from {before} (target {job.target.new}): "
                       "another writer changed it during this run",
                       hint=f"check {job.slot.kind.word} {job.slot.line} in Autotask; 'psabill approve' sets it to "
                            f"{job.target.new}")

    def _failed(self, job: _Job, failure: Exception) -> Written:
        transient = isinstance(failure, RemoteError) and failure.transient
        return Written(job.target.key, FAILED, job.period.units, f"update failed: {failure}", transient=transient,
                       hint="re-run once Autotask is reachable; nothing is double-counted" if transient else
                       "check the contract service in Autotask, then re-run; other updates are kept")

    def _reread(self, expected: Mapping[_Slot, int], run: Callable[..., Any]) -> Dict[Tuple[str, int], Period]:
        """Units of lines expected to hold so many rows: in queries of one page each, run at once.

        One query for them all would page, and its pages come one after another;
        split by the rows expected, the same number of requests run side by side.
        """
        chunks: List[List[_Slot]] = []
        size = 0
        for slot in sorted(expected, key=lambda s: (s.kind.name, s.line)):
            rows = max(1, expected[slot])
            if not chunks or size + rows > PAGE or len(chunks[-1]) == IN_BATCH or chunks[-1][0].kind is not slot.kind:
                chunks.append([])
                size = 0
            chunks[-1].append(slot)
            size += rows
        found: Dict[Tuple[str, int], Period] = {}
        for part in run(self._units_of, chunks):
            found.update(part)
        return found

    def _post(self, slot: _Slot, day: str, change: int, go: Optional[Callable[[], bool]]) -> None:
        body = {"contractID": slot.contract, slot.kind.key: slot.line, slot.kind.ref: slot.ref,
                "effectiveDate": f"{day}T00:00:00", "unitChange": change}
        entity = slot.kind.adjustments
        response = self.http.request("POST", f"{self.base}/{entity}", json=body, endpoint=entity, idempotent=False,
                                     go=go)
        answer = self.http.json_of(response, f"POST {entity}")
        errors = answer.get("errors") if isinstance(answer, dict) else None
        if errors:
            raise RemoteError(self.http.scrub(f"Autotask refused the adjustment: {'; '.join(map(str, errors))}"))

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.http.close()

    # -- paging --------------------------------------------------------------

    def _query(self, entity: str, filters: List[Dict[str, Any]], fields: Sequence[str]) -> Iterator[Dict[str, Any]]:
        """Every item of a query. A next page is POSTed to nextPageUrl (on our origin) with the same body.

        At most :data:`MAX_PAGES` pages; a next page that repeats only items
        already read, or a nextPageUrl seen before, stops the read with one
        line (the run then writes nothing).
        """
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


def _date(value: Any) -> Optional[date]:
    """The calendar date of an Autotask date-time ("2025-03-01T00:00:00"); None when missing or not a date."""
    try:
        return date.fromisoformat(_day(value)) if value else None
    except ValueError:
        return None


def _add_months(day: date, months: int) -> date:
    """``day`` moved by whole months, the day of the month kept where the month has it (31 Jan + 1 = 28 Feb)."""
    year, month = divmod(day.month - 1 + months, 12)
    year += day.year
    return date(year, month + 1, min(day.day, calendar.monthrange(year, month + 1)[1]))


def _expired(contract: Contract, day: date) -> bool:
    return contract.end is not None and contract.end < day


def _following(span: Tuple[date, date], contract: Contract) -> Tuple[date, date]:
    after = contract.period(span[1] + timedelta(days=1))
    assert after is not None  # a contract with a period has one after it
    return after


def _name(first: date, last: date) -> str:
    """How messages name a period: "March" for a calendar month, else its dates."""
    if first.day == 1 and last == first.replace(day=calendar.monthrange(first.year, first.month)[1]):
        return calendar.month_name[first.month]
    return f"the period {first.isoformat()} to {last.isoformat()}"


def _units(value: Any) -> Optional[int]:
    """Units as a whole number, or None when Autotask answered null or anything else."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _period_of(rows: Sequence[Mapping[str, Any]], span: Tuple[date, date], billing_day: Optional[date],
               contract: Optional[Contract], kind: Kind, line: int) -> Tuple[Optional[Period], bool]:
    """A line's period from its units rows within ``span``, and whether a row of it is posted.

    None: no row holds ``billing_day`` (the line does not bill then). Rows
    that share a first day are one row: the latest (then highest id) is in
    effect. A row that runs past the period's bounds means Autotask's periods
    are not the contract's as psabill reads them: nothing may be written.
    """
    first, last = (d.isoformat() for d in span)
    name = _name(*span)
    across = [r for r in rows if _day(r.get("startDate")) < first or _day(r.get("endDate")) > last]
    if across:
        row = across[0]
        kind_of = contract.period_type if contract is not None else "?"
        cid = contract.id if contract is not None else "?"
        return Period(None, first, last, name=name, rows=len(rows), problem=(
            f"Autotask's units rows for {kind.word} {line} do not follow contract #{cid}'s {kind_of} billing "
            f"periods: a row runs {_day(row.get('startDate'))} to {_day(row.get('endDate'))}, across {name} "
            f"({first} to {last}); nothing is written to it")), False
    by_start: Dict[str, Mapping[str, Any]] = {}
    for row in rows:
        start = _day(row.get("startDate"))
        held = by_start.get(start)
        if held is None or (_day(row.get("endDate")), _units(row.get("id")) or 0) > (
                _day(held.get("endDate")), _units(held.get("id")) or 0):
            by_start[start] = row
    if not by_start:
        return None, False
    starts = sorted(by_start)
    segments = tuple((start, _units(by_start[start].get("units"))) for start in starts)
    if billing_day is None:
        units = segments[0][1]
    else:
        day = billing_day.isoformat()
        holding = [start for start in starts if start <= day]
        if not holding or _day(by_start[holding[-1]].get("endDate")) < day:
            return None, False
        units = _units(by_start[holding[-1]].get("units"))
    closed = any(row.get("approveAndPostDate") for row in rows)
    return Period(units, first, last, segments, rows=len(rows), name=name), closed


def _held(period: Period) -> str:
    """"10 from 2025-03-01 and 20 from 2025-03-10": what each units row of the period holds."""
    parts = [f"{'no units' if units is None else units} from {day}" for day, units in period.segments]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _dated(period: Period) -> str:
    if period.posted:
        return f"{period.posted} is posted; the seats take effect {period.start}"
    return ""


def _written(job: _Job) -> str:
    """What an updated line's message says: where the seats were dated, when that is not just the period's start."""
    dated = _dated(job.period)
    if not job.period.uneven:
        return dated
    posts = " and ".join(f"{delta:+d} to {day}" for day, delta in job.posts)
    whole = (f"{job.period.name} holds {_held(job.period)}; psabill dated {posts}, so all of {job.period.name} "
             f"bills {job.target.new}")
    return "; ".join(text for text in (dated, whole) if text)


def _batches(values: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start: start + size]


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
