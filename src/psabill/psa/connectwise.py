"""ConnectWise PSA ("Manage") REST 3.0 client.

Cost model, for N mapped companies with A active agreements and C changed
quantities: ceil(list size / 1000) paged reads for companies and agreements,
plus one additions read per agreement, plus one PATCH per changed quantity,
plus one companyinfo read when the codebase has to be discovered.
Short lists of identifiers or company ids are fetched with ``conditions``
(batched so the URL stays short); long lists fetch everything in pages of 1000
and filter here, which is fewer requests than hundreds of batched queries.

Quantities are absolute in ConnectWise, so a PATCH is idempotent and is
retried like a read. Quantities are decimals and are compared exactly. A write
counts only when ConnectWise answers with the addition carrying the new
quantity: a 200 with an error object, or without the quantity, fails it.

The API base: ``[psa] url`` is a browser host (``na.myconnectwise.net``), an
API host (``api-na.myconnectwise.net``) or a full API URL
(``https://api-na.myconnectwise.net/v2025_1/apis/3.0``). A full URL is used
exactly as given. Given only a host, the codebase is discovered the way
well-known clients do it, with ``GET https://{host}/login/companyinfo/{company}``
(no credentials), before the first API request; the API then lives on the
cloud API host (``api-`` + a ``*.myconnectwise.net`` browser host) or, for any
other host (on-premises, the loopback sandbox), on the host as given.

Which addition bills: the one billing on the billing date (a date on the
account's calendar): ``effectiveDate`` on or before it, ``cancelledDate`` null
or after it. One cancelled in the future still bills; one effective later
does not yet.

Lines that invoice nothing: an addition whose ``billCustomer`` is ``DoNotBill``
or ``NoCharge`` (the Addition model's enum: Billable, DoNotBill, NoCharge) is
kept in step like any other, and its item says it invoices nothing. The seat
count is still the customer's, and an admin who sets a line to bill later
expects it current; leaving it alone would make the number drift silently.

Invoices not yet generated: an agreement's ``nextInvoiceDate`` moves only when
its invoice is created, so it can lie in the past. ConnectWise invoices an
agreement per billing cycle, in advance ("Generates the invoice for the first
or next billing cycle"; invoices "become available on the first of the
month"), and a quantity is not dated: the invoice takes whatever the addition
holds when it is generated. When the next invoice is for a cycle that ended
before the billing date (``nextInvoiceDate`` plus one cycle of the agreement's
``billingCycle``, whose recurrence ``/finance/billingCycles`` gives), a change
now lands on that invoice for a period that has ended: the line says so, and
the guard's ``hold_closed_period`` holds it in an unattended run.

Paging is navigable (``page``/``pageSize``, the ``Link`` header's ``rel="next"``):
no request carries ``pageId``, so none needs the ``pagination-type:
forward-only`` header that forward-only paging requires (Developer Guide).
"""

from __future__ import annotations

import base64
import calendar
import re
import threading
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import date, datetime, timedelta, timezone
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import quote, urlencode, urlsplit

from psabill.config.schema import PsaSettings
from psabill.config.secrets import resolve
from psabill.errors import ConfigError
from psabill.net.errors import AuthRefused, Halted, RemoteError, Unreachable
from psabill.net.http import HttpClient, check_url, rebase
from psabill.psa.base import (FAILED, UNKNOWN, UPDATED, Agreement, Company, Line, Lines, PsaClient, Sending, Stop,
                              Target, Terms, Written, not_written, numeric_id, quantity as exact_quantity)
from psabill.text import redact

