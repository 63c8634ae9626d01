"""ConnectWise PSA ("Manage") REST 3.0 client.

Cost model, for N mapped companies with A active agreements and C changed
quantities: ceil(list size / 1000) paged reads for companies and agreements,
plus one additions read per agreement, plus one PATCH per changed quantity.
Short lists of identifiers or company ids are fetched with ``conditions``
(batched so the URL stays short); long lists fetch everything in pages of 1000
and filter here, which is fewer requests than hundreds of batched queries.

Quantities are absolute in ConnectWise, so a PATCH is idempotent and is
retried like a read.
"""

from __future__ import annotations

import base64
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence
from urllib.parse import urlsplit

from psabill import redact
from psabill.errors import ConfigError
from psabill.psa.base import Agreement, Company, Line, PsaError
from psabill.psa.http import HttpClient, batches, check_url, numeric_id, rebase, whole

API_PATH = "/v4_6_release/apis/3.0"
DEFAULT_API_VERSION = "2025.1"
PAGE_SIZE = 1000
BATCH = 50  # values per `in (...)` condition: keeps the query string well under URL limits
LIST_ALL_OVER = 200  # more values than this: page through everything instead of batching
MAX_PAGES = 10_000  # a PSA that keeps linking "next" forever is a bug, not a big book


def api_base(url: str) -> str:
    """``https://host`` or a full ``.../v4_6_release/apis/3.0`` URL -> the API base."""
    text = url.strip().rstrip("/")
    if "://" not in text:
        text = "https://" + text
    if text.lower().endswith(API_PATH):
        return text[: -len(API_PATH)] + API_PATH
    return text + API_PATH


