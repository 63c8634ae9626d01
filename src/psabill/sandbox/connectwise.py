"""A ConnectWise-compatible PSA sandbox: a real HTTP server on loopback.

It serves exactly what :class:`psabill.psa.connectwise.ConnectWiseClient`
uses, so the demo, the tests and a dry drill all talk HTTP to something that
pages, filters, throttles and fails like the real thing:

* ``GET  /login/companyinfo/{company}`` (no credentials; advertises ``Codebase``)
* ``GET  /{codebase}apis/3.0/system/info`` (the codebase is configurable:
  ``v2025_1/`` like a cloud server by default, ``v4_6_release/`` like on-premises)
* ``GET  .../company/companies``
* ``GET  .../finance/agreements``
* ``GET  .../finance/agreements/{id}/additions``
* ``PATCH .../finance/agreements/{id}/additions/{id}`` (JSON Patch on ``quantity``)
* ``GET  .../finance/billingCycles`` (the Billing Cycle setup table: ``billingOptions``)

Agreements carry ``billingCycle`` ``{id, name}`` and ``nextInvoiceDate`` (a
plain string in cw-api.json; ``None`` until a test sets it).

Lists honour ``page``/``pageSize`` (default 25, max 1000, like ConnectWise)
with a ``Link`` header. Forward-only paging, as the Developer Guide describes
it: only with the request header ``pagination-type: forward-only``, ``pageId``
is "an additional condition of Id > pageId" and the ``Link`` header names the
next ``pageId``; without the header ``pageId`` is ignored ("it will use the
default navigable paging method"). ``paging_fault = "repeat"`` makes every
next link point at the first page (a PSA whose paging loops). Lists honour
``fields`` (top-level names) and ``conditions`` in the
subset the client sends: ``=``, ``!=``, ``<``, ``<=``, ``>``, ``>=``,
``in (...)``, ``not in (...)``, ``and``, ``or``, parentheses, double-quoted
strings (backslash escapes), numbers, ``true``/``false``/``null``, dates in
brackets (``[2026-12-01T00:00:00Z]``) and nested paths such as ``company/id``. String comparison ignores case, as SQL Server's
default collation (and so ConnectWise) does.

The test machinery (latency, faults, request log) comes from
:class:`psabill.sandbox.server.LoopbackServer`.
"""

from __future__ import annotations

import base64
import random
import re
import threading
import zlib
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple
from datetime import datetime, timezone
from urllib.parse import unquote, urlencode

from psabill.sandbox.server import BadRequest, LoopbackServer, Reply, Request

DEFAULT_CODEBASE = "v2025_1/"
DEFAULT_PAGE_SIZE = 25
MAX_PAGE_SIZE = 1000

def lookup(record: Any, path: str) -> Any:
    node = record
    for part in path.split("/"):
        if not isinstance(node, dict):
            return None
        matched = next((k for k in node if k.lower() == part.lower()), None)
        if matched is None:
            raise BadRequest(f"Unknown field {path!r}")
        node = node[matched]
    return node


# -- ConnectWise `conditions` -------------------------------------------------

_TOKEN = re.compile(r"""
    \s*(?:
      (?P<str>"(?:[^"\\]|\\.)*")
    | (?P<date>\[[^\]]*\])
    | (?P<num>-?\d+(?:\.\d+)?)(?![\w/])
    | (?P<op><=|>=|!=|=|<|>)
    | (?P<paren>[(),])
    | (?P<word>[A-Za-z_][\w/]*)
    )""", re.VERBOSE)

_Predicate = Callable[[Any], bool]


