"""A third PSA kind that exists only in the tests: a small PSA that takes absolute quantities, over loopback.

It proves the PSA seam (issue 19): it is a :class:`~psabill.psa.base.PsaClient`
registered with :func:`psabill.psa.register` from here, and the PSA contract
suite (tests/test_psa_contract.py) passes against it unchanged. Nothing under
``src/`` knows it exists.

The PSA ("Absolute") serves JSON over HTTP with a bearer token:

* ``GET /companies?q=a,b`` -> ``[{"id", "code", "name"}]`` (matching code or name, ignoring case)
* ``GET /contracts?company=1,2`` -> ``[{"id", "company", "name"}]``
* ``GET /contracts/{id}/lines`` -> ``[{"id", "sku", "count"}]``
* ``PATCH /lines/{id}`` with ``{"count": n}`` -> the line
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

from psabill import psa
from psabill.config.secrets import resolve
from psabill.net.errors import AuthRefused, RemoteError, Unreachable
from psabill.net.http import HttpClient, check_url
from psabill.psa.base import (FAILED, UNKNOWN, UPDATED, Agreement, Company, Line, Lines, PsaClient, Sending, Stop,
                              Target, Terms, Written, not_written, quantity)
from psabill.sandbox.server import BadRequest, LoopbackServer, Reply

KIND = "absolute"


class AbsoluteClient(PsaClient):
    kind = KIND
    terms = Terms("Absolute", "contract", "line")

    def __init__(self, settings: Any, *, billing_date: Any = None, zone: Any = None, **options: Any) -> None:
        self.base = str(settings.url).rstrip("/")
        check_url(self.base)
        token = resolve(settings.secret)
        self.http = HttpClient(headers={"Authorization": f"Bearer {token}"}, secrets=[token],
                               max_retries=settings.max_retries, timeout=settings.timeout,
                               concurrency=settings.concurrency, backoff=options.get("backoff", 0.5),
                               max_wait=options.get("max_wait", 60.0))
        self._pool = ThreadPoolExecutor(max_workers=settings.concurrency)

    @property
    def request_count(self) -> int:
        return self.http.request_count

    def check(self) -> str:
        self.http.get_json(self.base + "/companies", params={"q": ""})
        return f"Absolute at {self.base}"

    def companies(self, wanted: Sequence[str]) -> List[Company]:
        rows = self.http.get_json(self.base + "/companies", params={"q": ",".join(wanted)})
        return [Company(str(r["id"]), str(r["code"]), str(r["name"])) for r in rows]

    def agreements(self, company_ids: Sequence[str]) -> List[Agreement]:
        rows = self.http.get_json(self.base + "/contracts", params={"company": ",".join(company_ids)})
        return [Agreement(str(r["id"]), str(r["company"]), str(r["name"])) for r in rows]

    def lines(self, agreements: Sequence[Agreement], products: Sequence[str]) -> Lines:
        wanted = {p.casefold(): p for p in products}

        def read(agreement: Agreement) -> List[Line]:
            rows = self.http.get_json(f"{self.base}/contracts/{agreement.id}/lines")
            return [Line(str(r["id"]), agreement.id, wanted[r["sku"].casefold()], quantity(r["count"]))
                    for r in rows if r["sku"].casefold() in wanted]

        return Lines({a.id: lines for a, lines in zip(agreements, self._pool.map(read, agreements))})

    def write(self, targets: Sequence[Target], *, halt: Callable[[], bool], sending: Sending) -> Iterator[Written]:
        stop = threading.Event()
        for target in targets:
            if stop.is_set() or halt():
                yield not_written(target, "the run stopped")
                continue
            try:
                sending([target])
            except Stop as exc:
                stop.set()
                yield not_written(target, str(exc))
                continue
            try:  # one absolute write: idempotent, so the client may retry it like a read
                answer = self.http.json_of(self.http.request("PATCH", f"{self.base}/lines/{target.line.id}",
                                                             json={"count": target.new}), "PATCH line")
            except (AuthRefused, Unreachable) as exc:
                stop.set()
                yield Written(target.key, UNKNOWN if isinstance(exc, Unreachable) else FAILED, None, str(exc),
                              transient=True)
                continue
            except RemoteError as exc:
                yield Written(target.key, FAILED, None, f"update failed: {exc}", transient=exc.transient)
                continue
            yield Written(target.key, UPDATED if answer.get("count") == target.new else FAILED, target.old)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.http.close()


def register() -> None:
    """Make ``[psa] kind = "absolute"`` a PSA psabill knows (for this test process)."""
    psa.register(KIND, f"{__name__}:AbsoluteClient")


class AbsoluteServer(LoopbackServer):
    """The Absolute PSA, in memory."""

    def __init__(self, token: str = "absolute-token", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.token = token
        self.companies: Dict[int, Dict[str, Any]] = {}
        self.contracts: Dict[int, Dict[str, Any]] = {}
        self.lines: Dict[int, Dict[str, Any]] = {}
        self._next = 1

    def _id(self) -> int:
        self._next += 1
        return self._next

    def add(self, code: str, sku_counts: Dict[str, int]) -> Dict[str, int]:
        """A company with one contract holding a line per SKU; SKU -> line id."""
        with self._lock:
            cid = self._id()
            self.companies[cid] = {"id": cid, "code": code, "name": f"{code} Ltd"}
            kid = self._id()
            self.contracts[kid] = {"id": kid, "company": cid, "name": "Main"}
            found = {}
            for sku, count in sku_counts.items():
                lid = self._id()
                self.lines[lid] = {"id": lid, "contract": kid, "sku": sku, "count": count}
                found[sku] = lid
            return found

    def writes(self) -> int:
        return sum(1 for r in self.requests if r.method == "PATCH")

    def authorize(self, headers: Dict[str, str], path: str) -> Optional[Reply]:
        if headers.get("authorization") != f"Bearer {self.token}":
            return 401, {}, {"message": "bad token"}
        return None

    def route(self, method: str, path: str, query: Dict[str, str], body: Any) -> Reply:
        parts = path.strip("/").split("/")
        with self._lock:
            if method == "GET" and parts == ["companies"]:
                wanted = {w.casefold() for w in query.get("q", "").split(",") if w}
                return 200, {}, [c for c in self.companies.values()
                                 if not wanted or c["code"].casefold() in wanted or c["name"].casefold() in wanted]
            if method == "GET" and parts == ["contracts"]:
                ids = {int(i) for i in query.get("company", "").split(",") if i}
                return 200, {}, [k for k in self.contracts.values() if k["company"] in ids]
            if method == "GET" and len(parts) == 3 and parts[0] == "contracts" and parts[2] == "lines":
                kid = int(parts[1])
                return 200, {}, [{k: v for k, v in line.items() if k != "contract"}
                                 for line in self.lines.values() if line["contract"] == kid]
            if method == "PATCH" and len(parts) == 2 and parts[0] == "lines":
                line = self.lines.get(int(parts[1]))
                if line is None:
                    return 404, {}, {"message": "no such line"}
                count = (body or {}).get("count")
                if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                    raise BadRequest("count must be a whole number >= 0")
                line["count"] = count
                return 200, {}, {k: v for k, v in line.items() if k != "contract"}
        return 404, {}, {"message": "not found"}
