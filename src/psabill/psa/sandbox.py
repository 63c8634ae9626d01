"""A ConnectWise-compatible PSA sandbox: a real HTTP server on loopback.

It serves exactly what :class:`psabill.psa.connectwise.ConnectWiseClient`
uses, so the demo, the tests and a dry drill all talk HTTP to something that
pages, filters, throttles and fails like the real thing:

* ``GET  /v4_6_release/apis/3.0/system/info``
* ``GET  .../company/companies``
* ``GET  .../finance/agreements``
* ``GET  .../finance/agreements/{id}/additions``
* ``PATCH .../finance/agreements/{id}/additions/{id}`` (JSON Patch on ``quantity``)

Lists honour ``page``/``pageSize`` (default 25, max 1000, like ConnectWise)
with a ``Link`` header, ``fields`` (top-level names) and ``conditions`` in the
subset the client sends: ``=``, ``!=``, ``<``, ``<=``, ``>``, ``>=``,
``in (...)``, ``not in (...)``, ``and``, ``or``, parentheses, double-quoted
strings (backslash escapes), numbers, ``true``/``false``/``null`` and nested
paths such as ``company/id``. String comparison ignores case, as SQL Server's
default collation (and so ConnectWise) does.

:class:`LoopbackServer` carries the test machinery shared with the Autotask
stand-in: latency, queued faults, "die after N requests", a request log,
per-endpoint counters and the highest number of requests seen in flight at
once per endpoint.
"""

from __future__ import annotations

import base64
import json
import random
import re
import threading
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple
from urllib.parse import parse_qs, urlencode, urlsplit

API_PREFIX = "/v4_6_release/apis/3.0"
DEFAULT_PAGE_SIZE = 25
MAX_PAGE_SIZE = 1000

Reply = Tuple[int, Dict[str, str], Any]  # status, headers, JSON-able body (None: empty)


@dataclass(frozen=True)
class Fault:
    """One forced outcome for the next matching request.

    ``status`` answers with that status (and ``retry_after``/``body``);
    ``delay`` sleeps first (longer than the client's timeout = a timeout);
    ``drop`` closes the connection without answering.
    """

    status: Optional[int] = None
    retry_after: Optional[str] = None
    body: Any = None
    delay: float = 0.0
    late: bool = False  # stall after doing the work: the write lands, the answer never arrives
    drop: bool = False
    method: Optional[str] = None  # only requests with this method
    endpoint: Optional[str] = None  # only requests whose endpoint label contains this


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: Dict[str, str]
    endpoint: str
    headers: Dict[str, str]
    body: Any = None
    status: int = 0


@dataclass
class _Faults:
    queue: List[Fault] = field(default_factory=list)
    die_after: Optional[int] = None


