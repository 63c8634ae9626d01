"""The engine: plan every (customer, SKU) row against the PSA, then apply exactly that plan.

:func:`plan` reads and writes nothing but the items it returns. Its mapping
rules, per row of the usage source:

* The SKU maps to a PSA product through ``[products]``.
* The customer's PSA company is, in order of precedence: the ``psa_company``
  of the optional ``[mapping] file``; the row's ``psa_company`` column; the
  company whose identifier equals the customer; the one company whose name
  equals it ignoring case (names in Unicode NFC). A pinned ``psa_company``
  names an identifier or an exact name. When nothing pins a company and nothing
  matches, the row is *unmapped*; a pin that matches nothing is a *failure*,
  because somebody said that company exists.
* The agreement is the mapping file's pinned one (id or name), else the one
  agreement of the company that bills now and holds a line for the product.
* The line is the one line for the product on that agreement.

Every way those rules can fail (no agreement, two candidate agreements, no
line, two lines, two rows aiming at one line, a quantity the PSA did not give)
fails that item alone, with a message and a one-line fix hint. An unreachable
PSA or refused credentials abort the whole plan (exit 4): nothing was written.

:func:`apply` hands the client the planned changes and nothing else, and
yields each item as its write settles. :func:`current` reads back what the PSA
holds now for given items: the check before a plan that waited (a human's
"y", an approval) is applied, and the reconciliation of writes whose outcome
is unknown.
"""

from typing import Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

from psabill import outcomes
from psabill.errors import AbortError
from psabill.net.errors import AuthRefused, RemoteError, Unreachable
from psabill.psa.base import Agreement, Company, Line, Lines, PsaClient, Quantity, Sending, Target, Terms, Written
from psabill.report import Item
from psabill.run.mapping import Pin
from psabill.sources.rows import UsageRow, folded
from psabill.text import clean


class _Work:
    """One row on its way to a planned item."""

    __slots__ = ("row", "item", "pin", "pin_origin", "pinned_agreement", "company", "candidates", "line")

    def __init__(self, row: UsageRow, item: Item) -> None:
        self.row = row
        self.item = item
        self.pin: Optional[str] = None  # the psa_company that pins it, if any
        self.pin_origin = ""
        self.pinned_agreement: Optional[str] = None
        self.company: Optional[Company] = None
        self.candidates: List[Agreement] = []
        self.line: Optional[Line] = None

    @property
    def done(self) -> bool:
        return self.item.outcome != outcomes.PLANNED or self.line is not None

    @property
    def open(self) -> bool:
        return self.item.outcome == outcomes.PLANNED and self.line is None

    def fail(self, message: str, hint: str, outcome: str = outcomes.FAILED) -> None:
        self.item.outcome = outcome
        self.item.message = message
        self.item.hint = hint


def plan(client: PsaClient, rows: Sequence[UsageRow], *, products: Mapping[str, str],
         pins: Mapping[str, Pin], where: str) -> List[Item]:
    """Every row as an item, in source order: planned (to change), unchanged, failed or unmapped.

    ``where`` names the PSA in an abort message (its name and URL, "<PSA> at https://...").
    """
    works = [_start(seq, row, products, pins) for seq, row in enumerate(rows, start=1)]
    try:
        _resolve(client, works, client.terms, products)
    except (Unreachable, AuthRefused, RemoteError) as exc:
        raise _abort(exc, client.terms, where) from None
    _check_shared_lines(works, client.terms)
    for work in works:
        if work.item.outcome == outcomes.PLANNED and work.line is not None:
            _compare(work)
    return [work.item for work in works]


def _start(seq: int, row: UsageRow, products: Mapping[str, str], pins: Mapping[str, Pin]) -> _Work:
    item = Item(customer=row.customer, sku=row.sku, seq=seq, new=row.seats)
    work = _Work(row, item)
    if not products.get(row.sku):
        work.fail(f"SKU {row.sku!r} is not mapped in [products]", "add the SKU to [products] in the config")
        return work
    pin = pins.get(folded(row.customer))
    if pin is not None:
        work.pin, work.pin_origin, work.pinned_agreement = pin.psa_company, "the mapping file", pin.agreement
    elif row.psa_company:
        work.pin, work.pin_origin = row.psa_company, "the source's psa_company column"
    return work


