"""What the site says about the runs, decided once: which lines are events, what recurs, what is open.

Pure functions over :class:`psabill.report.Run` and :class:`~psabill.report.Item`;
:mod:`psabill.site.pages` turns their answers into HTML.

*Real runs* are scheduled and manual ones: a dry run writes nothing and an
approval run applies part of an earlier plan. *Plan runs* are the runs that
made a plan (they have items) and are not approvals: the seats chart has one
point per plan run.

*Events* (a customer page lists these, not every run): a line's item is an
event when its outcome is not ``unchanged``, when it is the line's first item
in the window, or when an ``unchanged`` item follows anything but an applied
quantity equal to its own (a recovery after a failure, or a quantity someone
changed in the PSA by hand). Dry runs are not part of a customer's lines. So
a run that leaves a customer unchanged changes nothing on the customer's page,
and :func:`psabill.site.builder.update` rewrites only the pages of the customers
a run touched.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, tzinfo
from itertools import repeat
from operator import attrgetter, ne
from typing import TYPE_CHECKING, Dict, Iterable, List, Optional, Sequence, Tuple

from psabill import outcomes
from psabill.site.fmt import aware, local

if TYPE_CHECKING:
    from psabill.report import Item, Run

#: Outcomes a line can recur in ("failed in 9 of the last 9 runs").
RECURRING_OUTCOMES = (outcomes.FAILED, outcomes.UNKNOWN, outcomes.UNMAPPED)
#: How many recent real runs the recurring-problem count looks at, and how often a problem must occur.
RECURRING_RUNS = 10
RECURRING_MIN = 2
#: Outcomes the index lists from the latest run, each with up to this many items.
ACTION_LIST_LIMIT = 10
MOVERS = 8
#: Outcomes that count as a change on the changes-per-run chart (see charts.STACKS).
CHANGE_STACKS = ((outcomes.UPDATED,), (outcomes.PLANNED,), (outcomes.HELD,), (outcomes.FAILED, outcomes.UNKNOWN))
NOT_REAL = ("dry-run", "approval")

LineKey = Tuple[str, str]


def order_key(run: "Run") -> Tuple[datetime, int]:
    return aware(run.started_at), run.id or 0


def is_real(run: "Run") -> bool:
    return run.trigger not in NOT_REAL


def item_count(run: "Run") -> int:
    return sum(run.counts.values())


def is_plan_run(run: "Run") -> bool:
    return run.trigger != "approval" and item_count(run) > 0


def outcome_rank(word: str) -> Tuple[int, str]:
    """Outcomes in :data:`psabill.outcomes.ITEM_ORDER`; a word it does not know comes after, by name."""
    try:
        return outcomes.ITEM_ORDER.index(word), ""
    except ValueError:
        return len(outcomes.ITEM_ORDER), str(word)


# -- events ---------------------------------------------------------------------


class Tracker:
    """Decides, item by item in run order, which of a line's items are events (see the module doc).

    A line's state is the quantity the PSA holds after an ``updated`` or
    ``unchanged`` item (``new``, or ``old`` for unchanged), or :data:`_OFF`
    after any other outcome: an ``unchanged`` item is an event unless the state
    before it equals its ``new``. :meth:`see_all` judges a whole run at once
    (the same answers as :meth:`see` item by item, at a fraction of the cost).
    """

    __slots__ = ("_state",)

    def __init__(self) -> None:
        self._state: Dict[LineKey, object] = {}

    @staticmethod
    def _after(item: "Item") -> object:
        if item.outcome == outcomes.UPDATED:
            return item.new
        if item.outcome == outcomes.UNCHANGED:
            return item.old
        return _OFF

    def seed(self, item: "Item") -> None:
        """Remember ``item`` as the line's latest without judging it (the run before the one judged)."""
        self._state[(item.customer, item.sku)] = self._after(item)

    def see(self, item: "Item") -> bool:
        """Whether ``item`` is an event of its line; then remember it as the line's latest."""
        key = (item.customer, item.sku)
        before = self._state.get(key, _UNSEEN)
        self._state[key] = self._after(item)
        return item.outcome != outcomes.UNCHANGED or before != item.new or before is _UNSEEN

    def see_all(self, items: Sequence["Item"]) -> List[bool]:
        """:meth:`see` of each of ``items`` in turn."""
        return self.see_lines(list(map(_PAIR, items)), list(map(_OLD, items)), list(map(_NEW, items)),
                              list(map(_OUTCOME, items)))

    def see_lines(self, pairs: List[LineKey], olds: List[object], news: List[object], words: List[str]
                  ) -> List[bool]:
        """:meth:`see` of each item given as columns: its (customer, SKU), old, new and outcome.
        Done in bulk when no line occurs twice (one run), else item by item."""
        state = self._state
        if len(set(pairs)) != len(pairs):
            flags = []
            for pair, old, new, word in zip(pairs, olds, news, words):
                before = state.get(pair, _UNSEEN)
                state[pair] = new if word == outcomes.UPDATED else old if word == outcomes.UNCHANGED else _OFF
                flags.append(word != outcomes.UNCHANGED or before != new or before is _UNSEEN)
            return flags
        before = list(map(state.get, pairs, repeat(_UNSEEN)))
        flags = list(map(ne, before, news))  # _UNSEEN and _OFF differ from every quantity
        state.update(zip(pairs, olds))  # right for unchanged items; the others are put right below
        at = -1
        changed = list(map(ne, words, repeat(outcomes.UNCHANGED)))
        try:
            while True:
                at = changed.index(True, at + 1)
                flags[at] = True
                state[pairs[at]] = news[at] if words[at] == outcomes.UPDATED else _OFF
        except ValueError:
            pass
        return flags

    def known(self, item: "Item") -> bool:
        return (item.customer, item.sku) in self._state