API_PATH = "/apis/3.0"
DEFAULT_API_VERSION = "2025.1"
PAGE_SIZE = 1000  # ConnectWise's maximum; read at call time, so a test may lower it
# ConnectWise publishes no limit on the values of an `in (...)` condition, but its Developer Guide
# recommends URLs of at most 2,000 characters (about 1,745 to be safe): conditions are batched to fit.
URL_BUDGET = 1745
LIST_ALL_OVER = 200  # more values than this: page through everything instead of batching
AHEAD = 64  # reads submitted ahead of the one being consumed: enough to keep every slot busy, and no
# more futures (and answers) held at once than that, at 20,000 agreements too
# A list this long (1,000,000 rows at the page size) is no book: a next link that never ends stops here.
MAX_PAGES = 1000
WRITE_WINDOW = 4  # PATCHes queued per concurrent request: enough to keep every slot busy
TERMS = Terms("ConnectWise", "agreement", "addition")
NOT_BILLED = ("DoNotBill", "NoCharge")  # AgreementAddition.billCustomer values that invoice nothing
# BillingCycle.billingOptions (pyconnectwise BillingCycleModel; the Billing Cycle setup table) -> its length.
CYCLE_MONTHS = {"Monthly": 1, "BiMonthly": 2, "Quarterly": 3, "SemiAnnual": 6, "Yearly": 12}
CYCLE_DAYS = {"Weekly": 7, "BiWeekly": 14}
CLOUD_DOMAIN = ".myconnectwise.net"
_CODEBASE = re.compile(r"^/?(v\d+_\d+(?:_release)?)/?$", re.IGNORECASE)


def parse_url(url: str) -> Tuple[str, str, Optional[str]]:
    """``[psa] url`` -> (scheme, host[:port], the full API base, or None when only a host was given)."""
    text = url.strip().rstrip("/")
    if "://" not in text:
        text = "https://" + text
    parts = urlsplit(text)
    scheme, netloc, path = parts.scheme.lower(), parts.netloc, parts.path.rstrip("/")
    if not netloc or parts.query or parts.fragment:
        raise RemoteError(f"url {url!r} is not a ConnectWise host or API URL")
    if not path:
        return scheme, netloc, None
    if path.lower().endswith(API_PATH):
        return scheme, netloc, f"{scheme}://{netloc}{path}"
    if _CODEBASE.match(path):  # ".../v2025_1": the codebase without the API path
        return scheme, netloc, f"{scheme}://{netloc}{path}{API_PATH}"
    raise RemoteError(f"url {url!r}: give the host (na.myconnectwise.net) or the full API URL "
                   f"(https://api-na.myconnectwise.net/v2025_1/apis/3.0)")


def api_host(netloc: str) -> str:
    """The API host for a site: ``na.myconnectwise.net`` -> ``api-na.myconnectwise.net``; others as given."""
    host = netloc.lower()
    if host.endswith(CLOUD_DOMAIN) and not host.startswith("api-"):
        return "api-" + netloc
    return netloc


def api_base(url: str, codebase: str) -> str:
    """The API base for ``url``: a full API URL as given, a host with ``codebase`` (as companyinfo spells it)."""
    scheme, netloc, base = parse_url(url)
    if base is not None:
        return base
    name = str(codebase).strip().strip("/")
    if not _CODEBASE.match(name):
        raise RemoteError(f"codebase {codebase!r} is not a ConnectWise codebase such as v2025_1/")
    return f"{scheme}://{api_host(netloc)}/{name}{API_PATH}"


def error_object(body: Any) -> Optional[str]:
    """``"code: message"`` when ``body`` is a ConnectWise error object (even under HTTP 200), else None."""
    if isinstance(body, dict) and "code" in body and "message" in body:
        return f"{body.get('code')}: {body.get('message')}"
    return None


def today_utc() -> date:
    return datetime.now(timezone.utc).date()


