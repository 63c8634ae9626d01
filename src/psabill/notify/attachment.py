"""The full list of a run's items as a CSV attachment, safe to open in a spreadsheet.

The email shows at most :data:`~psabill.notify.facts.LIST_LIMIT` rows per list;
this file carries every (customer, SKU) item, names whole. Every cell goes
through :func:`psabill.text.clean.cell`: controls escaped, secrets out, and a
text cell a spreadsheet would take for a formula gets a leading ``'``. Items
are in the order :func:`psabill.report.item_order` gives.
"""

import csv
import io

from psabill.report import Run
from psabill.text.clean import cell

COLUMNS = ("customer", "sku", "psa_company", "agreement", "line", "old", "new", "delta",
           "outcome", "rule", "message", "hint")


def items_csv(run: Run) -> str:
    """Every item of ``run``, one row each, with a header row (RFC 4180, CRLF line ends)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for item in run.sorted_items():
        data = item.to_json()
        writer.writerow([cell(data[column]) for column in COLUMNS])
    return out.getvalue()