def _resolve(client: PsaClient, works: List[_Work], terms: Terms, products: Mapping[str, str]) -> None:
    """Find each open item's company, agreement and line: all reads, no writes."""
    pending = [w for w in works if w.open]
    if not pending:
        return
    index = _CompanyIndex(client.companies(sorted({w.pin or w.row.customer for w in pending})))
    for work in pending:
        _match_company(work, index, terms)

    pending = [w for w in pending if w.open]
    company_ids = sorted({w.company.id for w in pending if w.company is not None})
    by_company: Dict[str, List[Agreement]] = {}
    if company_ids:
        for agreement in client.agreements(company_ids):
            by_company.setdefault(agreement.company_id, []).append(agreement)
    for work in pending:
        assert work.company is not None
        _pick_candidates(work, by_company.get(work.company.id, []), terms)

    pending = [w for w in pending if w.open]
    needed: Dict[str, Agreement] = {}
    for work in pending:
        for agreement in work.candidates:
            needed.setdefault(agreement.id, agreement)
    wanted = sorted({products[w.row.sku] for w in pending})
    found = client.lines(list(needed.values()), wanted) if needed else Lines({})
    for work in pending:
        _pick_line(work, products[work.row.sku], found, terms)


class _CompanyIndex:
    def __init__(self, companies: Iterable[Company]) -> None:
        self.by_identifier: Dict[str, List[Company]] = {}
        self.by_identifier_folded: Dict[str, List[Company]] = {}
        self.by_name: Dict[str, List[Company]] = {}
        for company in companies:
            self.by_identifier.setdefault(company.identifier, []).append(company)
            self.by_identifier_folded.setdefault(folded(company.identifier), []).append(company)
            self.by_name.setdefault(folded(company.name), []).append(company)

    def find(self, value: str) -> Tuple[Optional[Company], List[Company]]:
        """(the company, []) or (None, the ambiguous matches) or (None, [])."""
        # Identifiers before names: an identifier is unique in the PSA, a name need not be.
        # Identifiers are compared ignoring case, as both PSAs compare them.
        for table, key in ((self.by_identifier, value), (self.by_identifier_folded, folded(value)),
                           (self.by_name, folded(value))):
            matches = table.get(key, [])
            if len(matches) == 1:
                return matches[0], []
            if len(matches) > 1:
                return None, matches
        return None, []


def _match_company(work: _Work, index: _CompanyIndex, terms: Terms) -> None:
    value = work.pin or work.row.customer
    company, ambiguous = index.find(value)
    if company is not None:
        work.company = company
        work.item.psa_company = company.identifier
        return
    if ambiguous:
        shown = ", ".join(f"{c.identifier} (#{c.id})" for c in ambiguous[:5])
        work.fail(f"{len(ambiguous)} {terms.psa} companies match {value!r}: {shown}",
                  "pin the company's identifier in the mapping file or the source's psa_company column")
    elif work.pin:
        work.fail(f"PSA company {value!r} (from {work.pin_origin}) not found in {terms.psa}",
                  "correct it to a company identifier or exact name; psabill never creates companies")
    else:
        work.fail(f"no {terms.psa} company has identifier or name {value!r}",
                  "add the customer to the mapping file, or set psa_company in the source",
                  outcome=outcomes.UNMAPPED)


