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
"""

from __future__ import annotations

import base64
import re
import threading
from datetime import date, datetime, timedelta, timezone
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import quote, urlsplit

from psabill.text import redact
from psabill.errors import ConfigError
from psabill.config.settings import PsaSettings
from psabill.psa.base import CONNECTWISE_TERMS, Agreement, Company, Line, PsaError, Quantity, Run
from psabill.net.http import HttpClient, batches, check_url, numeric_id, quantity as exact_quantity, rebase

API_PATH = "/apis/3.0"
DEFAULT_API_VERSION = "2025.1"
PAGE_SIZE = 1000  # ConnectWise's maximum; read at call time, so a test may lower it
BATCH = 50  # values per `in (...)` condition: keeps the query string well under URL limits
LIST_ALL_OVER = 200  # more values than this: page through everything instead of batching
MAX_PAGES = 10_000  # a PSA that keeps linking "next" forever is a bug, not a big book
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
        raise PsaError(f"url {url!r} is not a ConnectWise host or API URL")
    if not path:
        return scheme, netloc, None
    if path.lower().endswith(API_PATH):
        return scheme, netloc, f"{scheme}://{netloc}{path}"
    if _CODEBASE.match(path):  # ".../v2025_1": the codebase without the API path
        return scheme, netloc, f"{scheme}://{netloc}{path}{API_PATH}"
    raise PsaError(f"url {url!r}: give the host (na.myconnectwise.net) or the full API URL "
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
        raise PsaError(f"codebase {codebase!r} is not a ConnectWise codebase such as v2025_1/")
    return f"{scheme}://{api_host(netloc)}/{name}{API_PATH}"


def error_object(body: Any) -> Optional[str]:
    """``"code: message"`` when ``body`` is a ConnectWise error object (even under HTTP 200), else None."""
    if isinstance(body, dict) and "code" in body and "message" in body:
        return f"{body.get('code')}: {body.get('message')}"
    return None


def today_utc() -> date:
    return datetime.now(timezone.utc).date()


class ConnectWiseClient:
    kind = "connectwise"
    terms = CONNECTWISE_TERMS
    bulk_lines = False  # no cross-agreement additions endpoint
    budgeted = False
    bulk_writes = False  # one idempotent PATCH per line, in parallel
    write_batch = 1

    def __init__(
        self,
        settings: PsaSettings,
        secret: str,
        *,
        billing_date: Optional[date] = None,
        backoff: float = 0.5,
        max_wait: float = 60.0,
    ) -> None:
        missing = [k for k in ("url", "company", "public_key", "client_id") if not getattr(settings, k)]
        if missing:
            raise ConfigError(f"[psa] kind = \"connectwise\" needs {', '.join(missing)}")
        if not secret:
            raise ConfigError("[psa] the ConnectWise private key is empty")
        self.url = str(settings.url)
        scheme, self._site, given = parse_url(self.url)
        self._scheme = scheme
        self.company = str(settings.company)
        # The date the lines must be billing on; the run passes the account's date.
        self.billing_date = billing_date or today_utc()
        self._base: Optional[str] = given
        self._base_lock = threading.Lock()
        check_url(given or f"{scheme}://{self._site}/")
        public_key = str(settings.public_key)
        version = settings.api_version or DEFAULT_API_VERSION
        token = base64.b64encode(f"{self.company}+{public_key}:{secret}".encode("utf-8")).decode("ascii")
        redact.register(secret, token)  # before any request: the token is a credential of its own
        common: Dict[str, Any] = dict(
            timeout=settings.timeout,
            max_retries=settings.max_retries,
            ca_file=str(settings.ca_file) if settings.ca_file else None,
            backoff=backoff,
            max_wait=max_wait,
        )
        self.http = HttpClient(
            headers={
                "Authorization": f"Basic {token}",
                "clientId": str(settings.client_id),
                "Accept": f"application/vnd.connectwise.com+json; version={version}",
                "Content-Type": "application/json",
            },
            secrets=[secret, token],
            concurrency=settings.concurrency,
            **common,
        )
        # companyinfo needs no credentials, so it never gets them.
        self._login = HttpClient(headers={"Accept": "application/json"}, secrets=[secret, token], concurrency=1,
                                 **common)

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
            raise PsaError(self.http.scrub(
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
            raise PsaError(f"GET /system/info: HTTP 200 but not the system info: {problem or repr(info)[:200]}")
        return f"ConnectWise PSA {info['version']} at {base} (company {self.company})"

    def companies(self, identifiers: Sequence[str] = (), names: Sequence[str] = (), run: Run = map) -> List[Company]:
        """Companies by identifier or name; the queries are independent and go through ``run``."""
        ids = {i.lower() for i in identifiers}
        wanted_names = {n.lower() for n in names}
        fields = "id,identifier,name"
        if not ids and not wanted_names:
            return [_company(r) for r in self._list("/company/companies", None, fields)]
        conditions: List[Optional[str]] = []
        if len(ids) + len(wanted_names) > LIST_ALL_OVER or not _quotable(list(identifiers) + list(names)):
            conditions.append(None)
        else:
            for field, values in (("identifier", sorted(set(identifiers))), ("name", sorted(set(names)))):
                conditions.extend(f"{field} in ({_strings(batch)})" for batch in batches(values, BATCH))
        found: Dict[str, Company] = {}
        for rows in run(lambda condition: list(self._list("/company/companies", condition, fields)), conditions):
            for row in rows:
                company = _company(row)
                if company.identifier.lower() in ids or company.name.lower() in wanted_names:
                    found[company.id] = company
        return sorted(found.values(), key=lambda c: int(c.id) if c.id.isdigit() else 0)

    def agreements(self, company_ids: Sequence[str], run: Run = map) -> List[Agreement]:
        """Active agreements of the companies; the queries are independent and go through ``run``."""
        wanted = {_numeric(i, "company id") for i in company_ids}
        if not wanted:
            return []
        active = 'agreementStatus="Active" and cancelledFlag=false'
        fields = "id,name,company,agreementStatus,cancelledFlag"
        if len(wanted) > LIST_ALL_OVER:
            conditions = [active]
        else:
            conditions = [f"company/id in ({','.join(str(i) for i in batch)}) and {active}"
                          for batch in batches(sorted(wanted), BATCH)]
        result = []
        for rows in run(lambda condition: list(self._list("/finance/agreements", condition, fields)), conditions):
            for row in rows:
                company_id = (row.get("company") or {}).get("id")
                # Filter again here: the list-all path fetched every company's agreements.
                if company_id in wanted and row.get("agreementStatus") == "Active" and not row.get("cancelledFlag"):
                    result.append(Agreement(id=str(row["id"]), company_id=str(company_id),
                                            name=str(row.get("name", ""))))
        return sorted(result, key=lambda a: int(a.id))

    def billing_condition(self) -> str:
        """Additions billing on the billing date: effective on or before it, not cancelled on or before it.

        Dates are whole days: comparing with the next midnight keeps a date
        stored with a time of day (``2026-12-01T05:00:00Z``) on its own day.
        """
        after = _stamp(self.billing_date + timedelta(days=1))
        return f"effectiveDate<[{after}] and (cancelledDate=null or cancelledDate>=[{after}])"

    def lines(self, agreement: Agreement) -> List[Line]:
        aid = _numeric(agreement.id, "agreement id")
        path = f"/finance/agreements/{aid}/additions"
        result = []
        fields = "id,product,quantity,effectiveDate,cancelledDate"
        for row in self._list(path, self.billing_condition(), fields):
            product = (row.get("product") or {}).get("identifier")
            # Checked here too: a line that is not billing today must never be written.
            if not product or not _bills_on(row, self.billing_date, f"addition {row.get('id')}"):
                continue
            result.append(Line(id=str(row["id"]), agreement_id=str(aid), product=str(product),
                               quantity=exact_quantity(row.get("quantity"), f"addition {row['id']} quantity")))
        return result

    def lines_for(self, agreements: Sequence[Agreement], run: Any = map) -> Dict[str, List[Line]]:
        raise NotImplementedError("ConnectWise reads additions one agreement at a time")

    def ensure_budget(self, planned: int) -> None:
        """ConnectWise has no shared hourly allowance to guard."""

    def read_ahead(self, targets: Sequence[Tuple[Line, int]], run: Any = map) -> Any:
        raise NotImplementedError("ConnectWise writes one line at a time (set_quantity)")

    def post_batch(self, targets: Sequence[Tuple[Line, int]], run: Any = map, ahead: Any = None,
                   halt: Any = None) -> Any:
        raise NotImplementedError("ConnectWise writes one line at a time (set_quantity)")

    def verify_batch(self, posted: Any, run: Any = map) -> Any:
        raise NotImplementedError("ConnectWise writes one line at a time (set_quantity)")

    def write_capacity(self, writes: int) -> Tuple[int, str]:
        raise NotImplementedError("ConnectWise has no hourly allowance")

    def resolve_products(self, values: Sequence[str]) -> Tuple[Dict[str, str], Dict[str, str]]:
        """ConnectWise products are named by their identifier as given."""
        return {value: value for value in values}, {}

    def missing_note(self, agreement_id: str, product: str) -> Optional[str]:
        """ConnectWise has nothing to add to "not on the agreement"."""
        return None

    # -- the write ---------------------------------------------------------

    def set_quantity(self, line: Line, quantity: int) -> Quantity:
        if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 0:
            raise PsaError(f"refusing to set quantity {quantity!r} on addition {line.id}: not a whole number >= 0")
        aid = _numeric(line.agreement_id, "agreement id")
        xid = _numeric(line.id, "addition id")
        url = f"{self.base}/finance/agreements/{aid}/additions/{xid}"
        response = self.http.request("PATCH", url, json=[{"op": "replace", "path": "quantity", "value": quantity}])
        where = f"PATCH addition {xid}"
        body = self.http.json_of(response, where)
        problem = error_object(body)
        if problem:
            raise PsaError(self.http.scrub(f"{where}: HTTP {response.status_code} but ConnectWise answered an "
                                           f"error: {problem}; the quantity is unconfirmed"))
        if not isinstance(body, dict) or "quantity" not in body:
            raise PsaError(f"{where}: ConnectWise's answer does not carry the addition's quantity; "
                           f"the write is unconfirmed")
        if "id" in body and str(body["id"]) != str(xid):
            raise PsaError(f"{where}: ConnectWise answered with addition {body['id']!r}, not {xid}")
        got = exact_quantity(body["quantity"], f"{where}: quantity")
        if got != quantity:
            raise PsaError(f"{where}: ConnectWise answered quantity {body['quantity']!r}, not {quantity}")
        return line.quantity

    def close(self) -> None:
        self.http.close()
        self._login.close()

    # -- paging ------------------------------------------------------------

    def _list(self, path: str, conditions: Optional[str], fields: str) -> Iterator[Dict[str, Any]]:
        first: Dict[str, Any] = {"pageSize": PAGE_SIZE, "page": 1, "fields": fields}
        if conditions:
            first["conditions"] = conditions
        params: Optional[Dict[str, Any]] = first
        base = self.base
        url = base + path
        seen = set()
        for _ in range(MAX_PAGES):
            response = self.http.request("GET", url, params=params)
            rows = self.http.json_of(response, f"GET {path}")
            if not isinstance(rows, list):
                problem = error_object(rows)
                raise PsaError(f"GET {path}: expected a JSON list, got "
                               + (f"an error: {problem}" if problem else type(rows).__name__))
            for row in rows:
                if isinstance(row, dict) and "id" in row:
                    yield row
            link = response.links.get("next", {}).get("url")
            if not link or not rows:
                return
            following = rebase(link, base)
            if following in seen:
                raise PsaError(f"GET {path}: paging link repeats itself")
            seen.add(following)
            url, params = following, None
        raise PsaError(f"GET {path}: more than {MAX_PAGES} pages")


def _stamp(day: date) -> str:
    return f"{day.isoformat()}T00:00:00Z"


def _day(value: Any, what: str) -> Optional[date]:
    """The calendar date of a ConnectWise date-time (``2026-12-01T00:00:00Z``); None for null."""
    if value in (None, ""):
        return None
    try:
        return date.fromisoformat(str(value)[:10])
    except ValueError:
        raise PsaError(f"{what}: {value!r} is not a date") from None


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


def _numeric(value: str, what: str) -> int:
    return numeric_id(value, f"ConnectWise {what}")
