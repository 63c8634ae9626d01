"""Notification addresses: a comma-separated list, each ``address`` or ``Name <address>``, checked by syntax.

Each entry is parsed as an email header would be (``email.headerregistry``),
so ``Billing Team <billing@msp.example>`` is accepted, and its address is
checked with email-validator (syntax only: no DNS). The list keeps the first
of any duplicates, comparing the local part exactly and the domain ignoring
case (RFC 5321: the domain is case-insensitive, the local part need not be),
so a list of 500 with repeats sends each recipient once.
"""

from email.headerregistry import Address
from typing import Iterable, List, NamedTuple

from email_validator import EmailNotValidError, validate_email

from psabill.errors import ConfigError, UsageError


class Recipient(NamedTuple):
    """One notification address, as configured and as the SMTP envelope needs it."""

    display: str  # what the To: header shows: "Name <address>" or the address
    address: str  # the bare address, normalized


def parse_list(text: str) -> List[str]:
    """``"a@x.example, B <b@y.example>"`` -> validated, de-duplicated entries, as typed."""
    if any(ch in text for ch in "\r\n\u2028\u2029\x85"):
        raise UsageError(f"address list {text!r} contains a line break")
    if ";" in text:
        raise UsageError(f"address list {text!r}: separate addresses with commas, not semicolons")
    items = [part.strip() for part in _split(text)]
    if not any(items):
        raise UsageError(f"address list {text!r} is empty: give at least one address")
    if not all(items):
        raise UsageError(f"address list {text!r} has an empty entry")
    return [r.display for r in recipients(items)]


def _split(text: str) -> List[str]:
    """Split on commas outside a quoted display name ("Smith, Jo" <jo@x.example>)."""
    parts, current, quoted = [], [], False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def recipients(entries: Iterable[str]) -> List[Recipient]:
    """Each entry checked and normalized; duplicates dropped (the domain compared ignoring case)."""
    found: List[Recipient] = []
    seen = set()
    for entry in entries:
        recipient = parse_entry(entry)
        local, _, domain = recipient.address.rpartition("@")
        marker = (local, domain.lower())
        if marker not in seen:
            seen.add(marker)
            found.append(recipient)
    if not found:
        raise UsageError("the address list is empty: give at least one address")
    return found


def parse_entry(entry: str) -> Recipient:
    """One ``address`` or ``Name <address>``; UsageError naming it when it is neither."""
    text = entry.strip()
    if any(ch in text for ch in "\r\n\u2028\u2029\x85") or any(ord(ch) < 0x20 for ch in text):
        raise UsageError(f"address {entry!r} contains a line break or control character")
    name, address = "", text
    if text.endswith(">") and "<" in text:
        name, _, rest = text[:-1].rpartition("<")
        address = rest.strip()
        name = name.strip().strip('"').strip()
    try:
        normalized = validate_email(address, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise UsageError(f"address {entry!r} is not valid: {exc}") from None
    if not name:
        return Recipient(normalized, normalized)
    local, _, domain = normalized.rpartition("@")
    try:
        display = str(Address(display_name=name, username=local, domain=domain))
    except (ValueError, IndexError) as exc:
        raise UsageError(f"address {entry!r}: its name {name!r} cannot be put in an email header ({exc})") from None
    return Recipient(display, normalized)


def check_configured(settings: "object") -> List[Recipient]:
    """The recipients of ``[notify] emails`` and the sender ``[notify] from``, or a ConfigError naming the fix."""
    notify = getattr(settings, "notify")
    path = getattr(settings, "path")
    try:
        found = recipients(notify.emails) if notify.emails else []
    except UsageError as exc:
        raise ConfigError(f"{path}: [notify] emails: {exc.message}") from None
    if notify.sender:
        try:
            parse_entry(notify.sender)
        except UsageError as exc:
            raise ConfigError(f"{path}: [notify] from: {exc.message}") from None
    return found