class ConnectWiseClient:
    kind = "connectwise"

    def __init__(
        self,
        config_section: Mapping[str, Any],
        secret: str,
        *,
        backoff: float = 0.5,
        max_wait: float = 60.0,
    ) -> None:
        missing = [k for k in ("url", "company", "public_key", "client_id") if not config_section.get(k)]
        if missing:
            raise ConfigError(f"[psa] kind = \"connectwise\" needs {', '.join(missing)}")
        if not secret:
            raise ConfigError("[psa] the ConnectWise private key is empty")
        self.base = api_base(str(config_section["url"]))
        check_url(self.base)
        self.company = str(config_section["company"])
        public_key = str(config_section["public_key"])
        version = str(config_section.get("api_version") or DEFAULT_API_VERSION)
        token = base64.b64encode(f"{self.company}+{public_key}:{secret}".encode("utf-8")).decode("ascii")
        redact.register(secret, token)  # before any request: the token is a credential of its own
        self.http = HttpClient(
            headers={
                "Authorization": f"Basic {token}",
                "clientId": str(config_section["client_id"]),
                "Accept": f"application/vnd.connectwise.com+json; version={version}",
                "Content-Type": "application/json",
            },
            secrets=[secret, token],
            timeout=float(config_section.get("timeout", 30)),
            max_retries=int(config_section.get("max_retries", 5)),
            ca_file=config_section.get("ca_file"),
            concurrency=int(config_section.get("concurrency", 8)),
            backoff=backoff,
            max_wait=max_wait,
        )

    @property
    def request_count(self) -> int:
        return self.http.request_count

    # -- reads -------------------------------------------------------------

    def check(self) -> str:
        info = self.http.get_json(self.base + "/system/info") or {}
        version = info.get("version", "unknown version") if isinstance(info, dict) else "unknown version"
        return f"ConnectWise PSA {version} at {urlsplit(self.base).netloc} (company {self.company})"

    def companies(self, identifiers: Sequence[str] = (), names: Sequence[str] = ()) -> List[Company]:
        ids = {i.lower() for i in identifiers}
        wanted_names = {n.lower() for n in names}
        fields = "id,identifier,name"
        if not ids and not wanted_names:
            return [_company(r) for r in self._list("/company/companies", None, fields)]
        rows: List[Dict[str, Any]] = []
        if len(ids) + len(wanted_names) > LIST_ALL_OVER or not _quotable(list(identifiers) + list(names)):
            rows = list(self._list("/company/companies", None, fields))
        else:
            for field, values in (("identifier", sorted(set(identifiers))), ("name", sorted(set(names)))):
                for batch in batches(values, BATCH):
                    rows.extend(self._list("/company/companies", f"{field} in ({_strings(batch)})", fields))
        found: Dict[str, Company] = {}
        for row in rows:
            company = _company(row)
            if company.identifier.lower() in ids or company.name.lower() in wanted_names:
                found[company.id] = company
        return sorted(found.values(), key=lambda c: int(c.id) if c.id.isdigit() else 0)

    def agreements(self, company_ids: Sequence[str]) -> List[Agreement]:
        wanted = {_numeric(i, "company id") for i in company_ids}
        if not wanted:
            return []
        active = 'agreementStatus="Active" and cancelledFlag=false'
        fields = "id,name,company,agreementStatus,cancelledFlag"
        rows: List[Dict[str, Any]] = []
        if len(wanted) > LIST_ALL_OVER:
            rows = list(self._list("/finance/agreements", active, fields))
        else:
            for batch in batches(sorted(wanted), BATCH):
                condition = f"company/id in ({','.join(str(i) for i in batch)}) and {active}"
                rows.extend(self._list("/finance/agreements", condition, fields))
        result = []
        for row in rows:
            company_id = (row.get("company") or {}).get("id")
            # Filter again here: the list-all path fetched every company's agreements.
            if company_id in wanted and row.get("agreementStatus") == "Active" and not row.get("cancelledFlag"):
                result.append(Agreement(id=str(row["id"]), company_id=str(company_id), name=str(row.get("name", ""))))
        return sorted(result, key=lambda a: int(a.id))

    def lines(self, agreement: Agreement) -> List[Line]:
        aid = _numeric(agreement.id, "agreement id")
        path = f"/finance/agreements/{aid}/additions"
        result = []
        for row in self._list(path, "cancelledDate=null", "id,product,quantity,cancelledDate"):
            product = (row.get("product") or {}).get("identifier")
            if not product:
                continue
            result.append(Line(id=str(row["id"]), agreement_id=str(aid), product=str(product),
                               quantity=whole(row.get("quantity"))))
        return result

    # -- the write ---------------------------------------------------------

    def set_quantity(self, line: Line, quantity: int) -> int:
        if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 0:
            raise PsaError(f"refusing to set quantity {quantity!r} on addition {line.id}: not a whole number >= 0")
        aid = _numeric(line.agreement_id, "agreement id")
        xid = _numeric(line.id, "addition id")
        url = f"{self.base}/finance/agreements/{aid}/additions/{xid}"
        response = self.http.request("PATCH", url, json=[{"op": "replace", "path": "quantity", "value": quantity}])
        body = self.http.json_of(response, f"PATCH addition {xid}")
        if isinstance(body, dict) and "quantity" in body and whole(body["quantity"]) != quantity:
            raise PsaError(f"PATCH addition {xid}: ConnectWise answered quantity {body['quantity']!r}, not {quantity}")
        return line.quantity

    def close(self) -> None:
        self.http.close()

    # -- paging ------------------------------------------------------------

    def _list(self, path: str, conditions: Optional[str], fields: str) -> Iterator[Dict[str, Any]]:
        first: Dict[str, Any] = {"pageSize": PAGE_SIZE, "page": 1, "fields": fields}
        if conditions:
            first["conditions"] = conditions
        params: Optional[Dict[str, Any]] = first
        url = self.base + path
        seen = set()
        for _ in range(MAX_PAGES):
            response = self.http.request("GET", url, params=params)
            rows = self.http.json_of(response, f"GET {path}")
            if not isinstance(rows, list):
                raise PsaError(f"GET {path}: expected a JSON list, got {type(rows).__name__}")
            for row in rows:
                if isinstance(row, dict) and "id" in row:
                    yield row
            link = response.links.get("next", {}).get("url")
            if not link or not rows:
                return
            following = rebase(link, self.base)
            if following in seen:
                raise PsaError(f"GET {path}: paging link repeats itself")
            seen.add(following)
            url, params = following, None
        raise PsaError(f"GET {path}: more than {MAX_PAGES} pages")


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
