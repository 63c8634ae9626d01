"""``[source] kind = "lastpass"``: seat counts read from the LastPass Business API.

One row per managed company of the MSP whose key is configured:

* ``customer`` is the company's name (Unicode NFC); its id goes to
  :attr:`Usage.aliases`, so the mapping file can pin a company by its name or
  by its id (:func:`psabill.run.mapping.load`);
* ``sku`` is ``[source] mfa_sku`` when ``"mfa"`` is in the company's
  ``addons``, else ``[source] sku``;
* ``seats`` is the number of its users whose ``accountStatus`` is in
  ``[source] count_statuses``; a ``suspended`` company has 0 seats (LastPass:
  "Won't be billed for LastPass at the end of the month") and its users are
  not read.

Requests (see docs/lastpass.md for what of this is published and what is
assumed): ``GET {url}/v1/managed-companies?max-results=500`` and, per
company, ``GET {url}/v1/managed-companies/{id}/users?max-results=500``, each
paged by handing back ``nextPageToken`` as ``page-token`` with the other
parameters repeated, all with ``Authorization: api-key <key>`` through
:class:`psabill.net.http.HttpClient` (https only, bounded bodies and
deadlines, 429/5xx retried honouring ``Retry-After``). User lists are read
:data:`CONCURRENCY` at a time, and start while later pages of companies are
still being read.

The answers are read strictly, like a CSV file: an answer of a shape psabill
does not expect (``items`` not a list, a company without ``id`` or ``name``,
a user without ``accountStatus``, a status psabill does not know), a name
given to two companies, or paging that loops or never ends aborts the run
before the PSA is touched, with one line naming the field. The key is never
shown: it is registered with the redactor before the first request.
"""

from __future__ import annotations

import hashlib
import json
import threading
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, Collection, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import httpx

from psabill.config import secrets
from psabill.config.keys import SecretRef
from psabill.config.schema import SourceSettings
from psabill.errors import AbortError, ConfigError
from psabill.net.errors import AuthRefused, Halted, RemoteError, Unreachable
from psabill.net.http import HttpClient, check_url
from psabill.sources.rows import RowChecker, Usage, UsageRow, folded, normalized, preview
from psabill.text import redact

COMPANIES = "/v1/managed-companies"
USERS = "/v1/managed-companies/{id}/users"
PAGE_SIZE = 500  # the documented maximum of max-results on both lists (default 10)
MAX_PAGES = 1000  # per list: 500,000 companies, or users in one company, before psabill calls it a loop
CONCURRENCY = 8  # requests in flight at once
TIMEOUT = 30.0  # seconds per read; HttpClient bounds a whole attempt at 4x this
MAX_RETRIES = 5
MAX_WAIT = 60.0  # the longest single wait for a 429's Retry-After (or a backoff)
EXCERPT_CHARS = 300

# CompanyUserAccountStatus, as published on "Get a managed company user" (and "List users").
ACCOUNT_STATUSES = ("enrolled", "pending-invitation", "expired-invitation", "staged", "disabled",
                    "awaiting-approval")
# ManagedCompany status, as published on "Update a managed company".
COMPANY_STATUSES = ("active", "suspended")
MFA_ADDON = "mfa"


class Company(NamedTuple):
    id: str
    name: str
    suspended: bool
    mfa: bool
    raw: Dict[str, Any]


class _Shape(Exception):
    """An answer psabill cannot use; the message names the request and the field."""


