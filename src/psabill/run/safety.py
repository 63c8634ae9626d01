"""The safety net: which planned changes an unattended run holds for approval. Pure.

A broken source writes wrong money as readily as a good one, so before an
unattended run (``run --scheduled``, ``run --yes``) writes anything, its plan
is compared with the source it came from and the last run that applied one.
What looks like a broken source is held for ``psabill approve``; everything
else is written. An interactive run shows the same findings above its preview,
and the admin's "y" covers them.

The rules, each with a key in ``[guard]`` (README, "What psabill refuses to do
unattended"; each has a test named after it):

Holding the whole run, because the source looks incomplete or broken:

* ``hold_empty``: the source has no rows, but the last applied run had some.
* ``hold_unterminated``: the source's last row has no line end (a file, or a
  command's output, cut mid-row turns 25 seats into 2).
* ``max_missing_share``: more than this share of the (customer, SKU) rows the
  last applied run had is missing from the source.
* ``max_zeroed_share``: the plan sets more than this share of the lines that
  hold seats to 0.
* ``max_sku_drop``: a SKU's total seats would fall by more than this share
  (and by more than ``line_slack`` seats: a small SKU losing a customer is
  not a broken source).

Holding one line, and writing the others:

* ``max_line_factor`` / ``line_slack``: a line would grow to more than
  ``max_line_factor`` times its seats and by more than ``line_slack`` (25 to
  999,999,999). A line that holds 0, or a customer the last applied run did
  not have, is new: only the ceiling applies to it.
* ``max_seats``: a line's seat count is above this ceiling.
* ``hold_closed_period``: the change would land on an invoice for a billing
  period that has already ended (ConnectWise: the agreement's next invoice,
  not yet generated, is for an earlier billing cycle than the one holding the
  billing date). The PSA client says so on the line; the engine marks the item
  with this rule, and the guard holds it.

A first run (no run applied yet) has no baseline: only the rules that need
none apply, so PSA lines that already hold similar numbers pass.
"""

from typing import Dict, List, NamedTuple, Optional, Sequence, Set, Tuple

from psabill import outcomes
from psabill.config.schema import GuardSettings
from psabill.report import Item
from psabill.sources.rows import folded

Key = Tuple[str, str]  # (folded customer, SKU)


class Baseline(NamedTuple):
    """What the last applied run saw: its run id and its (customer, SKU) rows."""

    run_id: int
    keys: Set[Key]


class Finding(NamedTuple):
    rule: str  # the [guard] key
    reason: str  # a sentence
    whole: bool  # True: the whole run is held


class Review(NamedTuple):
    run: List[Finding]  # findings that hold every planned change
    lines: Dict[int, Finding]  # item seq -> the finding that holds that line

    @property
    def holds(self) -> bool:
        return bool(self.run or self.lines)


def key_of(item: Item) -> Key:
    return folded(item.customer), item.sku


def review(items: Sequence[Item], *, rows: int, unterminated: bool, baseline: Optional[Baseline],
           rules: GuardSettings) -> Review:
    """The findings for a plan of ``items`` made from ``rows`` source rows."""
    found: List[Finding] = []
    lines: Dict[int, Finding] = {}
    if not rules.enabled:
        return Review(found, lines)
    had = baseline.keys if baseline is not None else set()
    if rules.hold_empty and rows == 0 and had:
        found.append(Finding("hold_empty", f"the source has no rows, but run {baseline.run_id} had {len(had)}: "
                             "it looks empty by mistake", True))
    if rules.hold_unterminated and unterminated:
        found.append(Finding("hold_unterminated", "the source's last row has no line end: the file or the "
                             "command's output looks cut mid-row", True))
    if had and rows:
        now = {key_of(item) for item in items}
        missing = had - now
        if len(missing) > rules.max_missing_share * len(had):
            shown = ", ".join(f"{c}/{s}" for c, s in sorted(missing)[:3])
            found.append(Finding("max_missing_share",
                                 f"the source lacks {len(missing)} of the {len(had)} (customer, SKU) rows run "
                                 f"{baseline.run_id} had (more than {rules.max_missing_share:.0%}; e.g. {shown}): "
                                 "it looks incomplete", True))
    known = [i for i in items if i.outcome in (outcomes.PLANNED, outcomes.UNCHANGED) and i.old is not None
             and i.new is not None]
    holding = [i for i in known if i.old > 0]
    zeroed = [i for i in holding if i.new == 0]
    if holding and len(zeroed) > rules.max_zeroed_share * len(holding):
        found.append(Finding("max_zeroed_share", f"the plan sets {len(zeroed)} of the {len(holding)} lines that "
                             f"hold seats to 0 (more than {rules.max_zeroed_share:.0%})", True))
    for sku, (before, after) in sorted(_totals(known).items()):
        drop = before - after
        if before > 0 and drop > rules.max_sku_drop * before and drop > rules.line_slack:
            found.append(Finding("max_sku_drop", f"SKU {sku}'s total would fall from {before} to {after} seats "
                                 f"(more than {rules.max_sku_drop:.0%})", True))
    for item in items:
        if item.outcome != outcomes.PLANNED or item.new is None:
            continue
        if item.rule == "hold_closed_period" and rules.hold_closed_period:
            lines[item.seq] = Finding("hold_closed_period", item.message or "the change would land on an invoice "
                                      "for a billing period that has ended", False)
            continue
        if item.new > rules.max_seats:
            lines[item.seq] = Finding("max_seats", f"{item.new} seats is above the ceiling of {rules.max_seats} a "
                                      "line", False)
            continue
        new_customer = item.old is None or item.old <= 0 or (baseline is not None and key_of(item) not in had)
        if not new_customer and item.new > item.old * rules.max_line_factor and \
                item.new - item.old > rules.line_slack:
            lines[item.seq] = Finding("max_line_factor", f"{item.old} -> {item.new} grows the line more than "
                                      f"{rules.max_line_factor:g}-fold", False)
    return Review(found, lines)


def _totals(items: Sequence[Item]) -> Dict[str, Tuple[int, int]]:
    totals: Dict[str, List[int]] = {}
    for item in items:
        pair = totals.setdefault(item.sku, [0, 0])
        pair[0] += int(item.old or 0)
        pair[1] += int(item.new or 0)
    return {sku: (pair[0], pair[1]) for sku, pair in totals.items()}


def hold(items: Sequence[Item], findings: Review, run_id: Optional[int]) -> int:
    """Mark the held items of run ``run_id``; how many were held."""
    held = 0
    whole = findings.run[0] if findings.run else None
    for item in items:
        if item.outcome != outcomes.PLANNED:
            continue
        finding = whole or findings.lines.get(item.seq)
        if finding is None:
            continue
        item.outcome = outcomes.HELD
        item.rule = finding.rule
        item.message = f"held: {finding.reason}"
        item.hint = f"approve it with 'psabill approve {run_id}', or discard it with 'psabill reject {run_id}'"
        held += 1
    return held