class LoopbackServer:
    """A threaded HTTP server on 127.0.0.1 with test knobs; subclasses route."""

    #: headers copied into the request log (never Authorization or secrets).
    LOGGED_HEADERS: Sequence[str] = ("Accept", "Content-Type", "clientId")

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, latency_ms: float = 0.0) -> None:
        self.latency_ms = latency_ms
        self._lock = threading.Lock()
        self._log: List[Request] = []
        self._counts: Counter[str] = Counter()
        self._inflight: Counter[str] = Counter()
        self._max_inflight: Counter[str] = Counter()
        self._faults = _Faults()
        self._handled = 0
        self._dead = False
        self._thread: Optional[threading.Thread] = None
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self._server.request_queue_size = 128

    # -- lifecycle ---------------------------------------------------------

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "LoopbackServer":
        if self._thread is None:
            self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                            name=f"{type(self).__name__}:{self.port}", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._dead = True
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- knobs -------------------------------------------------------------

    def fail(self, status: int, times: int = 1, *, retry_after: Optional[str] = None, body: Any = None,
             method: Optional[str] = None, endpoint: Optional[str] = None) -> None:
        """Answer the next ``times`` matching requests with ``status``."""
        self._enqueue(Fault(status=status, retry_after=retry_after, body=body, method=method, endpoint=endpoint), times)

    def delay(self, seconds: float, times: int = 1, *, late: bool = False, method: Optional[str] = None,
              endpoint: Optional[str] = None) -> None:
        """Stall the next ``times`` matching requests, before (or, ``late``, after) doing the work."""
        self._enqueue(Fault(delay=seconds, late=late, method=method, endpoint=endpoint), times)

    def drop(self, times: int = 1, *, method: Optional[str] = None, endpoint: Optional[str] = None) -> None:
        """Close the connection on the next ``times`` matching requests without answering."""
        self._enqueue(Fault(drop=True, method=method, endpoint=endpoint), times)

    def die_after(self, requests: int) -> None:
        """Answer ``requests`` more requests, then drop every connection: a PSA gone mid-run."""
        with self._lock:
            self._faults.die_after = self._handled + requests

    def revive(self) -> None:
        with self._lock:
            self._faults = _Faults()
            self._dead = False

    def _enqueue(self, fault: Fault, times: int) -> None:
        with self._lock:
            self._faults.queue.extend([fault] * times)

    # -- observation -------------------------------------------------------

    @property
    def requests(self) -> List[Request]:
        with self._lock:
            return list(self._log)

    @property
    def counts(self) -> Dict[str, int]:
        """Requests per endpoint label, e.g. ``"PATCH finance/agreements/{id}/additions/{id}"``."""
        with self._lock:
            return dict(self._counts)

    @property
    def max_inflight(self) -> Dict[str, int]:
        with self._lock:
            return dict(self._max_inflight)

    @property
    def total(self) -> int:
        with self._lock:
            return self._handled

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()
            self._counts.clear()
            self._max_inflight.clear()

    # -- routing (subclasses) ----------------------------------------------

    def endpoint(self, method: str, path: str) -> str:
        """A label for counting: the path with numeric ids replaced by ``{id}``."""
        return f"{method} {_ID.sub('/{id}', path)}"

    def authorize(self, headers: Dict[str, str], path: str) -> Optional[Reply]:
        return None

    def route(self, method: str, path: str, query: Dict[str, str], body: Any) -> Reply:
        raise NotImplementedError

    # -- request handling --------------------------------------------------

    def _pick_fault(self, method: str, label: str) -> Tuple[Optional[Fault], bool]:
        with self._lock:
            self._handled += 1
            die = self._faults.die_after
            if self._dead or (die is not None and self._handled > die):
                self._dead = True
                return None, True
            for i, fault in enumerate(self._faults.queue):
                if (fault.method is None or fault.method == method) and (
                        fault.endpoint is None or fault.endpoint in label):
                    return self._faults.queue.pop(i), False
            return None, False

    def _serve(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        split = urlsplit(handler.path)
        path = split.path
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        label = self.endpoint(method, path)
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        fault, dead = self._pick_fault(method, label)
        if dead:
            handler.close_connection = True
            return
        headers = {k: handler.headers[k] for k in self.LOGGED_HEADERS if handler.headers.get(k) is not None}
        body: Any = None
        reply: Reply
        with self._lock:
            self._inflight[label] += 1
            self._max_inflight[label] = max(self._max_inflight[label], self._inflight[label])
        try:
            if self.latency_ms:
                time.sleep(self.latency_ms / 1000.0)
            if fault is not None and fault.delay and not fault.late:
                time.sleep(fault.delay)
            if fault is not None and fault.drop:
                handler.close_connection = True
                self._record(Request(method, path, query, label, headers, None, 0))
                return
            if raw:
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = raw.decode("utf-8", "replace")
            if fault is not None and fault.status is not None:
                extra = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
                reply = (fault.status, extra, fault.body if fault.body is not None else {"message": "injected fault"})
            else:
                lowered = {k.lower(): v for k, v in handler.headers.items()}
                denied = self.authorize(lowered, path)
                if denied is not None:
                    reply = denied
                else:
                    try:
                        reply = self.route(method, path, query, body)
                    except BadRequest as exc:
                        reply = (400, {}, {"code": "InvalidObject", "message": str(exc)})
                    except Exception as exc:  # a sandbox bug must answer, not hang the client
                        reply = (500, {}, {"code": "ServerError", "message": f"{type(exc).__name__}: {exc}"})
            if fault is not None and fault.delay and fault.late:
                time.sleep(fault.delay)
        finally:
            with self._lock:
                self._inflight[label] -= 1
        self._record(Request(method, path, query, label, headers, body, reply[0]))
        self._send(handler, reply)

    def _record(self, request: Request) -> None:
        with self._lock:
            self._log.append(request)
            self._counts[request.endpoint] += 1

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, reply: Reply) -> None:
        status, headers, body = reply
        payload = b"" if body is None else json.dumps(body).encode("utf-8")
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Type", "application/json; charset=utf-8")
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    def _handler_class(self) -> type:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: 10k requests without 10k handshakes
            disable_nagle_algorithm = True  # headers and body go out in two writes; no 40 ms stalls

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
                pass

            def do_GET(self) -> None:  # noqa: N802 - stdlib name
                server._serve(self, "GET")

            def do_POST(self) -> None:  # noqa: N802
                server._serve(self, "POST")

            def do_PATCH(self) -> None:  # noqa: N802
                server._serve(self, "PATCH")

        return Handler


