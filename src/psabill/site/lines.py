"""One run's items, sorted and rendered through a memo of line records: the hot path of a build.

A year of daily runs at 5,000 customers is some three million items, almost
all of them a line that looks exactly as it did the day before. So each
distinct item (every field the site shows: customer, SKU, PSA company,
agreement, line, old, new, outcome, rule, message, hint) becomes one *record*,
made once per build::

    (sort key, (customer, SKU), outcome, old, new, CSV record, HTML row)

(the CSV record and HTML row as UTF-8 bytes, so a page is spliced, not re-encoded)

and a run is read by fetching its items' records (one attribute sweep and one
dict lookup per item, in C), not by rendering each item again. Equal fields
make an equal record: the page and the CSV say exactly what rendering the
item itself would (tests/test_site.py checks that against the plain path).

The sort key is the case-folded (customer, SKU) pair, as
:func:`psabill.report.item_order` has it; when no two items of a run share
it, the run's plan order never decides, and when a run's keys arrive in the
same order as the previous run's (the usual case, day after day) its
permutation is reused.
"""

from __future__ import annotations

from itertools import compress, repeat
from operator import attrgetter, eq, itemgetter, ne
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Sequence, Tuple

if TYPE_CHECKING:
    from psabill.report import Item

FIELDS = attrgetter("customer", "sku", "psa_company", "agreement", "line", "old", "new", "outcome", "rule",
                    "message", "hint")
SORT, PAIR, OUTCOME, OLD, NEW, CSV, HTML = range(7)
_SORT, _PAIR, _OUTCOME = itemgetter(SORT), itemgetter(PAIR), itemgetter(OUTCOME)
_OLD, _NEW, _CSV, _HTML = itemgetter(OLD), itemgetter(NEW), itemgetter(CSV), itemgetter(HTML)
_SEQ = attrgetter("seq")

Record = Tuple[Any, ...]


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")  # cleaned text holds no lone surrogate; never fail on one


class RunLines:
    """A run's items in item order, with their records (same order)."""

    __slots__ = ("items", "records", "_outcomes")

    def __init__(self, items: List["Item"], records: List[Record]) -> None:
        self.items = items
        self.records = records
        self._outcomes: List[str] = list(map(_OUTCOME, records))

    def counts(self) -> Dict[str, int]:
        """Items per outcome word."""
        return {word: self._outcomes.count(word) for word in set(self._outcomes)}

    def html(self, outcome: str) -> bytes:
        """The HTML rows of the items with ``outcome``, in item order, as UTF-8."""
        return b"".join(compress(map(_HTML, self.records), map(eq, self._outcomes, repeat(outcome))))

    def html_by_outcome(self) -> Dict[str, bytes]:
        """:meth:`html` of every outcome, in one pass: the most common outcome (unchanged, nearly
        always) is joined from the runs of rows between the others."""
        words = self._outcomes
        if not words:
            return {}
        rows = list(map(_HTML, self.records))
        counts = self.counts()
        common = max(counts, key=lambda w: (counts[w], w))
        others: Dict[str, List[bytes]] = {}
        pieces: List[bytes] = []
        start = at = 0
        unlike = list(map(ne, words, repeat(common)))
        try:
            while True:
                at = unlike.index(True, at)
                pieces.extend(rows[start:at])
                others.setdefault(words[at], []).append(rows[at])
                at += 1
                start = at
        except ValueError:
            pieces.extend(rows[start:])
        out = {word: b"".join(found) for word, found in others.items()}
        out[common] = b"".join(pieces)
        return out

    def csv(self) -> bytes:
        """The CSV records of every item, in item order (no header), as UTF-8."""
        return b"".join(map(_CSV, self.records))

    def columns(self) -> Tuple[List[Tuple[str, str]], List[Any], List[Any], List[str]]:
        """(pairs, olds, news, outcomes) in item order: what :meth:`facts.Tracker.see_lines` reads."""
        return (list(map(_PAIR, self.records)), list(map(_OLD, self.records)), list(map(_NEW, self.records)),
                self._outcomes)


class LineBook:
    """Makes and remembers records for one build (see the module doc)."""

    def __init__(self, fold: Callable[[str], str], html: Callable[["Item"], str], csv: Callable[["Item"], str]
                 ) -> None:
        self._fold = fold
        self._html = html
        self._csv = csv
        self._records: Dict[Tuple[Any, ...], Record] = {}
        self._pairs: Dict[Tuple[str, str], Tuple[Tuple[str, str], Tuple[str, str]]] = {}
        self._last_keys: List[Any] = []
        self._last_order: List[int] = []
        self._before: Tuple[List[Tuple[Any, ...]], List[Record]] = ([], [])

    def record(self, item: "Item") -> Record:
        pair = (item.customer, item.sku)
        known = self._pairs.get(pair)
        if known is None:
            known = self._pairs[pair] = ((self._fold(item.customer), self._fold(item.sku)), pair)
        return (known[0], known[1], item.outcome, item.old, item.new, _utf8(self._csv(item)),
                _utf8(self._html(item)))

    def _find(self, key: Tuple[Any, ...], item: "Item") -> Record:
        found = self._records.get(key)
        if found is None:
            found = self._records[key] = self.record(item)
        return found

    def lines(self, items: Sequence["Item"]) -> RunLines:
        """``items`` (one run's) sorted in item order, with their records.

        Runs come oldest first and most lines sit where they sat the run
        before, with the same fields: those take the record they had then
        (one comparison each); only the others are looked up by their fields.
        """
        keys = list(map(FIELDS, items))
        before_keys, before_records = self._before
        if len(before_keys) == len(keys):
            records: List[Any] = list(before_records)
            unlike = list(map(ne, keys, before_keys))
            at = -1
            try:
                while True:
                    at = unlike.index(True, at + 1)
                    records[at] = self._find(keys[at], items[at])
            except ValueError:
                pass
        else:
            records = list(map(self._records.get, keys))
            at = -1
            try:
                while True:
                    at = records.index(None, at + 1)
                    records[at] = self._records[keys[at]] = self.record(items[at])
            except ValueError:
                pass
        self._before = (keys, records)
        sort_keys = list(map(_SORT, records))
        if sort_keys == self._last_keys:
            order = self._last_order
        elif len(set(sort_keys)) == len(sort_keys):
            order = sorted(range(len(sort_keys)), key=sort_keys.__getitem__)
            self._last_keys, self._last_order = sort_keys, order
        else:  # a pair (or two that fold alike) more than once: plan order breaks the tie
            seqs = list(map(_SEQ, items))
            order = sorted(range(len(sort_keys)), key=lambda n: (sort_keys[n], seqs[n]))
            self._last_keys, self._last_order = [], []
        return RunLines(list(map(items.__getitem__, order)), list(map(records.__getitem__, order)))
