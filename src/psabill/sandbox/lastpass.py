"""A LastPass Business API stand-in: a real HTTP server on loopback.

It serves what :mod:`psabill.sources.lastpass` reads, under ``/business`` like
``https://api.lastpass.com/business``:

* ``GET /business/v1/managed-companies`` (``listManagedCompanies``; published)
* ``GET /business/v1/managed-companies/{child-company-id}/users`` (the list of
  a managed company's users: **not published**, modelled on ``GET /v1/users``)
* ``GET /business/v1/managed-companies/{child-company-id}/users/{user-id}``
  (``getManagedCompanyUser``; published)

and refuses what the published API refuses, with an RFC 9457 ProblemDetails
body (``title``, ``status``, ``detail``, ``instance``, ``errors[{detail,
pointer}]``): a missing or wrong ``Authorization: api-key <key>`` (401), a
``max-results`` outside 1..500 (400), an unknown ``page-token`` (400),
a query parameter the endpoint does not take (400; the live API's handling
of those is undocumented, refusing them keeps the client honest), a filter
value outside its enum (400), an unknown company or user (404).

Lists page like the published ones: ``items`` and ``nextPageToken`` (null on
the last page), 10 items unless ``max-results`` says otherwise, so a client
that forgets ``max-results`` is as slow here as there. A page token belongs to
the query it was issued for: a client must repeat every other parameter with
it (whether LastPass insists is unpublished; this stand-in does).

Knobs: companies (:meth:`add_company`: status, add-ons, type, any field
overridden or left out) and their users (:meth:`add_user`, :meth:`add_users`);
``latency_ms``, :meth:`fail`, :meth:`delay` and :meth:`drop` from
:class:`~psabill.sandbox.server.LoopbackServer`; :meth:`throttle` (429 with
``Retry-After``); ``loop_tokens`` (hand back the token it was given: paging
that never ends); ``leak_key`` (a 401 whose detail echoes the credential it
was sent, raw, base64 and percent-encoded, to prove the client scrubs it).
The request log records ``Authorization`` only by its shape
(``api-key [redacted]``), never the key.
"""

from __future__ import annotations

import base64
import json
import random
import re
import secrets
import threading
from http.server import BaseHTTPRequestHandler
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple
from urllib.parse import quote

from psabill.sandbox.server import LoopbackServer, Reply, Request

BASE_PATH = "/business"
DEFAULT_PAGE_SIZE = 10
MAX_PAGE_SIZE = 500
DEFAULT_KEY = "lpkey_STANDIN00000_" + "0123456789abcdef" * 2
PROBLEM_TYPE = "application/problem+json"

ACCOUNT_STATUSES = ("enrolled", "pending-invitation", "expired-invitation", "staged", "disabled",
                    "awaiting-approval")
COMPANY_STATUSES = ("active", "suspended")
COMPANY_TYPES = ("msp", "managed", "managed-msp")
ADDONS = ("mfa", "sso")

COMPANY_QUERY = ("max-results", "page-token", "sort", "parent-id", "name", "license-limit", "status", "type",
                 "addon")
USER_QUERY = ("max-results", "page-token", "sort", "name", "email", "account-status")
COMPANY_SORT = ("id", "name")
USER_SORT = ("id", "name", "email", "account-status")

_COMPANIES = re.compile(r"^/v1/managed-companies/?$")
_USERS = re.compile(r"^/v1/managed-companies/([^/]+)/users/?$")
_USER = re.compile(r"^/v1/managed-companies/([^/]+)/users/([^/]+)/?$")


def problem(status: int, title: str, detail: str, *, instance: Optional[str] = None,
            errors: Sequence[Tuple[str, str]] = ()) -> Reply:
    """A ProblemDetails reply; ``errors`` are (pointer, detail) pairs."""
    body: Dict[str, Any] = {"title": title, "status": status, "detail": detail, "instance": instance}
    if errors:
        body["errors"] = [{"detail": d, "pointer": p} for p, d in errors]
    return status, {"Content-Type": PROBLEM_TYPE}, body


class _Refused(Exception):
    def __init__(self, reply: Reply) -> None:
        super().__init__(reply[2].get("detail"))
        self.reply = reply


def _bad(detail: str, pointer: str, instance: str) -> _Refused:
    return _Refused(problem(400, "Bad Request", detail, instance=instance, errors=[(pointer, detail)]))