class _Marker:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


_UNSEEN = _Marker("unseen")
_OFF = _Marker("off")  # after an item that left the PSA's quantity unknown or not as planned
_PAIR = attrgetter("customer", "sku")
_NEW = attrgetter("new")
_OLD = attrgetter("old")
_OUTCOME = attrgetter("outcome")


def customer_events(lines: Iterable[Tuple["Run", "Item"]]) -> List[Tuple["Run", "Item"]]:
    """The events among one customer's lines (oldest first), dry runs left out."""
    tracker = Tracker()
    return [(run, item) for run, item in lines if run.trigger != "dry-run" and tracker.see(item)]


# -- the index ------------------------------------------------------------------


@dataclass
class Recurring:
    customer: str
    sku: str
    outcome: str
    times: int  # in how many of the last `of` runs
    of: int
    item: "Item"  # the latest one
    run: "Run"


def recurring_lines(recent: Sequence["Run"]) -> List[Recurring]:
    """Lines whose problem in the newest of ``recent`` (real plan runs with items, newest first)
    happened in at least RECURRING_MIN of them."""
    if not recent:
        return []
    seen: List[Dict[LineKey, str]] = [
        {(i.customer, i.sku): i.outcome for i in run.items if i.outcome in RECURRING_OUTCOMES} for run in recent]
    found: List[Recurring] = []
    latest = recent[0]
    for item in latest.items:
        if item.outcome not in RECURRING_OUTCOMES:
            continue
        key = (item.customer, item.sku)
        times = sum(1 for problems in seen if problems.get(key) == item.outcome)
        if times >= RECURRING_MIN:
            found.append(Recurring(item.customer, item.sku, item.outcome, times, len(recent), item, latest))
    found.sort(key=lambda r: (-r.times, outcome_rank(r.outcome), r.customer.casefold(), r.sku.casefold()))
    return found


def recurring_run_problem(real: Sequence["Run"]) -> Optional[Tuple[int, int, "Run"]]:
    """``(bad runs, of how many, the newest)`` when the newest of ``real`` (newest first, at most
    RECURRING_RUNS) went bad and others did too; else None."""
    recent = list(real[:RECURRING_RUNS])
    if not recent or recent[0].status not in outcomes.BAD:
        return None
    bad = sum(1 for run in recent if run.status in outcomes.BAD)
    return (bad, len(recent), recent[0]) if bad >= RECURRING_MIN else None


def open_held(runs: Sequence["Run"]) -> List["Run"]:
    """Runs (newest first) with held items that no approval run in ``runs`` has applied yet. A
    rejected plan's items are ``rejected``, not ``held``, so it is not listed either."""
    applied = {run.of_run for run in runs if run.trigger == "approval" and run.of_run is not None}
    return [run for run in runs if run.trigger != "dry-run" and run.count(outcomes.HELD) > 0
            and run.id not in applied]


def month_start(now: datetime, zone: tzinfo) -> datetime:
    t = local(now, zone)
    return t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


@dataclass
class Mover:
    customer: str
    before: int
    after: int

    @property
    def change(self) -> int:
        return self.after - self.before


def seats_by_customer(run: "Run", field: str = "new") -> Dict[str, int]:
    out: Dict[str, int] = {}
    for item in run.items:
        value = getattr(item, field)
        if value is None and field == "old":
            value = item.new
        if value is None:
            continue
        out[item.customer] = out.get(item.customer, 0) + int(value)
    return out


def movers(baseline: Optional["Run"], baseline_field: str, current: Optional["Run"], limit: int = MOVERS
           ) -> List[Mover]:
    """The customers whose seats (summed over SKUs) moved most from ``baseline`` to ``current``."""
    if current is None or baseline is None:
        return []
    before = seats_by_customer(baseline, baseline_field)
    after = seats_by_customer(current)
    moved = [Mover(name, before.get(name, 0), after.get(name, 0)) for name in set(before) | set(after)]
    moved = [m for m in moved if m.change]
    moved.sort(key=lambda m: (-abs(m.change), m.customer.casefold(), m.customer))
    return moved[:limit]


def movers_baseline(plan_runs: Sequence["Run"], start: datetime) -> Tuple[Optional["Run"], str]:
    """The run the month's movers are measured from: the last real plan run before ``start`` (its
    seats), else the month's first (its quantities before it ran). ``plan_runs`` is oldest first."""
    real = [run for run in plan_runs if is_real(run)]
    before = [run for run in real if aware(run.started_at) < start]
    if before:
        return before[-1], "new"
    within = [run for run in real if aware(run.started_at) >= start]
    return (within[0], "old") if within else (None, "new")
