"""What the history site reads: :class:`SiteView`, the ledger's side of the contract.

The site never opens the ledger itself: it asks a view, which the ledger
implements (and the tests fake: ``tests/support/sites.py``). Every method
returns :class:`psabill.report.Run` and :class:`psabill.report.Item` objects,
the one run model; the site only reads them, never changes them. Times are
timezone-aware (a naive time is taken as UTC). "Oldest first" and "newest
first" are by ``started_at``, then id.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Dict, List, Optional, Protocol, Sequence, Tuple

if TYPE_CHECKING:
    from psabill.report import Item, Run


class SiteView(Protocol):
    """The ledger, as the site reads it (one account)."""

    def runs(self, since: datetime) -> List["Run"]:
        """Runs started at or after ``since``, newest first; each with ``.tally`` (outcome -> count), no
        items and no approvals, but every other field (the index shows trigger, status, times,
        ``email``, ``host``, ``message``, ``attempt``; ``of_run`` tells which held plans were applied)."""
        ...

    def run(self, run_id: int) -> Optional["Run"]:
        """One run with its items and its approvals (``Run.approvals``); None when there is no such run."""
        ...

    def attempts(self, run: "Run") -> List["Run"]:
        """Every run of ``run``'s occurrence (its retries within catch-up, ``run`` included) and every
        approval run of any of them (``of_run``), oldest first, without items. A run with no
        occurrence (a manual run) has itself and its approvals."""
        ...

    def customers_lines(self, customers: Sequence[str], since: datetime) -> Dict[str, List[Tuple["Run", "Item"]]]:
        """Per customer of ``customers``: its items (every SKU) in runs started at or after ``since``,
        oldest first, each with its run (the run without items); ``[]`` for a customer with none. An
        update asks for the customers whose pages it writes, a chunk at a time (the ledger batches its reads)."""
        ...

    def sku_totals(self, since: datetime) -> List[Tuple["Run", Dict[str, int]]]:
        """Per run started at or after ``since``, oldest first: SKU -> the sum of ``Item.new`` over
        its items (items without a ``new`` count nothing). A run without items maps to ``{}``."""
        ...
