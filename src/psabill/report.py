"""The one model of a run: what the ledger stores, and what the CLI, the email, the site and ``--json`` render.

A :class:`Run` is one attempt at the billing update (scheduled, manual, a dry
run, an approval). Its :class:`Item` s are the (customer, SKU) lines of its
plan, each ending in one of the :mod:`psabill.outcomes` words. Counts are
never stored: :attr:`Run.counts` is derived from the items (or, for a list of
runs read without their items, from the ledger's count of them).

JSON: :meth:`Run.to_json` is the one rendering every ``--json`` output and the
history site use for a run; items are in the order :func:`item_order` gives
(customer, then SKU).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Union

from psabill import outcomes

if TYPE_CHECKING:  # decimal costs `status` a millisecond at import, and a whole quantity never needs it
    from decimal import Decimal

#: A PSA quantity: an int when whole, a Decimal otherwise (ConnectWise quantities are decimals).
Quantity = Union[int, "Decimal"]

#: The version of the JSON documents psabill prints; scripts check it (docs/json.md).
JSON_SCHEMA = 1


@dataclass
class Item:
    """One (customer, SKU) line of a run's plan, and how it ended."""

    customer: str
    sku: str
    outcome: str = outcomes.PLANNED
    seq: int = 0  # position in the plan: the ledger's key for the item
    psa_company: Optional[str] = None
    agreement: Optional[str] = None
    line: Optional[str] = None  # addition id (ConnectWise) / contract service id (Autotask)
    product: Optional[str] = None  # the PSA product the line bills
    old: Optional[Quantity] = None  # the PSA's quantity when planned, exactly (2.5 is not 2)
    new: Optional[int] = None  # the seat count the source gave
    message: str = ""
    hint: str = ""
    rule: str = ""  # the guard rule that held it, when outcome is held
    transient: bool = False  # a failure a later attempt may fix (the PSA down, the allowance used up)

    @property
    def delta(self) -> Optional[Quantity]:
        if self.old is None or self.new is None:
            return None
        return self.new - self.old

    @property
    def changes(self) -> bool:
        """Whether the plan changes the PSA quantity."""
        return self.old is not None and self.new is not None and self.old != self.new

    def to_json(self) -> Dict[str, Any]:
        return {
            "customer": self.customer, "sku": self.sku, "outcome": self.outcome, "psa_company": self.psa_company,
            "agreement": self.agreement, "line": self.line, "old": _number(self.old), "new": self.new,
            "delta": _number(self.delta), "message": self.message, "hint": self.hint, "rule": self.rule or None,
            "transient": self.transient,
        }


def _number(value: Optional[Quantity]) -> Union[int, float, None]:
    # JSON stays numeric: a decimal quantity is a JSON number (2.5), not a string.
    return value if value is None or isinstance(value, (int, float)) else float(value)


def item_order(item: Item) -> Any:
    """Items are listed by customer, then SKU (case-folded), then plan order."""
    return (item.customer.casefold(), item.sku.casefold(), item.seq)


@dataclass
class Email:
    """What happened to a run's report email."""

    status: Optional[str] = None  # sent | failed | skipped | pending | None (not attempted)
    message: str = ""
    message_id: Optional[str] = None  # stable per run: a re-send carries the same one


@dataclass
class Approval:
    """An admin's decision on a held plan (``psabill approve`` / ``psabill reject``)."""

    action: str  # approved | rejected
    by: str
    host: str
    at: datetime
    items: int  # how many held items it covered


@dataclass
class Run:
    """Everything known about one run."""

    trigger: str  # scheduled | manual | dry-run | approval
    started_at: datetime
    status: str = outcomes.RUNNING
    id: Optional[int] = None
    account: str = ""  # the config's identity in the ledger
    occurrence: Optional[datetime] = None
    attempt: int = 1  # the n-th run of this occurrence
    of_run: Optional[int] = None  # an approval applies the plan of this run
    finished_at: Optional[datetime] = None
    late_seconds: Optional[int] = None
    message: str = ""
    psa: Optional[str] = None
    api_requests: int = 0
    host: Optional[str] = None
    source_digest: Optional[str] = None  # sha-256 of the source bytes the plan was made from
    # How the run looked when it ran, so a report rendered later (resend, site) says the same.
    account_name: str = ""
    zone: str = "UTC"
    schedule_text: str = ""
    next_run: Optional[datetime] = None
    email: Email = field(default_factory=Email)
    items: List[Item] = field(default_factory=list)
    tally: Optional[Dict[str, int]] = None  # outcome -> count, when read without its items
    approvals: List[Approval] = field(default_factory=list)

    @property
    def counts(self) -> Dict[str, int]:
        """Items per outcome, as the items say; only outcomes that occur."""
        if self.tally is not None and not self.items:
            return dict(self.tally)
        return dict(Counter(item.outcome for item in self.items))

    def count(self, outcome: str) -> int:
        return self.counts.get(outcome, 0)

    @property
    def dry_run(self) -> bool:
        return self.trigger == "dry-run"

    def sorted_items(self) -> List[Item]:
        return sorted(self.items, key=item_order)

    def to_json(self, *, items: bool = True) -> Dict[str, Any]:
        """The one JSON rendering of a run (``run --json``, ``history --json``, ``history show --json``)."""
        seconds = (self.finished_at - self.started_at).total_seconds() if self.finished_at else None
        data: Dict[str, Any] = {
            "id": self.id,
            "trigger": self.trigger,
            "occurrence": _iso(self.occurrence),
            "attempt": self.attempt,
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "status": self.status,
            "late_seconds": self.late_seconds,
            "message": self.message,
            "psa": self.psa,
            "api_requests": self.api_requests,
            "requests_per_second": round(self.api_requests / seconds, 1) if seconds else None,
            "host": self.host,
            "counts": {word: self.counts.get(word, 0) for word in outcomes.ITEM_ORDER},
            "email": {"status": self.email.status, "message": self.email.message},
            "approvals": [{"action": a.action, "by": a.by, "host": a.host, "at": _iso(a.at), "items": a.items}
                          for a in self.approvals],
        }
        if items:
            data["items"] = [item.to_json() for item in self.sorted_items()]
        return data


def _iso(value: Optional[datetime]) -> Optional[str]:
    return value.isoformat() if value is not None else None
