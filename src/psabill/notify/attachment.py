"""The full list of a run's items as a CSV attachment, safe to open in a spreadsheet.

The email shows at most :data:`~psabill.notify.facts.LIST_LIMIT` rows per list;
this file carries every (customer, SKU) item. Names come from outside (usage
sources, the PSA), so a text cell that a spreadsheet would take for a formula
(it starts with ``=``, ``+``, ``-``, ``@``, a tab or a CR) gets a leading ``'``.
Plain integers (quantities, ``-5`` deltas) are left as numbers.
"""

from __future__ import annotations

import re
from typing import Any, List

from psabill.notify.facts import inline
from psabill.report import RunReport

COLUMNS = ("customer", "sku", "psa_company", "agreement", "line", "old", "new", "delta",
           "outcome", "message", "hint")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_INTEGER = re.compile(r"[+-]?[0-9]+\Z")


def cell(value: Any) -> str:
    """One CSV cell: single-line (as in the email) and never a spreadsheet formula."""
    text = "" if value is None else str(value)
    if text.startswith(FORMULA_STARTS) and not _INTEGER.match(text):
        text = "'" + text
    return inline(text)  # after the check: inline() turns a leading tab/CR into "\t"/"\r"


def items_csv(report: RunReport) -> str:
    """Every item of ``report``, one row each, with a header row (RFC 4180, CRLF line ends)."""
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for item in report.items:
        row: List[Any] = [
            item.customer, item.sku, item.psa_company, item.agreement, item.line,
            item.old, item.new, item.delta, item.outcome, item.message, item.hint,
        ]
        writer.writerow([cell(value) for value in row])
    return out.getvalue()