def _pick_candidates(work: _Work, agreements: List[Agreement], terms: Terms) -> None:
    assert work.company is not None
    company = work.company
    if not agreements:
        work.fail(f"{company.identifier} has no active {terms.agreement} in {terms.psa}",
                  f"create or activate the {terms.agreement} in {terms.psa}; psabill never creates one")
        return
    pinned = work.pinned_agreement
    if pinned is None:
        work.candidates = agreements
        return
    chosen = [a for a in agreements if a.id == pinned] or [
        a for a in agreements if folded(a.name) == folded(pinned)]
    if len(chosen) == 1:
        work.candidates = chosen
    elif chosen:
        work.fail(f"{len(chosen)} active {terms.agreement}s of {company.identifier} are named {pinned!r}",
                  f"pin the {terms.agreement} by id in the mapping file")
    else:
        work.fail(f"pinned {terms.agreement} {pinned!r} is not an active {terms.agreement} of {company.identifier}",
                  f"correct the agreement column of the mapping file, or activate the {terms.agreement}")


def _pick_line(work: _Work, product: str, found: Lines, terms: Terms) -> None:
    assert work.company is not None
    company = work.company
    if product in found.problems:
        work.fail(f"SKU {work.row.sku!r}: {found.problems[product]}",
                  f"set the SKU to the product's id in [products], or make the name unique in {terms.psa}")
        return
    for agreement in work.candidates:
        if agreement.id in found.unreadable:
            work.item.agreement = agreement.id
            work.fail(f"reading {terms.line}s of {terms.agreement} #{agreement.id} failed: "
                      f"{clean.message(found.unreadable[agreement.id])}",
                      "re-run later; if it persists, check the PSA's status and the API member's permissions")
            work.item.transient = True
            return
    holding = [(a, [ln for ln in found.by_agreement.get(a.id, []) if ln.product == product])
               for a in work.candidates]
    holding = [(a, lines) for a, lines in holding if lines]
    if not holding:
        where = (f"{terms.agreement} {_agreement(work.candidates[0])}" if len(work.candidates) == 1
                 else f"any of the {len(work.candidates)} active {terms.agreement}s of {company.identifier}")
        work.item.agreement = work.candidates[0].id if len(work.candidates) == 1 else None
        notes = [found.explain[(a.id, product)] for a in work.candidates if (a.id, product) in found.explain]
        if notes:
            fixes = [found.hints[(a.id, product)] for a in work.candidates if (a.id, product) in found.hints]
            work.fail(notes[0], fixes[0] if fixes else
                      f"bill {product!r} as its own {terms.line}, or adjust it by hand")
            return
        work.fail(f"product {product!r} (SKU {work.row.sku}) is not on {where}",
                  f"add {product!r} to the {terms.agreement} in {terms.psa}; psabill never adds products")
        return
    if len(holding) > 1:
        shown = ", ".join(_agreement(a) for a, _ in holding[:5])
        said = "".join(f"; {a.note}" for a, _ in holding[:5] if a.note)  # e.g. one is inactive and still billing
        work.fail(f"{len(holding)} active {terms.agreement}s of {company.identifier} hold product "
                  f"{product!r}: {shown}{said}",
                  f"pin one in the mapping file: {work.row.customer},{company.identifier},<{terms.agreement} id>")
        return
    agreement, lines = holding[0]
    work.item.agreement = agreement.id
    if len(lines) > 1:
        work.fail(f"{terms.agreement} {_agreement(agreement)} has {len(lines)} {terms.line}s for product "
                  f"{product!r} (#{', #'.join(ln.id for ln in lines[:5])})",
                  f"remove the duplicate {terms.line} in {terms.psa} so one line holds the count")
        return
    line = lines[0]
    work.line = line
    work.item.line = line.id
    work.item.product = line.product_id or line.product
    work.item.old = line.quantity
    if agreement.note or line.note:
        work.item.message = "; ".join(n for n in (agreement.note, line.note) if n)
    if line.problem or line.quantity is None:
        work.line = None
        work.fail(line.problem or f"{terms.psa} did not give {terms.line} #{line.id}'s quantity; nothing is "
                  "written to it", f"check {terms.line} #{line.id} in {terms.psa}")