def read(source: SourceSettings, skus: Optional[Collection[str]], config_path: Path) -> Usage:
    counted = _count_statuses(source, config_path)
    base = source.url.rstrip("/")
    try:
        check_url(base)
    except RemoteError as exc:
        raise ConfigError(f"{config_path}: [source] url: {exc}") from None
    key = secrets.resolve(source.api_key)
    redact.register(key)  # before the first request, whatever HttpClient does
    origin = f"LastPass at {base}"
    client = _Client(headers={"Authorization": f"api-key {key}", "Accept": "application/json"},
                     secrets=(key,), timeout=TIMEOUT, max_retries=MAX_RETRIES, concurrency=CONCURRENCY,
                     max_wait=MAX_WAIT)
    try:
        reading = _Reading(client, base, origin, source, skus)
        companies, users = reading.run()
    except AuthRefused as exc:
        raise AbortError(
            f"{origin} refused the API key in [source] {_where(source.api_key)} ({exc}): make a new key in the "
            "LastPass Admin Console > Advanced > LastPass API, with an admin level that may view managed "
            "companies and their users; nothing was written") from None
    except _Shape as exc:
        raise AbortError(f"{origin}: {exc}; nothing was written") from None
    except (Unreachable, Halted) as exc:
        raise AbortError(f"{origin} could not be reached: {exc}; nothing was written (a later firing within "
                         "catch-up tries again)") from None
    except RemoteError as exc:
        later = " (a later firing within catch-up tries again)" if exc.transient else ""
        raise AbortError(f"{origin} answered an error: {exc}; nothing was written{later}") from None
    finally:
        client.close()
    return _usage(companies, users, counted, source, origin)._replace(requests=client.request_count)


def _count_statuses(source: SourceSettings, config_path: Path) -> Tuple[str, ...]:
    statuses = tuple(s.strip() for s in source.count_statuses)
    if not statuses:
        raise ConfigError(f"{config_path}: [source] count_statuses is empty: no user would ever be billed; "
                          f"list the statuses that take a licence, e.g. {list(ACCOUNT_STATUSES[:1])}")
    unknown = [s for s in statuses if s not in ACCOUNT_STATUSES]
    if unknown:
        raise ConfigError(f"{config_path}: [source] count_statuses names {preview(unknown[0])}, which is not a "
                          f"LastPass accountStatus ({', '.join(ACCOUNT_STATUSES)})")
    return statuses


def _where(ref: SecretRef) -> str:
    if ref.env is not None:
        return f"api_key_env (${ref.env})"
    if ref.file is not None:
        return f"api_key_file ({ref.file})"
    return "api_key"


class _Client(HttpClient):
    """HttpClient whose error excerpts show a ProblemDetails body (RFC 9457) by its title and detail."""

    def _excerpt(self, response: httpx.Response) -> str:
        shown = problem_text(response)
        if shown:
            return self.scrub(shown, EXCERPT_CHARS)  # scrubbed whole before the cut, as HttpClient does
        return super()._excerpt(response)


def problem_text(response: httpx.Response) -> Optional[str]:
    """``title: detail (pointer: detail; ...)`` of a ProblemDetails body, or None for any other body."""
    try:
        body = response.json()
    except (ValueError, RecursionError):
        return None
    if not isinstance(body, dict):
        return None
    title, detail = body.get("title"), body.get("detail")
    parts = [text for text in (title, detail) if isinstance(text, str) and text.strip()]
    if not parts:
        return None
    shown = ": ".join(parts)
    errors = body.get("errors")
    if isinstance(errors, list):
        fields = []
        for error in errors[:3]:
            if isinstance(error, dict) and isinstance(error.get("detail"), str):
                pointer = error.get("pointer")
                fields.append(f"{pointer}: {error['detail']}" if isinstance(pointer, str) and pointer
                              else error["detail"])
        if fields:
            shown += f" ({'; '.join(fields)})"
    return shown


