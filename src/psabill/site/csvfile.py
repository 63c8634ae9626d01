"""A run's items as the CSV download next to its page (``runs/000042.csv``).

One row per item in :func:`psabill.report.item_order`, a header row first, RFC
4180 with CRLF line ends (Python's ``csv`` dialect). Every cell goes through
:func:`psabill.text.clean.cell`: secrets out, controls escaped, never a
spreadsheet formula; quantities stay numbers (a decimal one as its exact
value, as ``--json`` has it).

:class:`CsvRows` cleans and quotes the text part of a line once per build: the
cells before the quantities (customer .. line) and after them (outcome ..
hint) are memoised as finished CSV text (and :mod:`psabill.site.lines`
memoises whole records on top).
"""

from __future__ import annotations

import csv
import io
from typing import TYPE_CHECKING, Any, Dict, Iterable, Sequence, Tuple

from psabill.site.fmt import number
from psabill.text import clean

if TYPE_CHECKING:
    from psabill.report import Item

COLUMNS = ("customer", "sku", "psa_company", "agreement", "line", "old", "new", "delta", "outcome", "rule",
           "message", "hint")


def csv_line(cells: Sequence[Any]) -> str:
    """``cells`` as one CSV record without its line end, quoted exactly as ``csv.writer`` quotes."""
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(cells)
    return out.getvalue()


def _quantity(value: Any) -> str:
    """A quantity cell: what ``csv.writer`` writes for ``clean.cell(number(value))``."""
    if value is None:
        return ""
    cell = clean.cell(number(value))
    if isinstance(cell, (int, float)):
        return repr(cell) if isinstance(cell, float) else str(cell)
    return csv_line([cell])


class CsvRows:
    """Renders runs' items as CSV, memoising the cleaned text cells of each line for one build."""

    def __init__(self) -> None:
        self._heads: Dict[Tuple[Any, ...], str] = {}
        self._tails: Dict[Tuple[Any, ...], str] = {}
        self.header = csv_line(COLUMNS) + "\r\n"

    def _head(self, item: "Item") -> str:
        key = (item.customer, item.sku, item.psa_company, item.agreement, item.line)
        try:
            return self._heads[key]
        except KeyError:
            text = self._heads[key] = csv_line([clean.cell(v) for v in key])
            return text

    def _tail(self, item: "Item") -> str:
        key = (item.outcome, item.rule, item.message, item.hint)
        try:
            return self._tails[key]
        except KeyError:
            text = self._tails[key] = csv_line([clean.cell(v) for v in key])
            return text

    def row(self, item: "Item") -> str:
        """One item's CSV record, with its line end."""
        old, new = item.old, item.new
        if type(old) is int and type(new) is int:  # the common case, written directly
            return f"{self._head(item)},{old},{new},{new - old},{self._tail(item)}\r\n"
        return (f"{self._head(item)},{_quantity(old)},{_quantity(new)},{_quantity(item.delta)},"
                f"{self._tail(item)}\r\n")

    def rows(self, items: Iterable["Item"]) -> bytes:
        """The CSV file of ``items`` (already in item order), header first, as UTF-8."""
        return (self.header + "".join(map(self.row, items))).encode("utf-8", "surrogatepass")