def _check_shared_lines(works: List[_Work], terms: Terms) -> None:
    """Two rows aiming at one line would each overwrite the other's count."""
    by_line: Dict[str, List[_Work]] = {}
    for work in works:
        if work.item.outcome == outcomes.PLANNED and work.line is not None:
            by_line.setdefault(work.line.id, []).append(work)
    for line_id, sharing in by_line.items():
        if len(sharing) < 2:
            continue
        names = ", ".join(f"{w.row.customer}/{w.row.sku}" for w in sharing[:5])
        for work in sharing:
            work.line = None
            work.fail(f"{terms.line} #{line_id} is the target of {len(sharing)} rows ({names})",
                      "give each customer and SKU its own company, agreement or product mapping")


def _compare(work: _Work) -> None:
    assert work.line is not None
    if work.item.old == work.item.new and not work.line.uneven:  # an uneven period is written whole
        work.item.outcome = outcomes.UNCHANGED
    elif work.line.closed:
        work.item.rule = "hold_closed_period"  # the guard's rule for it (run.safety); the note says why


# -- apply -------------------------------------------------------------------------


def target_of(item: Item, products: Mapping[str, str]) -> Target:
    """The write an item's plan asks for (the plan stored everything it needs)."""
    assert item.line is not None and item.agreement is not None and item.old is not None and item.new is not None
    configured = products.get(item.sku, item.product or "")
    line = Line(id=item.line, agreement_id=item.agreement, product=configured, quantity=item.old,
                product_id=item.product or configured)
    return Target(key=item.seq, line=line, old=item.old, new=item.new)


def apply(client: PsaClient, items: Sequence[Item], *, products: Mapping[str, str], halt: Callable[[], bool],
          sending: Sending) -> Iterator[Tuple[Item, Written]]:
    """Write exactly ``items`` (planned ones); yield each with how its write ended, as it settles."""
    by_key = {item.seq: item for item in items}
    targets = [target_of(item, products) for item in items]
    for written in client.write(targets, halt=halt, sending=sending):
        yield by_key[written.key], written


def settle(item: Item, written: Written) -> None:
    """Put a write's outcome on its item."""
    item.outcome = written.outcome
    item.transient = written.transient
    if written.before is not None and written.outcome != outcomes.UPDATED:
        item.old = written.before
    if written.message:
        if written.outcome not in (outcomes.UPDATED, outcomes.UNCHANGED):
            item.message = written.message
        elif written.message not in item.message:  # a line's note the plan already put on the item: once
            # A write's message that tells the plan's note and more replaces it.
            item.message = written.message if item.message and item.message in written.message else "; ".join(
                m for m in (item.message, written.message) if m)
    if written.hint:
        item.hint = written.hint
    if written.outcome == outcomes.HELD:
        item.rule = "another_writer"


def current(client: PsaClient, items: Sequence[Item], *, products: Mapping[str, str]
            ) -> Dict[int, Optional[Quantity]]:
    """What the PSA holds now for each item's line (None: not found, or no quantity), by item seq."""
    agreements: Dict[str, Agreement] = {}
    for item in items:
        if item.agreement is not None:
            agreements.setdefault(item.agreement, Agreement(item.agreement, "", ""))
    wanted = sorted({products.get(item.sku, item.product or "") for item in items})
    found = client.lines(list(agreements.values()), wanted)
    now: Dict[int, Optional[Quantity]] = {}
    for item in items:
        line = next((ln for ln in found.by_agreement.get(item.agreement or "", []) if ln.id == item.line), None)
        now[item.seq] = line.quantity if line is not None else None
    return now


def _abort(exc: Exception, terms: Terms, where: str) -> AbortError:
    if isinstance(exc, AuthRefused):
        return AbortError(f"{where} refused the credentials; nothing was written: {exc}")
    if isinstance(exc, Unreachable):
        return AbortError(f"{where} is unreachable; nothing was written: {exc}")
    return AbortError(f"{where} failed while reading companies and {terms.agreement}s; nothing was written: {exc}")


def _agreement(agreement: Agreement) -> str:
    return f"{agreement.name!r} (#{agreement.id})"
