"""A matched sample book: LastPass managed companies and the PSA customers that bill them.

``psabill demo`` and ``psabill sandbox --source lastpass`` serve it. The
LastPass stand-in holds real-looking companies (some with the mfa add-on, one
suspended). The PSA sandbox (ConnectWise or Autotask) bills most of them under
the same name, on one agreement (contract) each, at about last month's seats,
so a run changes a few lines by a few seats as a real month does. The book
also holds one of each case an admin must act on:

* a company the PSA does not know (unmapped);
* a company billed on two agreements (psabill will not guess which);
* a company whose agreement lacks the MFA product (add it in the PSA);
* a suspended company, which LastPass bills 0.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

from psabill.sandbox.autotask import AutotaskStandin
from psabill.sandbox.connectwise import Sandbox
from psabill.sandbox.lastpass import LastPassStandin

SKU, MFA_SKU = "LastPass", "LastPass+MFA"
CONNECTWISE_PRODUCTS = {SKU: "SEATS-STD", MFA_SKU: "SEATS-MFA"}
AUTOTASK_SERVICES = {SKU: (501, "SEATS-STD"), MFA_SKU: (502, "SEATS-MFA")}
#: Who is billed: every account status but ``disabled`` (the ``[source] count_statuses`` default).
COUNTED = ("enrolled", "pending-invitation", "expired-invitation", "awaiting-approval", "staged")


class Case(NamedTuple):
    customer: str
    what: str  # e.g. "unmapped: the PSA has no such company"


class Book(NamedTuple):
    lastpass: LastPassStandin
    psa: Any  # Sandbox or AutotaskStandin
    kind: str
    products: Dict[str, Any]  # the [products] table for this PSA
    lines: List[str]  # one line per PSA customer: identifier, name, agreement, quantities
    cases: List[Case]  # the customers that show a case, and which

    def __enter__(self) -> "Book":
        self.psa.start()
        try:
            self.lastpass.start()
        except BaseException:
            self.psa.stop()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.lastpass.stop()
        self.psa.stop()


def identifier(name: str) -> str:
    """A PSA company identifier for ``name``: ``Northwind Dental LLC`` -> ``NORTHWINDDEN``."""
    letters = re.sub(r"[^A-Z0-9]+", "", name.upper().encode("ascii", "ignore").decode())
    return letters[:12] or "COMPANY"


def build(kind: str = "connectwise", *, companies: int = 12, seed: int = 7, port: int = 0,
          lastpass_port: int = 0, today: Optional[date] = None, cases: bool = True) -> Book:
    """The matched book for ``kind`` (``connectwise`` or ``autotask``); servers not started yet.

    ``cases=False`` leaves out the four cases an admin must act on: every company then maps to
    one agreement that holds its product, as in a tidy PSA."""
    if companies < 6:
        raise ValueError("the book needs at least 6 companies to show every case")
    lastpass = LastPassStandin.sample(companies, seed=seed, users=(4, 40), suspended_share=0.0, mfa_share=0.4,
                                      port=lastpass_port)
    ordered = sorted(lastpass.companies.values(), key=lambda c: c["id"])
    none: Dict[str, Any] = {}  # matches no company
    unmapped, twice, no_mfa, suspended = (ordered[-1], ordered[-2], ordered[-3], ordered[-4]) if cases \
        else (none, none, none, none)
    if cases:
        no_mfa["addons"] = sorted(set(no_mfa["addons"]) | {"mfa"})
        suspended["status"] = "suspended"
    psa: Any
    if kind == "connectwise":
        psa = Sandbox(port=port)
        products: Dict[str, Any] = dict(CONNECTWISE_PRODUCTS)
    elif kind == "autotask":
        psa = AutotaskStandin(today=today or date.today(), port=port)
        for service_id, service in AUTOTASK_SERVICES.values():
            psa.add_catalog_service(service, service_id)
        products = {sku: service_id for sku, (service_id, _) in AUTOTASK_SERVICES.items()}
    else:
        raise ValueError(f"unknown PSA kind {kind!r}")
    lines: List[str] = []
    codes: Dict[str, int] = {}
    for n, company in enumerate(ordered):
        if company is unmapped:
            continue
        sku = MFA_SKU if "mfa" in company["addons"] else SKU
        seats = lastpass.seats(company["id"], COUNTED)
        # Last month's count: half the lines a few seats off, as a month of hires and leavers leaves them.
        billed = max(1, seats + (0, 2 + n % 3, 0, -1)[n % 4]) if company is not suspended else max(seats, 9)
        if company is no_mfa:
            sku = SKU  # billed as plain seats: the agreement lacks the MFA product
        agreements = ("Managed Services", "Managed Services 2026") if company is twice else ("Managed Services",)
        code = identifier(company["name"])
        codes[code] = codes.get(code, 0) + 1
        code = code if codes[code] == 1 else f"{code[:10]}{codes[code]:02d}"  # identifiers are unique in a PSA
        lines.append(_add(psa, kind, code, company["name"], agreements, products[sku], billed))
    if not cases:
        return Book(lastpass, psa, kind, products, lines, [])
    shown = [
        Case(unmapped["name"], "unmapped: the PSA has no company of that name"),
        Case(twice["name"], "failed: billed on two agreements, and psabill will not guess which"),
        Case(no_mfa["name"], "failed: has the mfa add-on, and its agreement lacks the MFA product"),
        Case(suspended["name"], "updated to 0: suspended in LastPass, which bills it nothing"),
    ]
    return Book(lastpass, psa, kind, products, lines, shown)


def _add(psa: Any, kind: str, code: str, name: str, agreements: Tuple[str, ...], product: Any, quantity: int) -> str:
    if kind == "connectwise":
        company = psa.add_company(code, name)
        ids = [psa.add_agreement(company, title) for title in agreements]
        for agreement in ids:
            psa.add_addition(agreement, product, quantity)
    else:
        company = psa.add_company(name, code)
        ids = [psa.add_contract(company, title) for title in agreements]
        for contract in ids:
            psa.add_service(contract, int(product), quantity)
    where = ", ".join(f"{title!r} (#{i})" for title, i in zip(agreements, ids))
    names = {service_id: service for service_id, service in AUTOTASK_SERVICES.values()}
    shown = f"{names[int(product)]} (service {product})" if kind == "autotask" else product
    return f"{code:<12} {name!r}: {where}: {shown} = {quantity}"
