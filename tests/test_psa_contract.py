"""One contract, every PSA: what every PsaClient must do, whichever PSA is behind it.

Each test body runs against the ConnectWise sandbox, the Autotask sandbox and
"absolute", a third PSA that exists only in the tests (tests/support/absolute_psa.py,
registered from there: nothing under src/ knows it), through the same engine, and every request the two real PSAs' clients sent is checked
against the PSA's published schema (tests/support/psa_schema.py), so the
sandboxes cannot agree with a wrong client. What differs between the PSAs
(how a book is set up, how a quantity is read back) is in the ``Book``
adapters below; the bodies say only what both must do.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Tuple
from urllib.parse import urlencode

import pytest

from psabill.config.settings import Settings
from psabill.errors import AbortError
from psabill.outcomes import PLANNED, UNCHANGED, UNMAPPED, UPDATED
from psabill.psa.base import open_client
from psabill.report import Run
from psabill.sandbox.autotask import AutotaskStandin
from psabill.sandbox.connectwise import Sandbox
from psabill.sources.rows import UsageRow
from support import absolute_psa
from support.env import connectwise_log_problems, settings_for
from support.runs import refresh
from support.psa_schema import autotask_problems

TODAY = date(2026, 12, 1)
FAST = {"backoff": 0.01, "max_wait": 0.05}
SKUS = {"LastPass": "101", "LastPass+MFA": "102"}  # SKU -> PSA product (ConnectWise identifier / Autotask service)


class Book:
    """One PSA sandbox holding customers with a line per SKU, and what the contract needs of it."""

    kind: str
    settings: Settings
    quantity: Callable[[str, str], Any]  # (customer, SKU) -> the quantity the PSA holds now
    problems: Callable[[], List[str]]  # every request so far, checked against the published schema
    writes: Callable[[], int]  # how many writes the PSA received
    break_credentials: Callable[[], None]
    secret: str


def _connectwise(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, customers: Dict[str, int]) -> Iterator[Book]:
    with Sandbox() as sb:
        lines: Dict[Tuple[str, str], Tuple[int, int]] = {}
        for customer, quantity in customers.items():
            agreement = sb.add_agreement(sb.add_company(customer, f"{customer} Ltd"))
            for sku, product in SKUS.items():
                lines[(customer, sku)] = (agreement, sb.add_addition(agreement, product, quantity))
        monkeypatch.setenv("CW_KEY", sb.private_key)
        book = Book()
        book.kind = "connectwise"
        book.settings = settings_for(tmp_path / "config.toml", {
            "products": SKUS, "psa": {**sb.config_section(), "private_key_env": "CW_KEY", "max_retries": 0}})
        book.quantity = lambda customer, sku: sb.additions[lines[(customer, sku)][0]][lines[(customer, sku)][1]][
            "quantity"]
        book.problems = lambda: connectwise_log_problems(sb)
        book.writes = lambda: len(sb.patches())
        book.break_credentials = lambda: setattr(sb, "private_key", "rotated-elsewhere")
        book.secret = sb.private_key
        yield book


def _autotask(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, customers: Dict[str, int]) -> Iterator[Book]:
    with AutotaskStandin(today=TODAY) as at:
        services: Dict[Tuple[str, str], int] = {}
        for customer, quantity in customers.items():
            contract = at.add_contract(at.add_company(f"{customer} Ltd", customer))
            for sku, service in SKUS.items():
                services[(customer, sku)] = at.add_service(contract, int(service), quantity)
        monkeypatch.setenv("AT_SECRET", at.secret)
        book = Book()
        book.kind = "autotask"
        book.settings = settings_for(tmp_path / "config.toml", {
            "products": SKUS, "psa": {"kind": "autotask", "url": at.url + "/ATServicesRest/", "username": at.username,
                                      "integration_code": at.integration_code, "secret_env": "AT_SECRET",
                                      "max_retries": 0}})
        book.quantity = lambda customer, sku: at.units(services[(customer, sku)])

        def problems() -> List[str]:
            return [p for r in at.requests for p in autotask_problems(
                r.method, at.url + r.path + ("?" + urlencode(r.query) if r.query else ""), r.headers, r.body)]

        book.problems = problems
        book.writes = lambda: len(at.adjustments)
        book.break_credentials = lambda: setattr(at, "secret", "rotated-elsewhere")
        book.secret = at.secret
        yield book


def _absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, customers: Dict[str, int]) -> Iterator[Book]:
    absolute_psa.register()
    server = absolute_psa.AbsoluteServer()
    server.start()
    try:
        lines = {(customer, sku): line for customer, quantity in customers.items()
                 for sku, line in server.add(customer, {product: quantity for product in SKUS.values()}).items()}
        by_sku = {(customer, sku): lines[(customer, product)] for (customer, product) in lines
                  for sku, p in SKUS.items() if p == product}
        monkeypatch.setenv("ABS_TOKEN", server.token)
        book = Book()
        book.kind = absolute_psa.KIND
        book.settings = settings_for(tmp_path / "config.toml", {
            "products": SKUS, "psa": {"kind": "absolute", "url": server.url, "secret_env": "ABS_TOKEN",
                                      "max_retries": 0}})
        book.quantity = lambda customer, sku: server.lines[by_sku[(customer, sku)]]["count"]

        def problems() -> List[str]:  # no published schema: the server refused nothing but a stale token
            return [f"{r.method} {r.path} -> {r.status}" for r in server.requests if r.status >= 400 and r.status != 401]

        book.problems = problems
        book.writes = server.writes
        book.break_credentials = lambda: setattr(server, "token", "rotated-elsewhere")
        book.secret = server.token
        yield book
    finally:
        server.stop()


CUSTOMERS = {f"C{n:04d}": 10 for n in range(12)}
BOOKS = {"connectwise": _connectwise, "autotask": _autotask, "absolute": _absolute}


@pytest.fixture(params=list(BOOKS))
def book(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Book]:
    yield from BOOKS[request.param](tmp_path, monkeypatch, CUSTOMERS)


def run(book: Book, rows: List[UsageRow], *, dry_run: bool = False) -> Run:
    client = open_client(book.settings.psa, billing_date=TODAY, **FAST)
    announced: List[Tuple[List[int], int]] = []  # (keys of the batch, writes the PSA had received by then)

    def sending(batch: Any) -> None:
        announced.append(([target.key for target in batch], book.writes()))

    try:
        report = refresh(client, rows, products=book.settings.product_map, dry_run=dry_run, sending=sending)
    finally:
        client.close()
    # Every item in the plan, in source order; every write announced (its intent recorded) once, before
    # anything of its batch was sent.
    assert [(i.customer, i.sku) for i in report.items] == [(r.customer, r.sku) for r in rows]
    keys = [key for batch, _ in announced for key in batch]
    assert len(keys) == len(set(keys))
    assert set(keys) == {i.seq for i in report.items if i.outcome == UPDATED}
    before = 0
    for batch, writes in announced:
        assert writes <= before, "a write was sent before its batch was announced"
        before += len(batch)
    return report


def usage(changes: Dict[str, int]) -> List[UsageRow]:
    return [UsageRow(customer, sku, changes.get(customer, 10)) for customer in CUSTOMERS for sku in SKUS]


def test_a_refresh_brings_every_line_to_its_seats_and_a_rerun_writes_nothing(book: Book) -> None:
    rows = usage({"C0001": 12, "C0002": 7, "C0005": 0})
    first = run(book, rows)
    assert first.count(UPDATED) == 6 and first.count(UNCHANGED) == len(rows) - 6
    for row in rows:
        assert book.quantity(row.customer, row.sku) == row.seats, row
    writes = book.writes()
    assert writes == 6
    second = run(book, rows)
    assert second.count(UNCHANGED) == len(rows) and book.writes() == writes  # never double-counts
    assert book.problems() == []


def test_a_dry_run_plans_the_changes_and_writes_nothing(book: Book) -> None:
    report = run(book, usage({"C0003": 20}), dry_run=True)
    assert report.count(PLANNED) == 2
    planned = [i for i in report.items if i.outcome == PLANNED]
    assert {(i.customer, i.old, i.new) for i in planned} == {("C0003", 10, 20)}
    assert book.writes() == 0 and book.quantity("C0003", "LastPass") == 10
    assert book.problems() == []


def test_a_customer_the_psa_does_not_know_is_unmapped_and_the_rest_still_update(book: Book) -> None:
    report = run(book, usage({"C0004": 11}) + [UsageRow("Nobody Inc", "LastPass", 3)])
    unmapped = [i for i in report.items if i.outcome == UNMAPPED]
    assert [(i.customer, i.sku) for i in unmapped] == [("Nobody Inc", "LastPass")]
    assert book.quantity("C0004", "LastPass+MFA") == 11 and book.writes() == 2
    assert book.problems() == []


def test_refused_credentials_abort_before_any_write_and_never_show_the_secret(book: Book) -> None:
    book.break_credentials()
    with pytest.raises(AbortError) as info:
        run(book, usage({"C0006": 30}))
    assert "refused the credentials; nothing was written" in info.value.message
    assert book.secret not in info.value.message and book.writes() == 0