class ConnectWiseClient(PsaClient):
    kind = "connectwise"
    terms = TERMS

    def __init__(
        self,
        settings: PsaSettings,
        *,
        billing_date: Optional[date] = None,
        zone: Any = None,
        backoff: float = 0.5,
        max_wait: float = 60.0,
    ) -> None:
        missing = [k for k in ("url", "company", "public_key", "client_id") if not getattr(settings, k)]
        if missing:
            raise ConfigError(f"[psa] kind = \"connectwise\" needs {', '.join(missing)}")
        self.url = str(settings.url)
        scheme, self._site, given = parse_url(self.url)  # a bad URL is refused before the key is read
        self._scheme = scheme
        check_url(given or f"{scheme}://{self._site}/")
        secret = resolve(settings.private_key)
        self.company = str(settings.company)
        # The date the lines must be billing on; the run passes the account's date.
        self.billing_date = billing_date or today_utc()
        self._base: Optional[str] = given
        self._base_lock = threading.Lock()
        public_key = str(settings.public_key)
        token = base64.b64encode(f"{self.company}+{public_key}:{secret}".encode("utf-8")).decode("ascii")
        redact.register(secret, token)  # before any request: the token is a credential of its own
        common: Dict[str, Any] = dict(
            timeout=settings.timeout,
            max_retries=settings.max_retries,
            ca_file=str(settings.ca_file) if settings.ca_file else None,
            ca_label="[psa] ca_file",
            backoff=backoff,
            max_wait=max_wait,
        )
        self.concurrency = settings.concurrency
        self.http = HttpClient(
            headers={
                "Authorization": f"Basic {token}",
                "clientId": str(settings.client_id),
                "Accept": f"application/vnd.connectwise.com+json; version={settings.api_version or DEFAULT_API_VERSION}",
                "Content-Type": "application/json",
            },
            secrets=[secret, token],
            concurrency=settings.concurrency,
            **common,
        )
        # companyinfo needs no credentials, so it never gets them.
        self._login = HttpClient(headers={"Accept": "application/json"}, secrets=[secret, token], concurrency=1,
                                 **common)
        self._pool = ThreadPoolExecutor(max_workers=max(1, settings.concurrency), thread_name_prefix="psabill-cw")
        self._closed: Dict[str, str] = {}  # agreement id -> why a change now lands on an ended cycle's invoice
        self._cycles: Optional[Dict[int, str]] = None  # billing cycle id -> billingOptions
        self._cycles_lock = threading.Lock()

    @property
    def request_count(self) -> int:
        return self.http.request_count + self._login.request_count

    @property
    def base(self) -> str:
        """The API base, discovering the codebase first when ``[psa] url`` named only a host."""
        if self._base is None:
            with self._base_lock:
                if self._base is None:
                    self._base = self._discover()
        return self._base

    def _discover(self) -> str:
        url = f"{self._scheme}://{self._site}/login/companyinfo/{quote(self.company, safe='')}"
        where = f"GET {self._scheme}://{self._site}/login/companyinfo/{self.company}"
        info = self._login.get_json(url)
        problem = error_object(info)
        codebase = info.get("Codebase") if isinstance(info, dict) else None
        if problem or not isinstance(codebase, str) or not codebase.strip():
            raise RemoteError(self.http.scrub(
                f"{where}: no codebase for company {self.company!r}"
                + (f" ({problem})" if problem else "")
                + "; check [psa] company, or give the full API URL in [psa] url"))
        return api_base(self.url, codebase)

    # -- reads -------------------------------------------------------------

    def check(self) -> str:
        base = self.base
        info = self.http.get_json(base + "/system/info")
        problem = error_object(info)
        if problem or not isinstance(info, dict) or "version" not in info:
            raise RemoteError(f"GET /system/info: HTTP 200 but not the system info: {problem or repr(info)[:200]}")
        return f"ConnectWise PSA {info['version']} at {base} (company {self.company})"

    def companies(self, wanted: Sequence[str]) -> List[Company]:
        """Companies whose identifier or name is wanted; a deleted company (``deletedFlag``) never matches."""
        keys = {w.casefold() for w in wanted}
        fields = "id,identifier,name,deletedFlag"
        live = "deletedFlag=false"
        values = sorted(set(wanted))
        if not values:
            return []
        if len(values) > LIST_ALL_OVER or not _quotable(values):
            conditions: List[str] = [live]
        else:
            conditions = [f"({field} in ({_strings(batch)})) and {live}"
                          for field in ("identifier", "name")
                          for batch in _url_batches(values, self._url_used(
                              "/company/companies", fields, f"({field} in ()) and {live}"))]
        found: Dict[str, Company] = {}
        for rows in self._lists("/company/companies", conditions, fields):
            for row in rows:
                if row.get("deletedFlag"):
                    continue  # left out of matching: a deleted company never makes a name ambiguous
                company = _company(row)
                if company.identifier.casefold() in keys or company.name.strip().casefold() in keys:
                    found[company.id] = company
        return sorted(found.values(), key=lambda c: int(c.id) if c.id.isdigit() else 0)

    def agreements(self, company_ids: Sequence[str]) -> List[Agreement]:
        """Active, uncancelled agreements of the companies."""
        wanted = {_numeric(i, "company id") for i in company_ids}
        if not wanted:
            return []
        active = 'agreementStatus="Active" and cancelledFlag=false'
        fields = "id,name,company,agreementStatus,cancelledFlag,billingCycle,nextInvoiceDate"
        if len(wanted) > LIST_ALL_OVER:
            conditions = [active]
        else:
            ids = [str(i) for i in sorted(wanted)]
            used = self._url_used("/finance/agreements", fields, f"company/id in () and {active}")
            conditions = [f"company/id in ({','.join(batch)}) and {active}"
                          for batch in _url_batches(ids, used, quoted=False)]
        result = []
        for rows in self._lists("/finance/agreements", conditions, fields):
            for row in rows:
                company_id = (row.get("company") or {}).get("id")
                # Filter again here: the list-all path fetched every company's agreements.
                if company_id in wanted and row.get("agreementStatus") == "Active" and not row.get("cancelledFlag"):
                    result.append(Agreement(id=str(_numeric(row["id"], "agreement id")), company_id=str(company_id),
                                            name=str(row.get("name", ""))))
                    closed = self._closed_cycle(row)
                    if closed:
                        self._closed[result[-1].id] = closed
        return sorted(result, key=lambda a: int(a.id))

    def _closed_cycle(self, row: Mapping[str, Any]) -> str:
        """Why a change now would land on this agreement's invoice for an ended billing cycle ("" if it would not)."""
        try:
            due = _day(row.get("nextInvoiceDate"), "nextInvoiceDate")
        except RemoteError:
            return ""  # a plain string in the spec, its format unpublished: unread, no finding
        cycle = (row.get("billingCycle") or {}).get("id")
        if due is None or due > self.billing_date or not isinstance(cycle, int):
            return ""
        options = self._billing_cycles().get(cycle, "")
        if options in CYCLE_MONTHS:
            ends = _add_months(due, CYCLE_MONTHS[options]) - timedelta(days=1)
        elif options in CYCLE_DAYS:
            ends = due + timedelta(days=CYCLE_DAYS[options] - 1)
        else:
            return ""  # NotRecurring, or a recurrence psabill does not know
        if ends >= self.billing_date:
            return ""  # the invoice due is for the cycle that holds the billing date
        return (f"agreement #{row.get('id')} has not yet invoiced its {options} billing cycle from {due.isoformat()} "
                f"to {ends.isoformat()} (next invoice date {due.isoformat()}): a quantity changed now lands on that "
                "invoice, for a period that has ended")

    def _billing_cycles(self) -> Dict[int, str]:
        """Billing cycle id -> its recurrence (``billingOptions``), read once, when an invoice is due."""
        with self._cycles_lock:
            if self._cycles is None:
                self._cycles = {int(row["id"]): str(row.get("billingOptions") or "")
                                for row in self._list("/finance/billingCycles", None, "id,billingOptions")
                                if isinstance(row.get("id"), int)}
            return self._cycles

    def _url_used(self, path: str, fields: str, empty: str) -> int:
        """The length of a list URL whose conditions are ``empty`` (an ``in ()`` with no values), as sent."""
        query = urlencode({"pageSize": PAGE_SIZE, "page": 1, "fields": fields, "conditions": empty})
        return len(f"{self.base}{path}?{query}")

    def billing_condition(self) -> str:
        """Additions billing on the billing date: effective on or before it, not cancelled on or before it.

        Dates are whole days: comparing with the next midnight keeps a date
        stored with a time of day (``2026-12-01T05:00:00Z``) on its own day.
        """
        after = _stamp(self.billing_date + timedelta(days=1))
        return f"effectiveDate<[{after}] and (cancelledDate=null or cancelledDate>=[{after}])"

    def lines(self, agreements: Sequence[Agreement], products: Sequence[str]) -> Lines:
        """Each agreement's additions, read one agreement at a time (no cross-agreement endpoint), side by side.

        Product identifiers are compared ignoring case, as ConnectWise's own
        conditions do; the line carries the [products] spelling.
        """
        spelled = {p.casefold(): p for p in products}
        by_agreement: Dict[str, List[Line]] = {}
        unreadable: Dict[str, str] = {}

        def read(agreement: Agreement) -> Tuple[Agreement, Any]:
            try:
                return agreement, self._additions(agreement, spelled)
            except (Unreachable, AuthRefused):
                raise
            except RemoteError as exc:  # one unreadable agreement must not sink the rest
                return agreement, exc

        for agreement, found in _ahead(self._pool, read, agreements):
            if isinstance(found, Exception):
                unreadable[agreement.id] = str(found)
            else:
                by_agreement[agreement.id] = found
        return Lines(by_agreement, unreadable=unreadable)

    def _additions(self, agreement: Agreement, spelled: Mapping[str, str]) -> List[Line]:
        aid = _numeric(agreement.id, "agreement id")
        result = []
        fields = "id,product,quantity,effectiveDate,cancelledDate,billCustomer"
        for row in self._list(f"/finance/agreements/{aid}/additions", self.billing_condition(), fields):
            identifier = (row.get("product") or {}).get("identifier")
            product = spelled.get(str(identifier).casefold()) if identifier else None
            # Checked here too: a line that is not billing today must never be written.
            if product is None or not _bills_on(row, self.billing_date, f"addition {row.get('id')}"):
                continue
            xid = str(_numeric(row["id"], "addition id"))
            note, problem, value = "", "", None
            try:
                value = exact_quantity(row.get("quantity"), f"addition {xid} quantity")
            except RemoteError as exc:
                problem = f"{exc}: ConnectWise did not say how many seats it bills; nothing is written to it"
            if row.get("billCustomer") in NOT_BILLED:
                note = (f"addition {xid} is billCustomer = {row['billCustomer']}: its quantity is kept in step, "
                        "but it invoices nothing")
            closed = self._closed.get(str(aid), "")
            result.append(Line(id=xid, agreement_id=str(aid), product=product, quantity=value,
                               note="; ".join(n for n in (note, closed) if n), problem=problem, closed=closed))
        return result

    # -- the write ---------------------------------------------------------

    def write(self, targets: Sequence[Target], *, halt: Callable[[], bool], sending: Sending) -> Iterator[Written]:
        """One idempotent PATCH per target, ``concurrency`` at a time; ``sending`` sees each chunk first."""
        stop = threading.Event()
        queue = list(targets)
        chunk = max(1, self.concurrency * WRITE_WINDOW)
        in_flight: Dict["Future[Written]", Target] = {}

        def go() -> bool:
            return not stop.is_set() and not halt()

        while queue or in_flight:
            while queue and len(in_flight) < chunk and go():
                batch, queue = queue[:chunk], queue[chunk:]
                try:
                    sending(batch)
                except Stop as exc:
                    stop.set()
                    for target in batch:
                        yield not_written(target, str(exc) or "the run stopped")
                    break
                for target in batch:
                    in_flight[self._pool.submit(self._patch, target, go, stop)] = target
            if not in_flight:
                break
            done, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
            for future in done:
                target = in_flight.pop(future)
                yield future.result()
        for target in queue:  # stopped before they were handed over
            yield not_written(target, "ConnectWise became unreachable, refused the credentials, or the run stopped")

    def _patch(self, target: Target, go: Callable[[], bool], stop: threading.Event) -> Written:
        line = target.line
        if isinstance(target.new, bool) or not isinstance(target.new, int) or target.new < 0:
            return Written(target.key, FAILED, None, f"refusing to set quantity {target.new!r}: not a whole number >= 0")
        aid = _numeric(line.agreement_id, "agreement id")
        xid = _numeric(line.id, "addition id")
        url = f"{self.base}/finance/agreements/{aid}/additions/{xid}"
        where = f"PATCH addition {xid}"
        try:
            response = self.http.request("PATCH", url, json=[{"op": "replace", "path": "quantity",
                                                              "value": target.new}], go=go)
            body = self.http.json_of(response, where)
        except Halted:
            return not_written(target, "the run stopped before this addition was sent")
        except AuthRefused as exc:
            stop.set()
            return not_written(target, f"ConnectWise refused the credentials: {exc}")
        except Unreachable as exc:
            stop.set()  # it may have landed: the run reads it back before saying anything
            return Written(target.key, UNKNOWN, None, f"sent, but no answer came: {exc}", transient=True)
        except RemoteError as exc:
            return Written(target.key, FAILED, None, f"update failed: {exc}", transient=exc.transient,
                           hint="check the addition in ConnectWise, then re-run; other updates are kept")
        problem = error_object(body)
        if problem:
            return Written(target.key, FAILED, None, self.http.scrub(
                f"HTTP {response.status_code} but ConnectWise answered an error: {problem}; not written"),
                hint="check the addition in ConnectWise, then re-run; other updates are kept")
        if not isinstance(body, dict) or "quantity" not in body or ("id" in body and str(body["id"]) != str(xid)):
            return Written(target.key, UNKNOWN, None, f"{where}: ConnectWise's answer is not this addition with its "
                           "quantity; the write is unconfirmed", transient=True)
        try:
            got = exact_quantity(body["quantity"], f"{where}: quantity")
        except RemoteError as exc:
            return Written(target.key, UNKNOWN, None, f"{exc}; the write is unconfirmed", transient=True)
        if got != target.new:
            return Written(target.key, FAILED, got, f"{where}: ConnectWise answered quantity {got}, not {target.new}")
        return Written(target.key, UPDATED, target.old, line.note)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.http.close()
        self._login.close()

    # -- paging ------------------------------------------------------------

    def _lists(self, path: str, conditions: Sequence[str], fields: str) -> Iterator[Any]:
        """The rows of each condition's list: side by side when there are several (short ``in`` batches),
        streamed a page at a time when there is one (everything listed: a whole book is never held)."""
        if len(conditions) == 1:
            return iter([self._list(path, conditions[0], fields)])
        return _ahead(self._pool, lambda c: list(self._list(path, c, fields)), conditions)

    def _list(self, path: str, conditions: Optional[str], fields: str) -> Iterator[Dict[str, Any]]:
        """Every row of a list, page by page; a next link that repeats rows or never ends is refused."""
        first: Dict[str, Any] = {"pageSize": PAGE_SIZE, "page": 1, "fields": fields}
        if conditions:
            first["conditions"] = conditions
        params: Optional[Dict[str, Any]] = first
        base = self.base
        url = base + path
        seen_links = set()
        seen_ids: set = set()
        for _ in range(MAX_PAGES):
            response = self.http.request("GET", url, params=params)
            rows = self.http.json_of(response, f"GET {path}")
            if not isinstance(rows, list):
                problem = error_object(rows)
                raise RemoteError(f"GET {path}: expected a JSON list, got "
                                  + (f"an error: {problem}" if problem else type(rows).__name__))
            fresh = 0
            for row in rows:
                if isinstance(row, dict) and "id" in row:
                    key = str(row["id"])
                    if key in seen_ids:
                        continue
                    seen_ids.add(key)
                    fresh += 1
                    yield row
            if rows and not fresh:
                raise RemoteError(f"GET {path}: ConnectWise's next page repeats rows already read; the read stops "
                                  "here and nothing is written")
            link = response.links.get("next", {}).get("url")
            if not link or not rows:
                return
            following = rebase(link, base)
            if following in seen_links:
                raise RemoteError(f"GET {path}: paging link repeats itself; nothing is written")
            seen_links.add(following)
            url, params = following, None
        raise RemoteError(f"GET {path}: more than {MAX_PAGES} pages of {PAGE_SIZE}: the paging never ends; "
                          "nothing is written")


