"""Notification addresses: parsed from a comma-separated list, checked by syntax only."""

from __future__ import annotations

from typing import Iterable, List

from psabill.errors import UsageError


def parse_list(text: str) -> List[str]:
    """``"a@x.example, b@y.example"`` -> validated, de-duplicated addresses."""
    if "\r" in text or "\n" in text:
        raise UsageError(f"address list {text!r} contains a line break")
    if ";" in text:
        raise UsageError(f"address list {text!r}: separate addresses with commas, not semicolons")
    items = [part.strip() for part in text.split(",")]
    if not any(items):
        raise UsageError(f"address list {text!r} is empty: give at least one address")
    if not all(items):
        raise UsageError(f"address list {text!r} has an empty entry")
    return validate_addresses(items)


def validate_addresses(addresses: Iterable[str]) -> List[str]:
    """Each address checked with email-validator (no DNS); normalized, order kept."""
    from email_validator import EmailNotValidError, validate_email

    seen: List[str] = []
    for address in addresses:
        if any(ch in address for ch in "\r\n"):
            raise UsageError(f"address {address!r} contains a line break")
        try:
            normalized = validate_email(address, check_deliverability=False).normalized
        except EmailNotValidError as exc:
            raise UsageError(f"address {address!r} is not valid: {exc}") from None
        if normalized not in seen:
            seen.append(normalized)
    if not seen:
        raise UsageError("the address list is empty: give at least one address")
    return seen