_ID = re.compile(r"/\d+(?=/|$)")


class BadRequest(Exception):
    """Answered as HTTP 400 with this message."""


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


def _key(value: Any) -> Any:
    if isinstance(value, str):
        return value.lower()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _compare(left: Any, op: str, right: Any) -> bool:
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


class Sandbox(LoopbackServer):
    """A ConnectWise PSA on loopback. Data lives in plain dicts under one lock."""

    def __init__(self, *, company: str = "sandbox", public_key: str = "sandbox-public",
                 private_key: str = "sandbox-private", client_id: str = "00000000-0000-4000-8000-000000000000",
                 host: str = "127.0.0.1", port: int = 0, latency_ms: float = 0.0) -> None:
        super().__init__(host=host, port=port, latency_ms=latency_ms)
        self.company = company
        self.public_key = public_key
        self.private_key = private_key
        self.client_id = client_id
        self.companies: Dict[int, Dict[str, Any]] = {}
        self.agreements: Dict[int, Dict[str, Any]] = {}
        self.additions: Dict[int, Dict[int, Dict[str, Any]]] = {}  # agreement id -> addition id -> addition
        self._next_id = 100

    # -- data --------------------------------------------------------------

    def _id(self, wanted: Optional[int]) -> int:
        if wanted is not None:
            self._next_id = max(self._next_id, wanted + 1)
            return wanted
        self._next_id += 1
        return self._next_id - 1

    def add_company(self, identifier: str, name: str, *, id: Optional[int] = None) -> int:  # noqa: A002
        with self._lock:
            cid = self._id(id)
            self.companies[cid] = {"id": cid, "identifier": identifier, "name": name, "deletedFlag": False}
            return cid

    def add_agreement(self, company_id: int, name: str = "Managed Services", *, status: str = "Active",
                      cancelled: bool = False, id: Optional[int] = None) -> int:  # noqa: A002
        with self._lock:
            company = self.companies[company_id]
            aid = self._id(id)
            self.agreements[aid] = {
                "id": aid, "name": name, "type": {"id": 1, "name": "Managed Services"},
                "company": {"id": company_id, "identifier": company["identifier"], "name": company["name"]},
                "agreementStatus": status, "cancelledFlag": cancelled,
            }
            self.additions.setdefault(aid, {})
            return aid

    def add_addition(self, agreement_id: int, product: str, quantity: float, *,
                     cancelled_date: Optional[str] = None, id: Optional[int] = None) -> int:  # noqa: A002
        with self._lock:
            xid = self._id(id)
            self.additions.setdefault(agreement_id, {})[xid] = {
                "id": xid, "agreementId": agreement_id,
                "product": {"id": zlib.crc32(product.encode()) % 100000, "identifier": product},
                "quantity": float(quantity), "lessIncluded": 0.0, "unitPrice": 3.0,
                "billCustomer": "Billable", "effectiveDate": "2024-01-01T00:00:00Z", "cancelledDate": cancelled_date,
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
        return sb

    def patches(self) -> List[Request]:
        """The PATCH requests answered so far, in order: what a run actually wrote."""
        return [r for r in self.requests if r.method == "PATCH"]

    def config_section(self) -> Dict[str, Any]:
        """A ``[psa]`` config section (minus the private key) that points at this sandbox."""
        return {"kind": "connectwise", "url": self.url, "company": self.company,
                "public_key": self.public_key, "client_id": self.client_id}

    # -- HTTP --------------------------------------------------------------

    def endpoint(self, method: str, path: str) -> str:
        if path.startswith(API_PREFIX):
            path = path[len(API_PREFIX) + 1:]
        return super().endpoint(method, path)

    def authorize(self, headers: Dict[str, str], path: str) -> Optional[Reply]:
        token = base64.b64encode(f"{self.company}+{self.public_key}:{self.private_key}".encode()).decode()
        if headers.get("authorization") != f"Basic {token}":
            return 401, {}, {"code": "Unauthorized", "message": "Authentication failed"}
        if headers.get("clientid") != self.client_id:
            return 403, {}, {"code": "Forbidden", "message": "clientId header is missing or unknown"}
        return None

    def route(self, method: str, path: str, query: Dict[str, str], body: Any) -> Reply:
        if not path.startswith(API_PREFIX + "/"):
            return 404, {}, {"code": "NotFound", "message": "Not found"}
        parts = path[len(API_PREFIX) + 1:].strip("/").split("/")
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
            links += [link(page + 1, "next"), link(last, "last")]
        return 200, ({"Link": ", ".join(links)} if links else {}), chunk


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise BadRequest(f"not an id: {text!r}") from None
