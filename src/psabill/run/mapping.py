"""The optional mapping file: which PSA company (and agreement) a customer bills to.

A CSV with the header ``customer,psa_company[,agreement]``; one row per
customer, matched ignoring case. Any problem aborts the run before a request,
and so does a file another user could have written (see
:func:`psabill.text.files.check_private`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

from psabill.errors import AbortError
from psabill.text.files import check_private
from psabill.sources import read_capped, read_csv_records


@dataclass(frozen=True)
class Pin:
    """One mapping-file row: the company (and maybe agreement) for a customer."""

    psa_company: str
    agreement: Optional[str]
    line: int


def load(path: Optional[Path]) -> Dict[str, Pin]:
    """The mapping file keyed by case-folded customer; empty when none is configured."""
    if path is None:
        return {}
    origin = f"mapping file {path}"
    check_private(path, "mapping file", AbortError)
    records = read_csv_records(read_capped(path, what="mapping file"), origin=origin,
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
        key = customer.casefold()
        if key in pins:
            raise AbortError(f"{origin} line {line}: customer {customer!r} is already mapped on line {pins[key].line}")
        pins[key] = Pin(company, agreement, line)
    return pins