class _Reading:
    """One read of every managed company and its users; the first failure stops the rest."""

    def __init__(self, client: HttpClient, base: str, origin: str, source: SourceSettings,
                 skus: Optional[Collection[str]]) -> None:
        self.client = client
        self.base = base
        self.origin = origin
        self.source = source
        self.skus = skus
        self._stop = threading.Event()

    def _go(self) -> bool:
        return not self._stop.is_set()

    def run(self) -> Tuple[List[Company], Dict[str, List[Dict[str, Any]]]]:
        companies: List[Company] = []
        seen: Dict[str, str] = {}  # id -> where it was first listed
        named: Dict[str, Company] = {}  # folded name -> the company listed with it
        futures: Dict[str, "Future[List[Dict[str, Any]]]"] = {}
        with ThreadPoolExecutor(max_workers=CONCURRENCY, thread_name_prefix="lastpass") as pool:
            try:
                for where, items in self._pages(COMPANIES, "managed companies"):
                    for index, item in enumerate(items):
                        company = self._company(item, f"{where} items[{index}]")
                        if company.id in seen:
                            raise _Shape(f"{where} lists managed company id {company.id} again (first in "
                                         f"{seen[company.id]}): the paging is inconsistent")
                        seen[company.id] = where
                        key = folded(company.name)
                        other = named.get(key)
                        if other is not None:
                            raise _duplicate(self.origin, other, company)
                        named[key] = company
                        companies.append(company)
                        if not company.suspended:
                            futures[company.id] = pool.submit(self._users, company)
                if futures:
                    done, _ = wait(list(futures.values()), return_when=FIRST_EXCEPTION)
                    for future in done:
                        error = future.exception()
                        if error is not None:
                            raise error
                users = {cid: future.result() for cid, future in futures.items()}
            except BaseException:
                self._stop.set()  # requests not yet sent are not sent (Halted); queued ones never start
                for future in futures.values():
                    future.cancel()
                raise
        return companies, users

    def _pages(self, path: str, what: str) -> Iterator[Tuple[str, List[Any]]]:
        """(where, items) per page of a list, following nextPageToken with every other parameter repeated."""
        url = self.base + path
        tokens = set()
        token: Optional[str] = None
        for page in range(1, MAX_PAGES + 1):
            params: Dict[str, Any] = {"max-results": PAGE_SIZE}
            if token is not None:
                params["page-token"] = token
            where = f"GET {path}" + (f" (page {page})" if page > 1 else "")
            body = self.client.get_json(url, params=params, go=self._go)
            if not isinstance(body, dict):
                raise _Shape(f"{where} answered {_json_type(body)}, not an object with items and nextPageToken")
            if "items" not in body:
                raise _Shape(f"{where} answered an object without items")
            items = body["items"]
            if items is None:
                items = []  # published as nullable
            if not isinstance(items, list):
                raise _Shape(f"{where}: items is {_json_type(items)}, not a list")
            yield where, items
            following = body.get("nextPageToken")
            if following is None or following == "":
                return
            if not isinstance(following, str):
                raise _Shape(f"{where}: nextPageToken is {_json_type(following)}, not a string or null")
            if following in tokens:
                raise _Shape(f"{where} handed back a nextPageToken it had given before: the paging of {what} "
                             "loops")
            tokens.add(following)
            token = following
        raise _Shape(f"GET {path} gave more than {MAX_PAGES:,} pages of {what} at {PAGE_SIZE} each: the paging "
                     "does not end")

    def _company(self, item: Any, where: str) -> Company:
        if not isinstance(item, dict):
            raise _Shape(f"{where} is {_json_type(item)}, not a managed company object")
        cid = _identifier(item, where, "managed company")
        name = item.get("name")
        if "name" not in item:
            raise _Shape(f"{where} (managed company id {cid}) has no name")
        if not isinstance(name, str) or not normalized(name):
            raise _Shape(f"{where} (managed company id {cid}): name is {_json_preview(name)}, not a company name")
        status = item.get("status")
        if "status" not in item:
            raise _Shape(f"{where} (managed company {preview(name)}, id {cid}) has no status")
        if status not in COMPANY_STATUSES:
            raise _Shape(f"{where} (managed company {preview(name)}, id {cid}): status {_json_preview(status)} is "
                         f"not one psabill knows ({', '.join(COMPANY_STATUSES)}), so whether it bills is unknown")
        if "addons" not in item:
            raise _Shape(f"{where} (managed company {preview(name)}, id {cid}) has no addons")
        addons = item["addons"]
        if addons is None:
            addons = []
        if not isinstance(addons, list) or not all(isinstance(a, str) for a in addons):
            raise _Shape(f"{where} (managed company {preview(name)}, id {cid}): addons is "
                         f"{_json_preview(addons)}, not a list of names")
        company = Company(cid, name, status == "suspended", MFA_ADDON in addons, item)
        sku = self.source.mfa_sku if company.mfa else self.source.sku
        if self.skus is not None and sku not in self.skus:
            key = "mfa_sku" if company.mfa else "sku"
            known = ", ".join(sorted(self.skus)[:10]) or "none"
            # Not a _Shape: the answer is fine, the config is not.
            raise AbortError(
                f"{self.origin}: managed company {preview(normalized(name))} (id {cid}) bills as SKU "
                f"{preview(sku)} ([source] {key}), which is not a key of [products] ({known}): add "
                f"{json.dumps(sku)} = \"<PSA product>\" to [products], or set [source] {key} to one of its keys; "
                "nothing was written")
        return company

    def _users(self, company: Company) -> List[Dict[str, Any]]:
        path = USERS.format(id=company.id)
        users: List[Dict[str, Any]] = []
        seen = set()
        for where, items in self._pages(path, f"users of managed company id {company.id}"):
            for index, item in enumerate(items):
                spot = f"{where} items[{index}]"
                if not isinstance(item, dict):
                    raise _Shape(f"{spot} is {_json_type(item)}, not a user object")
                uid = _identifier(item, spot, "user")
                if uid in seen:
                    raise _Shape(f"{where} lists user id {uid} again: the paging is inconsistent, and the user "
                                 "would be counted twice")
                seen.add(uid)
                if "accountStatus" not in item:
                    raise _Shape(f"{spot} (user id {uid}) has no accountStatus")
                status = item["accountStatus"]
                if status not in ACCOUNT_STATUSES:
                    raise _Shape(f"{spot} (user id {uid}): accountStatus {_json_preview(status)} is not one "
                                 f"psabill knows ({', '.join(ACCOUNT_STATUSES)}), so whether it takes a licence "
                                 "is unknown")
                users.append(item)
        return users


