"""The optional mapping file: which PSA company (and agreement) a customer bills to.

A CSV with the header ``customer,psa_company[,agreement]``; one row per
customer, matched ignoring case. Any problem aborts the run before a request,
and so does a file another user could have written (see
:func:`psabill.text.files.check_private`).

A source may name a second key for a customer (:attr:`Usage.aliases
<psabill.sources.rows.Usage.aliases>`: a LastPass managed company's id): a row
whose ``customer`` is that key pins the customer as a row with its name would.
Pinning one customer both ways, or a key that is one customer's id and another
customer's name, aborts the run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Mapping, Optional

from psabill.errors import AbortError
from psabill.sources.rows import MAX_BYTES, folded, read_csv_records
from psabill.text.files import check_private, read_capped


@dataclass(frozen=True)
class Pin:
    """One mapping-file row: the company (and maybe agreement) for a customer."""

    psa_company: str
    agreement: Optional[str]
    line: int


def load(path: Optional[Path], aliases: Optional[Mapping[str, str]] = None) -> Dict[str, Pin]:
    """The mapping file keyed by customer (NFC, case-folded); empty when none is configured.

    ``aliases`` maps a folded customer to another key of it (a LastPass id); a row keyed by that key is
    returned under the customer too.
    """
    if path is None:
        return {}
    origin = f"mapping file {path}"
    check_private(path, "mapping file", AbortError)
    records = read_csv_records(read_capped(path, MAX_BYTES, error=AbortError, what="mapping file"), origin=origin,
                               required=("customer", "psa_company"), optional=("agreement",))
    pins: Dict[str, Pin] = {}
    for line, record in records:
        customer = record["customer"].strip()
        company = record["psa_company"].strip()
        agreement = (record.get("agreement") or "").strip() or None
        if not customer:
            raise AbortError(f"{origin} line {line}: empty customer")
        if not company:
            raise AbortError(f"{origin} line {line}: empty psa_company for customer {customer!r}")
        key = folded(customer)
        if key in pins:
            raise AbortError(f"{origin} line {line}: customer {customer!r} is already mapped on line {pins[key].line}")
        pins[key] = Pin(company, agreement, line)
    return _by_alias(pins, aliases or {}, origin)


def _by_alias(pins: Dict[str, Pin], aliases: Mapping[str, str], origin: str) -> Dict[str, Pin]:
    """``pins`` plus, for each customer whose alias is pinned, that pin under the customer."""
    keyed = dict(pins)
    for customer, alias in aliases.items():
        key = folded(alias)
        pin = pins.get(key)
        if pin is None or key == customer:
            continue
        named = key in aliases  # the row's key is also another customer's name
        by_name = pins.get(customer)
        if by_name is not None:
            if named:
                continue  # the customer is pinned by its name; the row keyed by the id is the other's
            raise AbortError(f"{origin} lines {by_name.line} and {pin.line} both pin customer {customer!r}, by its "
                             f"name and by its id {alias}; keep one")
        if named:
            raise AbortError(f"{origin} line {pin.line}: {alias!r} is the id of customer {customer!r} and the name "
                             f"of another customer; pin {customer!r} by its name, or the other by its id")
        keyed[customer] = pin
    return keyed