def _url_batches(values: Sequence[str], used: int, *, quoted: bool = True) -> Iterator[List[str]]:
    """``values`` in batches whose ``in (...)`` list keeps the URL within :data:`URL_BUDGET` (percent-encoded)."""
    room = max(200, URL_BUDGET - used)
    batch: List[str] = []
    size = 0
    for value in values:
        cost = len(quote(f'"{value}"' if quoted else value, safe="")) + 3  # the value and its comma, encoded
        if batch and size + cost > room:
            yield batch
            batch, size = [], 0
        batch.append(value)
        size += cost
    if batch:
        yield batch


def _stamp(day: date) -> str:
    return f"{day.isoformat()}T00:00:00Z"


def _add_months(day: date, months: int) -> date:
    year, month = divmod(day.month - 1 + months, 12)
    year += day.year
    return date(year, month + 1, min(day.day, calendar.monthrange(year, month + 1)[1]))


def _day(value: Any, what: str) -> Optional[date]:
    """The calendar date of a ConnectWise date-time (``2026-12-01T00:00:00Z``); None for null."""
    if value in (None, ""):
        return None
    try:
        return date.fromisoformat(str(value)[:10])
    except ValueError:
        raise RemoteError(f"{what}: {value!r} is not a date") from None


def _bills_on(row: Mapping[str, Any], day: date, what: str) -> bool:
    effective = _day(row.get("effectiveDate"), f"{what} effectiveDate")
    cancelled = _day(row.get("cancelledDate"), f"{what} cancelledDate")
    return (effective is None or effective <= day) and (cancelled is None or cancelled > day)


def _company(row: Mapping[str, Any]) -> Company:
    return Company(id=str(row["id"]), identifier=str(row.get("identifier") or ""), name=str(row.get("name") or ""))


def _quotable(values: Sequence[str]) -> bool:
    # ConnectWise's escaping rules for quotes inside condition strings are not
    # documented; such values go through the list-all path instead.
    return all('"' not in v and "\\" not in v for v in values)


def _strings(values: Sequence[str]) -> str:
    return ",".join(f'"{v}"' for v in values)


def _ahead(pool: ThreadPoolExecutor, fn: Callable[[Any], Any], items: Sequence[Any],
           ahead: int = AHEAD) -> Iterator[Any]:
    """``pool.map(fn, items)`` that keeps at most ``ahead`` calls submitted beyond the one it yields."""
    pending: "deque[Future[Any]]" = deque()
    try:
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) > ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:  # as pool.map: an error (or a consumer that stopped) cancels the rest
            future.cancel()


def _numeric(value: Any, what: str) -> int:
    return numeric_id(value, f"ConnectWise {what}")