def _tokens(text: str) -> List[Tuple[str, Any]]:
    out: List[Tuple[str, Any]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise BadRequest(f"conditions: unexpected text at {pos}: {text[pos:pos + 20]!r}")
        pos = m.end()
        kind = m.lastgroup or ""
        value = m.group(kind)
        if kind == "str":
            out.append(("value", re.sub(r"\\(.)", r"\1", value[1:-1])))
        elif kind == "date":
            out.append(("value", _Date(_instant(value[1:-1]))))
        elif kind == "num":
            out.append(("value", float(value) if "." in value else int(value)))
        elif kind == "word" and value.lower() in ("true", "false", "null"):
            out.append(("value", {"true": True, "false": False, "null": None}[value.lower()]))
        elif kind == "word" and value.lower() in ("and", "or", "in", "not"):
            out.append((value.lower(), value))
        else:
            out.append((kind, value))
    return out


def parse_conditions(text: str) -> _Predicate:
    """Compile a ConnectWise ``conditions`` string into a predicate over a record."""
    tokens = _tokens(text)
    pos = 0

    def peek() -> str:
        return tokens[pos][0] if pos < len(tokens) else "end"

    def take(kind: str) -> Any:
        nonlocal pos
        if peek() != kind:
            got = tokens[pos][1] if pos < len(tokens) else "end of text"
            raise BadRequest(f"conditions: expected {kind}, got {got!r}")
        pos += 1
        return tokens[pos - 1][1]

    def expr() -> _Predicate:
        parts = [conj()]
        while peek() == "or":
            take("or")
            parts.append(conj())
        return parts[0] if len(parts) == 1 else (lambda r: any(p(r) for p in parts))

    def conj() -> _Predicate:
        parts = [atom()]
        while peek() == "and":
            take("and")
            parts.append(atom())
        return parts[0] if len(parts) == 1 else (lambda r: all(p(r) for p in parts))

    def atom() -> _Predicate:
        if peek() == "paren" and tokens[pos][1] == "(":
            take("paren")
            inner = expr()
            _close()
            return inner
        path = take("word")
        negate = False
        if peek() == "not":
            take("not")
            negate = True
        if peek() == "in":
            take("in")
            if take("paren") != "(":
                raise BadRequest("conditions: expected ( after in")
            values = [take("value")]
            while peek() == "paren" and tokens[pos][1] == ",":
                take("paren")
                values.append(take("value"))
            _close()
            keys = {_key(v) for v in values}
            return lambda r: (_key(lookup(r, path)) in keys) != negate
        if negate:
            raise BadRequest("conditions: expected in after not")
        op = take("op")
        value = take("value")
        return lambda r: _compare(lookup(r, path), op, value)

    def _close() -> None:
        if peek() != "paren" or tokens[pos][1] != ")":
            raise BadRequest("conditions: missing )")
        take("paren")

    predicate = expr()
    if pos != len(tokens):
        raise BadRequest(f"conditions: unexpected {tokens[pos][1]!r}")
    return predicate


class _Date:
    """A bracketed date literal: it compares with stored date-time strings as an instant."""

    def __init__(self, instant: datetime) -> None:
        self.instant = instant


def _instant(text: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"conditions: {text!r} is not a date") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed


def _key(value: Any) -> Any:
    if isinstance(value, _Date):
        return value.instant
    if isinstance(value, str):
        return value.lower()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _compare(left: Any, op: str, right: Any) -> bool:
    if isinstance(right, _Date) and isinstance(left, str):
        left = _Date(_instant(left))
    a, b = _key(left), _key(right)
    if op == "=":
        return bool(a == b)
    if op == "!=":
        return bool(a != b)
    if a is None or b is None:
        return False
    try:
        return bool({"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op])
    except TypeError:
        raise BadRequest(f"conditions: cannot compare {left!r} {op} {right!r}") from None


# -- the ConnectWise sandbox --------------------------------------------------

SAMPLE_PRODUCTS = ("SEATS-STD", "SEATS-MFA")
FUTURE_CANCELLED = "2099-12-31T00:00:00Z"
FUTURE_EFFECTIVE = "2099-01-01T00:00:00Z"


class Sandbox(LoopbackServer):
    """A ConnectWise PSA on loopback. Data lives in plain dicts under one lock."""

    LOGGED_HEADERS = ("Accept", "Content-Type", "clientId", "pagination-type")

    def __init__(self, *, company: str = "sandbox", public_key: str = "sandbox-public",
                 private_key: str = "sandbox-private", client_id: str = "00000000-0000-4000-8000-000000000000",
                 host: str = "127.0.0.1", port: int = 0, latency_ms: float = 0.0,
                 codebase: str = DEFAULT_CODEBASE) -> None:
        super().__init__(host=host, port=port, latency_ms=latency_ms)
        self.codebase = codebase.strip("/") + "/"  # as companyinfo spells it: "v2025_1/"
        self.company = company
        self.public_key = public_key
        self.private_key = private_key
        self.client_id = client_id
        self.companies: Dict[int, Dict[str, Any]] = {}
        self.agreements: Dict[int, Dict[str, Any]] = {}
        self.additions: Dict[int, Dict[int, Dict[str, Any]]] = {}  # agreement id -> addition id -> addition
        self._next_id = 100
        self.companyinfo_with_credentials = 0  # companyinfo needs none: a client that sends them leaks them
        self.billing_cycles: Dict[int, Dict[str, Any]] = {
            n: {"id": n, "identifier": options[:5].upper(), "name": options, "defaultFlag": n == 1,
                "billingOptions": options}
            for n, options in enumerate(("Monthly", "Quarterly", "Yearly", "Weekly", "NotRecurring"), start=1)}
        self.paging_fault: Optional[str] = None
        self._request = threading.local()  # the request's paging header, seen by authorize(), read by _page()

    # -- data --------------------------------------------------------------

    def _id(self, wanted: Optional[int]) -> int:
        if wanted is not None:
            self._next_id = max(self._next_id, wanted + 1)
            return wanted
        self._next_id += 1
        return self._next_id - 1

    def add_company(self, identifier: str, name: str, *, id: Optional[int] = None,  # noqa: A002
                    deleted: bool = False) -> int:
        with self._lock:
            cid = self._id(id)
            self.companies[cid] = {"id": cid, "identifier": identifier, "name": name, "deletedFlag": deleted}
            return cid

    def add_agreement(self, company_id: int, name: str = "Managed Services", *, status: str = "Active",
                      cancelled: bool = False, id: Optional[int] = None,  # noqa: A002
                      billing_cycle: int = 1, next_invoice: Optional[str] = None) -> int:
        with self._lock:
            company = self.companies[company_id]
            aid = self._id(id)
            cycle = self.billing_cycles[billing_cycle]
            self.agreements[aid] = {
                "id": aid, "name": name, "type": {"id": 1, "name": "Managed Services"},
                "company": {"id": company_id, "identifier": company["identifier"], "name": company["name"]},
                "agreementStatus": status, "cancelledFlag": cancelled,
                "billingCycle": {"id": cycle["id"], "name": cycle["name"]}, "nextInvoiceDate": next_invoice,
            }
            self.additions.setdefault(aid, {})
            return aid

    def add_addition(self, agreement_id: int, product: str, quantity: float, *,
                     effective_date: str = "2024-01-01T00:00:00Z", cancelled_date: Optional[str] = None,
                     id: Optional[int] = None) -> int:  # noqa: A002
        with self._lock:
            xid = self._id(id)
            self.additions.setdefault(agreement_id, {})[xid] = {
                "id": xid, "agreementId": agreement_id,
                "product": {"id": zlib.crc32(product.encode()) % 100000, "identifier": product},
                "quantity": float(quantity), "lessIncluded": 0.0, "unitPrice": 3.0,
                "billCustomer": "Billable", "effectiveDate": effective_date, "cancelledDate": cancelled_date,
            }
            return xid

    def quantity(self, agreement_id: int, addition_id: int) -> float:
        with self._lock:
            return float(self.additions[agreement_id][addition_id]["quantity"])

    @classmethod
    def sample(cls, customers: int = 25, seed: int = 1, products: Sequence[str] = SAMPLE_PRODUCTS,
               **kwargs: Any) -> "Sandbox":
        """A deterministic book of ``customers`` companies, identifiers ``CUST00001``...

        Each company has one active agreement with one addition per product;
        every tenth also has a cancelled agreement and every seventh an
        inactive one (both must be ignored), and a few additions are cancelled.
        Like a live book, every eleventh company's first addition is cancelled
        in the future (``FUTURE_CANCELLED``: still billing, so updated) and
        every seventeenth has a second line for the first product that starts
        in the future (``FUTURE_EFFECTIVE``: not billing yet, never written).
        """
        sb = cls(**kwargs)
        rng = random.Random(seed)
        for n in range(1, customers + 1):
            cid = sb.add_company(f"CUST{n:05d}", f"Customer {n:05d} Ltd")
            aid = sb.add_agreement(cid, "Managed Services")
            for product in products:
                sb.add_addition(aid, product, rng.randint(1, 200))
            if n % 10 == 0:
                old = sb.add_agreement(cid, "Old contract", status="Cancelled", cancelled=True)
                sb.add_addition(old, products[0], rng.randint(1, 50))
            if n % 7 == 0:
                idle = sb.add_agreement(cid, "Paused", status="Inactive")
                sb.add_addition(idle, products[0], rng.randint(1, 50))
            if n % 13 == 0:
                sb.add_addition(aid, products[0], rng.randint(1, 50), cancelled_date="2024-06-30T00:00:00Z")
            if n % 11 == 0:
                first = min(sb.additions[aid])
                sb.additions[aid][first]["cancelledDate"] = FUTURE_CANCELLED
            if n % 17 == 0:
                sb.add_addition(aid, products[0], rng.randint(1, 50), effective_date=FUTURE_EFFECTIVE)
        return sb

    @property
    def api_prefix(self) -> str:
        """The path every API request is under: ``/v2025_1/apis/3.0``."""
        return f"/{self.codebase}apis/3.0"

    @property
    def api_url(self) -> str:
        """The full API base a client should resolve to."""
        return self.url + self.api_prefix

    @property
    def authorization(self) -> str:
        """The Authorization value the sandbox accepts (for checking logged requests)."""
        token = base64.b64encode(f"{self.company}+{self.public_key}:{self.private_key}".encode()).decode()
        return f"Basic {token}"

    def answer_error(self, times: int = 1, *, code: str = "InvalidObject",
                     message: str = "The request could not be processed", method: Optional[str] = None,
                     endpoint: Optional[str] = None) -> None:
        """Answer the next ``times`` matching requests with HTTP 200 and an error object, as live
        ConnectWise (or a proxy in front of it) sometimes does: the write did not happen."""
        self.fail(200, times, body={"code": code, "message": message}, method=method, endpoint=endpoint)

    def patches(self) -> List[Request]:
        """The PATCH requests answered so far, in order: what a run actually wrote."""
        return [r for r in self.requests if r.method == "PATCH"]

    def config_section(self) -> Dict[str, Any]:
        """A ``[psa]`` config section (minus the private key) that points at this sandbox."""
        return {"kind": "connectwise", "url": self.url, "company": self.company,
                "public_key": self.public_key, "client_id": self.client_id}

    # -- HTTP --------------------------------------------------------------

    def endpoint(self, method: str, path: str) -> str:
        if path.startswith(self.api_prefix):
            path = path[len(self.api_prefix) + 1:]
        elif path.lower().startswith("/login/companyinfo/"):
            return f"{method} login/companyinfo"
        return super().endpoint(method, path)

    def authorize(self, headers: Dict[str, str], path: str) -> Optional[Reply]:
        if path.lower().startswith("/login/companyinfo/"):
            if headers.get("authorization"):
                with self._lock:
                    self.companyinfo_with_credentials += 1
            return None  # the login page's lookup needs no credentials
        if headers.get("authorization") != self.authorization:
            return 401, {}, {"code": "Unauthorized", "message": "Authentication failed"}
        if headers.get("clientid") != self.client_id:
            return 403, {}, {"code": "Forbidden", "message": "clientId header is missing or unknown"}
        self._request.forward = headers.get("pagination-type", "").lower() == "forward-only"
        return None

    def route(self, method: str, path: str, query: Dict[str, str], body: Any) -> Reply:
        if method == "GET" and path.lower().startswith("/login/companyinfo/"):
            return self._companyinfo(path.split("/", 3)[3])
        if not path.startswith(self.api_prefix + "/"):
            # A live server answers a codebase it does not run with a 404 too.
            return 404, {}, {"code": "NotFound", "message": "Not found"}
        parts = path[len(self.api_prefix) + 1:].strip("/").split("/")
        if method == "GET" and parts == ["system", "info"]:
            return 200, {}, {"version": "v2025.1.sandbox", "isCloud": False, "serverTimeZone": "UTC",
                             "cloudRegion": "sandbox"}
        if method == "GET" and parts == ["company", "companies"]:
            with self._lock:
                rows = list(self.companies.values())
            return self._page(path, query, rows)
        if method == "GET" and parts == ["finance", "agreements"]:
            with self._lock:
                rows = list(self.agreements.values())
            return self._page(path, query, rows)
        if method == "GET" and parts == ["finance", "billingCycles"]:
            with self._lock:
                rows = [dict(c) for c in self.billing_cycles.values()]
            return self._page(path, query, rows)
        if len(parts) >= 4 and parts[:2] == ["finance", "agreements"] and parts[3] == "additions":
            aid = _int(parts[2])
            with self._lock:
                known = aid in self.agreements
                rows = list(self.additions.get(aid, {}).values())
            if not known:
                return 404, {}, {"code": "NotFound", "message": f"Agreement {parts[2]} not found"}
            if method == "GET" and len(parts) == 4:
                return self._page(path, query, rows)
            if method == "PATCH" and len(parts) == 5:
                return self._patch_addition(aid, _int(parts[4]), body)
        return 404, {}, {"code": "NotFound", "message": "Not found"}

    def _companyinfo(self, company: str) -> Reply:
        if unquote(company).lower() != self.company.lower():
            return 404, {}, {"code": "NotFound", "message": f"Company {company} not found"}
        version = self.codebase.strip("/").lstrip("v").replace("_", ".")
        return 200, {}, {"CompanyName": self.company, "Codebase": self.codebase, "VersionCode": f"v{version}",
                         "VersionNumber": f"v{version}.0", "CompanyID": self.company, "IsCloud": False,
                         "SiteUrl": self.url.split("://", 1)[1]}

    def _patch_addition(self, agreement_id: int, addition_id: int, body: Any) -> Reply:
        if not isinstance(body, list) or not body:
            raise BadRequest("expected a JSON Patch array")
        with self._lock:
            addition = self.additions[agreement_id].get(addition_id)
            if addition is None:
                return 404, {}, {"code": "NotFound", "message": f"Addition {addition_id} not found"}
            for op in body:
                if not isinstance(op, dict) or op.get("op") != "replace" or str(op.get("path", "")).strip("/") != "quantity":
                    raise BadRequest(f"unsupported patch operation {op!r}")
                value = op.get("value")
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                    raise BadRequest(f"quantity must be a non-negative number, not {value!r}")
                addition["quantity"] = float(value)
            return 200, {}, dict(addition)

    def _page(self, path: str, query: Dict[str, str], rows: List[Dict[str, Any]]) -> Reply:
        try:
            page = int(query.get("page", "1"))
            size = int(query.get("pageSize", str(DEFAULT_PAGE_SIZE)))
        except ValueError:
            raise BadRequest("page and pageSize must be integers") from None
        if page < 1 or size < 1:
            raise BadRequest("page and pageSize must be positive")
        size = min(size, MAX_PAGE_SIZE)
        if query.get("conditions"):
            predicate = parse_conditions(query["conditions"])
            rows = [r for r in rows if predicate(r)]
        rows.sort(key=lambda r: r["id"])
        if getattr(self._request, "forward", False):
            return self._forward_page(path, query, rows, size)
        last = max(1, -(-len(rows) // size))
        chunk = rows[(page - 1) * size: page * size]
        fields = [f.strip().split("/")[0] for f in query.get("fields", "").split(",") if f.strip()]
        if fields:
            chunk = [{k: v for k, v in r.items() if k in fields} for r in chunk]
        links = []
        base = {k: v for k, v in query.items() if k not in ("page", "pageSize")}

        def link(n: int, rel: str) -> str:
            return f'<{self.url}{path}?{urlencode({**base, "pageSize": size, "page": n})}>; rel="{rel}"'

        if page > 1:
            links += [link(page - 1, "prev"), link(1, "first")]
        if page < last:
            links += [link(1 if self.paging_fault == "repeat" else page + 1, "next"), link(last, "last")]
        return 200, ({"Link": ", ".join(links)} if links else {}), chunk

    def _forward_page(self, path: str, query: Dict[str, str], rows: List[Dict[str, Any]], size: int) -> Reply:
        """Forward-only paging: ids above ``pageId``; the Link header names the next ``pageId``."""
        try:
            after = int(query.get("pageId", "0") or 0)
        except ValueError:
            raise BadRequest("pageId must be an integer") from None
        if query.get("orderBy"):
            raise BadRequest("You cannot use an Order By query parameter with forward-only pagination")
        chunk = [r for r in rows if r["id"] > after][:size]
        fields = [f.strip().split("/")[0] for f in query.get("fields", "").split(",") if f.strip()]
        shown = [{k: v for k, v in r.items() if k in fields} for r in chunk] if fields else chunk
        if not chunk:
            return 200, {}, shown
        base = {k: v for k, v in query.items() if k not in ("page", "pageId")}
        return 200, {"Link": f'<{self.url}{path}?{urlencode({**base, "pageId": chunk[-1]["id"]})}>; rel="next"'}, shown


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise BadRequest(f"not an id: {text!r}") from None