def _duplicate(origin: str, first: Company, second: Company) -> AbortError:
    # One PSA company per managed company (LastPass's own PSA integration requires it): two managed
    # companies of one name would both land on one PSA company, and one count would silently win.
    return AbortError(
        f"{origin}: managed companies id {first.id} and id {second.id} are both named "
        f"{preview(normalized(second.name))} (names are compared ignoring case and accents' encoding): rename "
        "one in the LastPass Admin Console so each bills to its own PSA company; nothing was written")


def _identifier(item: Dict[str, Any], where: str, what: str) -> str:
    """The ``id`` of a list item as a string of digits (an int64, or digits in a string)."""
    if "id" not in item:
        raise _Shape(f"{where} has no id")
    value = item["id"]
    if isinstance(value, bool) or not (
            (isinstance(value, int) and value >= 0) or (isinstance(value, str) and value.isdigit()
                                                         and value.isascii())):
        raise _Shape(f"{where}: id {_json_preview(value)} is not a {what} id (a whole number)")
    return str(int(value))


def _usage(companies: Sequence[Company], users: Dict[str, List[Dict[str, Any]]], counted: Sequence[str],
           source: SourceSettings, origin: str) -> Usage:
    wanted = set(counted)
    check = RowChecker(origin, None, "managed company id")
    rows: List[UsageRow] = []
    aliases: Dict[str, str] = {}
    for company in companies:
        seats = 0 if company.suspended else sum(
            1 for user in users.get(company.id, ()) if user["accountStatus"] in wanted)
        sku = source.mfa_sku if company.mfa else source.sku
        row = check.row(int(company.id), {"customer": company.name, "sku": sku, "seats": str(seats)})
        rows.append(row)
        aliases[folded(company.name)] = company.id
    suspended = sum(1 for company in companies if company.suspended)
    note = f"{len(companies):,} LastPass managed {'company' if len(companies) == 1 else 'companies'}, " \
           f"{suspended:,} suspended"
    return Usage(rows, origin, digest(companies, users), note=note, aliases=aliases)


def digest(companies: Sequence[Company], users: Dict[str, List[Dict[str, Any]]]) -> str:
    """sha-256 of the canonical JSON of everything read: the same answers, in any order, give the same digest.

    Page tokens are left out (they are the API's bookkeeping, not data); companies are ordered by id and each
    company's users by their canonical text.
    """
    def canonical(value: Any) -> str:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    document = [
        {"company": company.raw,
         "users": sorted((canonical(u) for u in users[company.id]), key=str) if company.id in users else None}
        for company in sorted(companies, key=lambda c: (len(c.id), c.id))
    ]
    return hashlib.sha256(canonical(document).encode("utf-8")).hexdigest()


def _json_type(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
            float: "a number", type(None): "null"}.get(type(value), "a value")


def _json_preview(value: Any) -> str:
    if isinstance(value, (dict, list)) and len(json.dumps(value)) > 60:
        return _json_type(value)
    return preview(json.dumps(value, ensure_ascii=False)) if not isinstance(value, str) else preview(value)