def _auth_shape(value: Optional[str]) -> str:
    """What the log keeps of an Authorization header: its scheme, never the credential."""
    if value is None:
        return "[missing]"
    scheme, _, credential = value.strip().partition(" ")
    if not credential.strip() or not re.fullmatch(r"[A-Za-z][A-Za-z0-9-]*", scheme):
        return "[malformed]"
    return f"{scheme} [redacted]"


class LastPassStandin(LoopbackServer):
    """The LastPass Business API on loopback. Data lives in plain dicts under one lock."""

    LOGGED_HEADERS = ("Accept", "Authorization")
    MASKED_HEADERS = ("Authorization",)

    def __init__(self, *, api_key: str = DEFAULT_KEY, host: str = "127.0.0.1", port: int = 0,
                 latency_ms: float = 0.0, page_size: int = DEFAULT_PAGE_SIZE, loop_tokens: bool = False,
                 leak_key: bool = False) -> None:
        super().__init__(host=host, port=port, latency_ms=latency_ms)
        self.api_key = api_key
        self.page_size = page_size
        self.loop_tokens = loop_tokens
        self.leak_key = leak_key
        self.companies: Dict[int, Dict[str, Any]] = {}
        self.users: Dict[int, Dict[int, Dict[str, Any]]] = {}  # company id -> user id -> user
        self._tokens: Dict[str, Tuple[str, Tuple[Tuple[str, str], ...], int]] = {}  # token -> (path, query, offset)
        self._next_id = 1000
        self._shape = threading.local()

    # -- data --------------------------------------------------------------

    def _id(self, wanted: Optional[int]) -> int:
        if wanted is not None:
            self._next_id = max(self._next_id, wanted + 1)
            return wanted
        self._next_id += 1
        return self._next_id - 1

    def add_company(self, name: str, *, status: str = "active", addons: Iterable[str] = (),
                    type: str = "managed", parent_id: Optional[int] = None,  # noqa: A002 - the API's name
                    license_limit: int = 100, id: Optional[int] = None,  # noqa: A002
                    users: Iterable[str] = (), fields: Optional[Dict[str, Any]] = None,
                    omit: Iterable[str] = ()) -> int:
        """A managed company; ``users`` are account statuses, one user each. ``fields`` overrides fields of
        the listed object and ``omit`` leaves fields out (for answers of an unexpected shape)."""
        with self._lock:
            cid = self._id(id)
            record: Dict[str, Any] = {"id": cid, "name": name, "licenseLimit": license_limit, "type": type,
                                      "status": status, "addons": list(addons), "parentId": parent_id}
            record.update(fields or {})
            for name_ in omit:
                record.pop(name_, None)
            self.companies[cid] = record
            self.users.setdefault(cid, {})
        for account_status in users:
            self.add_user(cid, account_status)
        return cid

    def add_user(self, company_id: int, account_status: str = "enrolled", *, name: Optional[str] = None,
                 email: Optional[str] = None, id: Optional[int] = None,  # noqa: A002
                 fields: Optional[Dict[str, Any]] = None, omit: Iterable[str] = ()) -> int:
        with self._lock:
            uid = self._id(id)
            record: Dict[str, Any] = {"id": uid, "name": name or f"User {uid}",
                                      "email": email or f"user{uid}@company{company_id}.example",
                                      "accountStatus": account_status}
            record.update(fields or {})
            for name_ in omit:
                record.pop(name_, None)
            self.users.setdefault(company_id, {})[uid] = record
            return uid

    def add_users(self, company_id: int, count: int, account_status: str = "enrolled") -> List[int]:
        return [self.add_user(company_id, account_status) for _ in range(count)]

    def throttle(self, times: int = 1, *, retry_after: Optional[str] = "1", endpoint: Optional[str] = None) -> None:
        """Answer the next ``times`` matching requests 429 Too Many Requests, with ``Retry-After``."""
        self.fail(429, times, retry_after=retry_after, endpoint=endpoint,
                  body=problem(429, "Too Many Requests", "Rate limit exceeded; retry later.")[2])

    def seats(self, company_id: int, statuses: Iterable[str]) -> int:
        """What a reader should bill for the company: its users in ``statuses``; 0 if suspended."""
        wanted = set(statuses)
        with self._lock:
            if self.companies[company_id].get("status") == "suspended":
                return 0
            return sum(1 for u in self.users.get(company_id, {}).values() if u.get("accountStatus") in wanted)

    def customers(self) -> List[str]:
        with self._lock:
            return [c["name"] for _, c in sorted(self.companies.items())]

    @property
    def api_url(self) -> str:
        """The ``[source] url`` that points at this stand-in."""
        return self.url + BASE_PATH

    def config_section(self) -> Dict[str, Any]:
        """A ``[source]`` section (minus the key: :attr:`api_key`) that points at this stand-in."""
        return {"kind": "lastpass", "url": self.api_url}

    @classmethod
    def sample(cls, companies: int = 25, *, seed: int = 1, users: Tuple[int, int] = (3, 60),
               suspended_share: float = 0.06, mfa_share: float = 0.35, **kwargs: Any) -> "LastPassStandin":
        """A deterministic book of ``companies`` managed companies with real-looking names.

        Names are unique after case-folding and some carry accents (``Zürich``, ``Nørrebro``); about
        ``suspended_share`` are suspended, ``mfa_share`` have the mfa add-on (and a few sso); each has
        ``users`` (min, max) users, mostly enrolled, some invited, disabled, staged, expired or awaiting
        approval.
        """
        standin = cls(**kwargs)
        rng = random.Random(seed)
        names = [" ".join(part for part in (first, sector, suffix) if part)
                 for first in _FIRST for sector in _SECTOR for suffix in _SUFFIX]
        if companies > len(names):
            raise ValueError(f"sample() makes at most {len(names)} companies")
        rng.shuffle(names)
        statuses, weights = zip(*_USER_MIX)
        for name in names[:companies]:
            addons = [a for a, share in (("mfa", mfa_share), ("sso", 0.1)) if rng.random() < share]
            suspended = rng.random() < suspended_share
            count = rng.randint(*users)
            cid = standin.add_company(name, status="suspended" if suspended else "active", addons=addons,
                                      license_limit=max(5, ((count + 9) // 10) * 10 + 10))
            domain = re.sub(r"[^a-z0-9]+", "", name.lower().encode("ascii", "ignore").decode())[:24] or "example"
            for _ in range(count):
                given, family = rng.choice(_GIVEN), rng.choice(_FAMILY)
                standin.add_user(cid, rng.choices(statuses, weights)[0], name=f"{given} {family}",
                                 email=f"{given.lower()}.{family.lower()}@{domain}.example")
        return standin

    # -- HTTP --------------------------------------------------------------

    def endpoint(self, method: str, path: str) -> str:
        if path.startswith(BASE_PATH + "/"):
            path = path[len(BASE_PATH):]
        return super().endpoint(method, path)

    def _serve(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        self._shape.value = _auth_shape(handler.headers.get("Authorization"))
        super()._serve(handler, method)

    def _record(self, request: Request) -> None:
        headers = dict(request.headers)
        headers["Authorization"] = getattr(self._shape, "value", "[missing]")
        super()._record(Request(request.method, request.path, request.query, request.endpoint, headers,
                                request.body, request.status))

    def authorize(self, headers: Dict[str, str], path: str) -> Optional[Reply]:
        presented = headers.get("authorization")
        if presented == f"api-key {self.api_key}":
            return None
        detail = "The API key is missing or invalid."
        if self.leak_key and presented:
            credential = presented.partition(" ")[2] or presented
            detail += (f" Received {credential!s} (base64 {base64.b64encode(credential.encode()).decode()}, "
                       f"url {quote(credential, safe='')}).")
        return problem(401, "Unauthorized", detail, instance=path)

    def route(self, method: str, path: str, query: Dict[str, str], body: Any) -> Reply:
        if not path.startswith(BASE_PATH + "/"):
            return problem(404, "Not Found", f"No resource at {path}.", instance=path)
        rest = path[len(BASE_PATH):]
        if method != "GET":
            return problem(405, "Method Not Allowed", f"{method} is not served here by the stand-in.",
                           instance=path)
        try:
            if _COMPANIES.match(rest):
                return self._list(path, query, COMPANY_QUERY, self._companies(query, path))
            match = _USERS.match(rest)
            if match:
                return self._list(path, query, USER_QUERY, self._users(self._company_id(match.group(1), path),
                                                                        query, path))
            match = _USER.match(rest)
            if match:
                return self._user(self._company_id(match.group(1), path), match.group(2), query, path)
        except _Refused as exc:
            return exc.reply
        return problem(404, "Not Found", f"No resource at {path}.", instance=path)

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, reply: Reply) -> None:
        status, headers, body = reply
        content_type = headers.get("Content-Type", "application/json; charset=utf-8")
        payload = b"" if body is None else json.dumps(body).encode("utf-8")
        handler.send_response(status)
        for name, value in headers.items():
            if name != "Content-Type":
                handler.send_header(name, value)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    # -- resources -----------------------------------------------------------

    def _company_id(self, text: str, path: str) -> int:
        if not text.isdigit():
            raise _bad(f"child-company-id {text!r} is not an integer.", "/child-company-id", path)
        cid = int(text)
        with self._lock:
            known = cid in self.companies
        if not known:
            raise _Refused(problem(404, "Not Found", f"Managed company {cid} was not found.", instance=path))
        return cid

    def _companies(self, query: Dict[str, str], path: str) -> List[Dict[str, Any]]:
        with self._lock:
            rows = [dict(c) for c in self.companies.values()]
        for name, allowed, field in (("status", COMPANY_STATUSES, "status"), ("type", COMPANY_TYPES, "type")):
            if name in query:
                wanted = _csv(query[name], allowed, name, path)
                rows = [r for r in rows if r.get(field) in wanted]
        if "addon" in query:
            wanted = _csv(query["addon"], ADDONS, "addon", path)
            rows = [r for r in rows if wanted & set(r.get("addons") or ())]
        if "name" in query:
            rows = [r for r in rows if _like(query["name"], r.get("name"))]
        if "parent-id" in query:
            parent = _integer(query["parent-id"], "parent-id", path)
            family = {parent}
            grew = True
            while grew:
                more = {r["id"] for r in rows if r.get("parentId") in family} - family
                family |= more
                grew = bool(more)
            rows = [r for r in rows if r.get("id") in family]
        return _sorted(rows, query.get("sort"), COMPANY_SORT, path)

    def _users(self, company_id: int, query: Dict[str, str], path: str) -> List[Dict[str, Any]]:
        with self._lock:
            rows = [dict(u) for u in self.users.get(company_id, {}).values()]
        if "account-status" in query:
            value = query["account-status"]
            if value not in ACCOUNT_STATUSES:
                raise _bad(f"account-status {value!r} is not one of {', '.join(ACCOUNT_STATUSES)}.",
                           "/account-status", path)
            rows = [r for r in rows if r.get("accountStatus") == value]
        for name in ("name", "email"):
            if name in query:
                rows = [r for r in rows if _like(query[name], r.get(name))]
        return _sorted(rows, query.get("sort"), USER_SORT, path)

    def _user(self, company_id: int, text: str, query: Dict[str, str], path: str) -> Reply:
        if query:
            raise _bad(f"Unknown query parameter {sorted(query)[0]!r}.", f"/{sorted(query)[0]}", path)
        if not text.isdigit():
            raise _bad(f"user-id {text!r} is not an integer.", "/user-id", path)
        with self._lock:
            user = self.users.get(company_id, {}).get(int(text))
        if user is None:
            return problem(404, "Not Found", f"User {text} was not found in managed company {company_id}.",
                           instance=path)
        return 200, {}, dict(user)

    def _list(self, path: str, query: Dict[str, str], allowed: Sequence[str], rows: List[Dict[str, Any]]) -> Reply:
        unknown = sorted(set(query) - set(allowed))
        if unknown:
            raise _bad(f"Unknown query parameter {unknown[0]!r}.", f"/{unknown[0]}", path)
        size = self.page_size
        if "max-results" in query:
            size = _integer(query["max-results"], "max-results", path)
            if not 1 <= size <= MAX_PAGE_SIZE:
                raise _bad(f"max-results must be between 1 and {MAX_PAGE_SIZE}.", "/max-results", path)
        rest = tuple(sorted((k, v) for k, v in query.items() if k != "page-token"))
        offset = 0
        token = query.get("page-token")
        if token is not None:
            with self._lock:
                issued = self._tokens.get(token)
            if issued is None:
                raise _bad("The page-token is invalid or has expired.", "/page-token", path)
            if issued[:2] != (path, rest):
                raise _bad("The page-token was issued for another query; repeat its other parameters.",
                           "/page-token", path)
            offset = issued[2]
        chunk = rows[offset: offset + size]
        following: Optional[str] = None
        if token is not None and self.loop_tokens:
            following = token
        elif offset + size < len(rows):
            following = secrets.token_urlsafe(12)
            with self._lock:
                self._tokens[following] = (path, rest, offset + size)
        return 200, {}, {"items": chunk, "nextPageToken": following}


def _integer(text: str, name: str, path: str) -> int:
    if not re.fullmatch(r"-?[0-9]{1,18}", text.strip()):
        raise _bad(f"{name} must be an integer.", f"/{name}", path)
    return int(text)


def _csv(text: str, allowed: Sequence[str], name: str, path: str) -> set:
    values = {v.strip() for v in text.split(",") if v.strip()}
    wrong = sorted(values - set(allowed))
    if not values or wrong:
        raise _bad(f"{name} {wrong[0] if wrong else text!r} is not one of {', '.join(allowed)}.", f"/{name}", path)
    return values


def _like(pattern: str, value: Any) -> bool:
    """Full-text search with ``%`` as the wildcard, ignoring case; no wildcard means equality."""
    if not isinstance(value, str):
        return False
    regex = ".*".join(re.escape(part) for part in pattern.casefold().split("%"))
    return re.fullmatch(regex, value.casefold()) is not None


def _sorted(rows: List[Dict[str, Any]], sort: Optional[str], allowed: Sequence[str], path: str) -> List[Dict[str, Any]]:
    if not sort:  # the order they were added in
        return rows
    clauses = [c.strip() for c in sort.split(",") if c.strip()]
    for clause in reversed(clauses):
        field, _, direction = clause.partition(":")
        if field not in allowed or direction not in ("asc", "desc"):
            raise _bad(f"sort {clause!r} is not field:asc or field:desc with a field of {', '.join(allowed)}.",
                       "/sort", path)
        key = "accountStatus" if field == "account-status" else field
        rows.sort(key=lambda r: (str(r.get(key, "")).casefold() if key != "id" else r.get("id", 0)),
                  reverse=direction == "desc")
    return rows


_FIRST = ("Northwind", "Harbor Point", "Bluebird", "Cedar Grove", "Summit", "Riverside", "Maple Leaf", "Granite",
          "Lakeshore", "Beacon Hill", "Juniper", "Oakridge", "Silverline", "Meridian", "Evergreen", "Redwood",
          "Pioneer", "Brightwater", "Ironwood", "Coastal", "Highland", "Falcon", "Prairie", "Willow Creek",
          "Sterling", "Crescent", "Aspen", "Hawthorne", "Bayview", "Copperfield", "Zürich", "Nørrebro",
          "Lumière", "São Bento", "Kraków", "Ōsaka")
_SECTOR = ("Dental", "Legal", "Logistics", "Accounting", "Veterinary Clinic", "Architects", "Engineering",
           "Realty", "Insurance", "Orthodontics", "Pharmacy", "Construction", "Marketing", "Family Practice",
           "Credit Union", "Auto Group", "Manufacturing", "Consulting", "Landscaping", "Brewing")
_SUFFIX = ("", "LLC", "Inc.", "Ltd", "Group", "Partners", "& Co.", "PLLC", "GmbH", "AG")
_GIVEN = ("Ana", "Ben", "Chloé", "Dmitri", "Emma", "Farah", "Gus", "Hana", "Ivan", "Jo", "Kai", "Lena", "Mateo",
          "Nia", "Omar", "Priya", "Quinn", "Rosa", "Sven", "Tomás", "Uma", "Vik", "Wen", "Yara", "Zoë")
_FAMILY = ("Okafor", "Schmidt", "Nguyen", "García", "Kowalski", "Smith", "Tanaka", "Haddad", "Rossi", "Dubois",
           "Johansson", "Patel", "Murphy", "Silva", "Novak", "Kim", "Larsen", "Ahmed", "Costa", "Brown")
_USER_MIX = (("enrolled", 80), ("pending-invitation", 6), ("disabled", 6), ("staged", 3), ("expired-invitation", 3),
             ("awaiting-approval", 2))
