"""The result of a run: one object that the CLI, the history and the email render."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from decimal import Decimal
from typing import Any, Dict, List, Optional, Union

from psabill.outcomes import (
    ABORTED,
    FAILED,
    FAILED_RUN,
    INTERRUPTED,
    PARTIAL,
    PLANNED,
    RUNNING,
    SUCCESS,
    UNCHANGED,
    UNMAPPED,
    UPDATED,
)


@dataclass
class ItemResult:
    """One (customer, SKU) line of a run."""

    customer: str
    sku: str
    outcome: str
    psa_company: Optional[str] = None
    agreement: Optional[str] = None
    line: Optional[str] = None  # addition id (ConnectWise) / contract service id (Autotask)
    old: Optional[Union[int, Decimal]] = None  # the PSA's quantity, exactly (ConnectWise: 2.5 is not 2)
    new: Optional[int] = None
    message: str = ""
    hint: str = ""

    @property
    def delta(self) -> Optional[Union[int, Decimal]]:
        if self.old is None or self.new is None:
            return None
        return self.new - self.old

    def to_json(self) -> Dict[str, Any]:
        # Every field is a scalar: no deep copy (asdict) needed, and a large run renders thousands of these.
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["delta"] = self.delta
        # JSON stays numeric: a decimal quantity is a JSON number (2.5), not a string.
        return {k: float(v) if isinstance(v, Decimal) else v for k, v in data.items()}


@dataclass
class RunReport:
    """Everything known about one run; built by the runner, rendered at the edges."""

    trigger: str  # scheduled | manual | dry-run
    started_at: datetime
    status: str = RUNNING
    run_id: Optional[int] = None
    occurrence: Optional[datetime] = None
    finished_at: Optional[datetime] = None
    late_seconds: Optional[int] = None
    message: str = ""
    psa_kind: Optional[str] = None
    api_requests: int = 0
    items: List[ItemResult] = field(default_factory=list)
    email_status: Optional[str] = None  # sent | failed | skipped | None (not attempted)
    email_message: str = ""
    account_name: str = ""
    account_zone: str = "UTC"
    schedule_text: Optional[str] = None
    next_run: Optional[datetime] = None

    def count(self, outcome: str) -> int:
        return sum(1 for item in self.items if item.outcome == outcome)

    @property
    def counts(self) -> Dict[str, int]:
        return {
            "updated": self.count(UPDATED) + self.count(PLANNED),
            "unchanged": self.count(UNCHANGED),
            "failed": self.count(FAILED),
            "unmapped": self.count(UNMAPPED),
        }

    def settle(self) -> str:
        """Derive the final status from the items (unless already aborted/failed)."""
        if self.status in (ABORTED, FAILED_RUN, INTERRUPTED):
            return self.status
        failed = self.count(FAILED)
        if failed and failed == len([i for i in self.items if i.outcome != UNMAPPED]):
            self.status = FAILED_RUN
        elif failed:
            self.status = PARTIAL
        else:
            self.status = SUCCESS
        return self.status

    def to_json(self) -> Dict[str, Any]:
        def iso(value: Optional[datetime]) -> Optional[str]:
            return value.isoformat() if value else None

        return {
            "id": self.run_id,
            "trigger": self.trigger,
            "occurrence": iso(self.occurrence),
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "status": self.status,
            "late_seconds": self.late_seconds,
            "message": self.message,
            "psa": self.psa_kind,
            "api_requests": self.api_requests,
            "counts": self.counts,
            "email": {"status": self.email_status, "message": self.email_message},
            "items": [item.to_json() for item in self.items],
        }
