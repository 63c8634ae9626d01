"""The refresh engine: make every mapped PSA quantity equal its seat count.

Mapping rules, applied per (customer, SKU) row of the usage source:

* The SKU maps to a PSA product (ConnectWise product identifier / Autotask
  service id) through ``[products]``.
* The customer's PSA company is, in order of precedence: the ``psa_company`` of
  the optional ``[mapping] file`` (CSV ``customer,psa_company[,agreement]``);
  the row's ``psa_company`` column; the company whose identifier equals the
  customer; the one company whose name equals it ignoring case. A pinned
  ``psa_company`` names an identifier or an exact name. When nothing pins a
  company and nothing matches, the row is *unmapped*; a pin that matches
  nothing is a *failure*, because somebody said that company exists.
* The agreement is the mapping file's pinned one (id or name), else the one
  active agreement of the company holding a line for the product.
* The line is the one line for the product on that agreement.

Every way those rules can fail (no agreement, two candidate agreements, no
line, two lines, two rows aiming at one line, an API error) fails that item
alone, with a message and a one-line fix hint; the others carry on.

Cost: companies and agreements are read in bulk, lines once per agreement
that some row needs, and one write per quantity that differs. Reads and writes
run on a thread pool bounded by ``[psa] concurrency``; only the main thread
calls ``record`` so the runner may persist each item without locking.

Before the first write, an unreachable PSA or refused credentials abort the
whole run (exit 4). Once writing has started, the first such error stops
further writes; the items not written say so, and a re-run finishes the job
(ConnectWise writes absolute values, Autotask re-reads before each delta).
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, TypeVar

from psabill.errors import AbortError
from psabill.text.files import one_line
from psabill.psa.base import (Agreement, Company, Halted, Line, PsaAuthError, PsaClient, PsaError, PsaUnreachable, Terms,
                              Written)
from psabill.report import ItemResult, RunReport
from psabill.run.mapping import Pin
from psabill.sources import UsageRow
from psabill.outcomes import FAILED, PLANNED, UNCHANGED, UNMAPPED, UPDATED

DEFAULT_CONCURRENCY = 8

K = TypeVar("K")
R = TypeVar("R")


@dataclass
class _Work:
    """One row on its way to an outcome."""

    index: int
    row: UsageRow
    product: str
    item: ItemResult
    pin: Optional[str] = None  # the psa_company that pins it, if any
    pin_origin: str = ""
    pinned_agreement: Optional[str] = None
    company: Optional[Company] = None
    candidates: List[Agreement] = field(default_factory=list)
    line: Optional[Line] = None

    @property
    def done(self) -> bool:
        return bool(self.item.outcome)

    def fail(self, message: str, hint: str, outcome: str = FAILED) -> None:
        self.item.outcome = outcome
        self.item.message = message
        self.item.hint = hint


class _StopWrites(Exception):
    """A write was skipped because an earlier one found the PSA gone."""


def refresh(
    client: PsaClient,
    rows: Sequence[UsageRow],
    report: RunReport,
    *,
    products: Mapping[str, str],
    pins: Mapping[str, Pin],
    dry_run: bool,
    record: Callable[[ItemResult], None],
    progress: Optional[Callable[[int, int], None]] = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    url: Optional[str] = None,
) -> None:
    """Bring every row's PSA quantity to its seat count (or plan it, when ``dry_run``).

    Items that need no write reach ``record`` (and ``report.items``) once all
    reads are done, so a run aborted while reading records nothing; each
    written item follows as soon as its write returns. At the end
    ``report.items`` is in source order.
    """
    report.psa_kind = client.kind
    terms = client.terms
    workers = concurrency
    # Without a url Autotask discovers its zone; the error itself then names the URL it tried.
    where = f"{terms.psa} at {url}" if url else terms.psa
    done = 0

    def emit(work: _Work) -> None:
        nonlocal done
        report.items.append(work.item)
        record(work.item)
        done += 1
        if progress is not None:
            progress(done, len(works))

    works = [_start(index, row, products, pins) for index, row in enumerate(rows)]
    try:
        with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="psabill-refresh") as pool:
            try:
                _resolve(client, works, terms, pool)
            except PsaError as exc:
                raise _abort(exc, terms, where) from None
            _check_shared_lines(works, terms)
            for work in works:
                if not work.done:
                    _compare(work, dry_run)
            writes = [work for work in works if not work.done]
            if client.bulk_writes:
                writes = _within_allowance(client, writes)
                _write_batches(client, writes, terms, pool, emit, settled=[work for work in works if work.done])
            else:
                _ensure_budget(client, len(writes), where)
                _write_all(client, writes, terms, pool, emit, settled=[work for work in works if work.done])
    finally:
        report.api_requests = client.request_count
    order = {id(work.item): work.index for work in works}
    report.items.sort(key=lambda item: order.get(id(item), len(order)))


def _start(index: int, row: UsageRow, products: Mapping[str, str], pins: Mapping[str, Pin]) -> _Work:
    item = ItemResult(customer=row.customer, sku=row.sku, outcome="", new=row.seats)
    work = _Work(index, row, products.get(row.sku, ""), item)
    if not work.product:
        work.fail(f"SKU {row.sku!r} is not mapped in [products]", "add the SKU to [products] in the config")
        return work
    pin = pins.get(row.customer.casefold())
    if pin is not None:
        work.pin, work.pin_origin, work.pinned_agreement = pin.psa_company, "the mapping file", pin.agreement
    elif row.psa_company:
        work.pin, work.pin_origin = row.psa_company, "the source's psa_company column"
    return work


def _resolve(client: PsaClient, works: List[_Work], terms: Terms, pool: ThreadPoolExecutor) -> None:
    """Find each pending item's company, agreement and line: all reads, no writes."""
    pending = [w for w in works if not w.done]
    if not pending:
        return
    if client.budgeted:
        # A budgeted PSA (Autotask) shares its hourly allowance with every other
        # integration; check() learns how much of it is left, before any other
        # request, so that what it says is left covers every request of this run.
        client.check()
    # Autotask: [products] may name a service, looked up once per run; ConnectWise: as given.
    resolved, problems = client.resolve_products(sorted({w.product for w in pending}))
    for work in pending:
        if work.product in problems:
            work.fail(f"SKU {work.row.sku!r}: {problems[work.product]}",
                      f"set the SKU to the service id in [products], or make the name unique in {terms.psa}")
        else:
            work.product = resolved.get(work.product, work.product)
    pending = [w for w in pending if not w.done]
    if not pending:
        return
    wanted = sorted({w.pin or w.row.customer for w in pending})
    companies = client.companies(identifiers=wanted, names=wanted, run=pool.map)
    index = _CompanyIndex(companies)
    for work in pending:
        _match_company(work, index, terms)

    pending = [w for w in pending if not w.done]
    company_ids = sorted({w.company.id for w in pending if w.company is not None})
    by_company: Dict[str, List[Agreement]] = {}
    if company_ids:
        for agreement in client.agreements(company_ids, pool.map):
            by_company.setdefault(agreement.company_id, []).append(agreement)
    for work in pending:
        _pick_candidates(work, by_company.get(_company(work).id, []), terms)

    pending = [w for w in pending if not w.done]
    needed: Dict[str, Agreement] = {}
    for work in pending:
        for agreement in work.candidates:
            needed.setdefault(agreement.id, agreement)
    lines, errors = _read_lines(client, list(needed.values()), pool)
    for work in pending:
        _pick_line(work, lines, errors, terms, client.missing_note)


def _company(work: _Work) -> Company:
    assert work.company is not None
    return work.company


class _CompanyIndex:
    def __init__(self, companies: Iterable[Company]) -> None:
        self.by_identifier: Dict[str, List[Company]] = {}
        self.by_identifier_folded: Dict[str, List[Company]] = {}
        self.by_name: Dict[str, List[Company]] = {}
        for company in companies:
            self.by_identifier.setdefault(company.identifier, []).append(company)
            self.by_identifier_folded.setdefault(company.identifier.casefold(), []).append(company)
            self.by_name.setdefault(company.name.strip().casefold(), []).append(company)

    def find(self, value: str) -> Tuple[Optional[Company], List[Company]]:
        """(the company, []) or (None, the ambiguous matches) or (None, [])."""
        # Identifiers before names: an identifier is unique in the PSA, a name need not be.
        # ConnectWise compares identifiers ignoring case, so a case-only
        # difference still names the same company when it is unique.
        for table, key in ((self.by_identifier, value), (self.by_identifier_folded, value.casefold()),
                           (self.by_name, value.strip().casefold())):
            found = table.get(key, [])
            if len(found) == 1:
                return found[0], []
            if len(found) > 1:
                return None, found
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
                  outcome=UNMAPPED)


def _pick_candidates(work: _Work, agreements: List[Agreement], terms: Terms) -> None:
    company = _company(work)
    if not agreements:
        work.fail(f"{company.identifier} has no active {terms.agreement} in {terms.psa}",
                  f"create or activate the {terms.agreement} in {terms.psa}; psabill never creates one")
        return
    pinned = work.pinned_agreement
    if pinned is None:
        work.candidates = agreements
        return
    chosen = [a for a in agreements if a.id == pinned] or [
        a for a in agreements if a.name.strip().casefold() == pinned.casefold()]
    if len(chosen) == 1:
        work.candidates = chosen
    elif chosen:
        work.fail(f"{len(chosen)} active {terms.agreement}s of {company.identifier} are named {pinned!r}",
                  f"pin the {terms.agreement} by id in the mapping file")
    else:
        work.fail(f"pinned {terms.agreement} {pinned!r} is not an active {terms.agreement} of {company.identifier}",
                  f"correct the agreement column of the mapping file, or activate the {terms.agreement}")


def _read_lines(client: PsaClient, agreements: List[Agreement], pool: ThreadPoolExecutor
                ) -> Tuple[Dict[str, List[Line]], Dict[str, Exception]]:
    lines: Dict[str, List[Line]] = {}
    errors: Dict[str, Exception] = {}
    if client.bulk_lines:
        try:
            return client.lines_for(agreements, pool.map), errors
        except (PsaUnreachable, PsaAuthError):
            raise
        except Exception as exc:  # the bulk read failed: every agreement it covered failed with it
            return lines, {agreement.id: exc for agreement in agreements}
    futures = {pool.submit(client.lines, agreement): agreement for agreement in agreements}
    try:
        for future, agreement in _completed(futures):
            try:
                lines[agreement.id] = future.result()
            except (PsaUnreachable, PsaAuthError):
                raise
            except Exception as exc:  # one unreadable agreement must not sink the rest
                errors[agreement.id] = exc
    finally:
        for future in futures:
            future.cancel()
    return lines, errors


def _pick_line(work: _Work, lines: Dict[str, List[Line]], errors: Dict[str, Exception], terms: Terms,
               missing_note: Optional[Callable[[str, str], Optional[str]]] = None) -> None:
    company = _company(work)
    for agreement in work.candidates:
        if agreement.id in errors:
            work.item.agreement = agreement.id
            work.fail(f"reading {terms.line}s of {terms.agreement} #{agreement.id} failed: {_why(errors[agreement.id])}",
                      "re-run later; if it persists, check the PSA's status and the API member's permissions")
            return
    holding = [(a, [ln for ln in lines.get(a.id, []) if ln.product == work.product]) for a in work.candidates]
    holding = [(a, found) for a, found in holding if found]
    if not holding:
        where = (f"{terms.agreement} {_agreement(work.candidates[0])}" if len(work.candidates) == 1
                 else f"any of the {len(work.candidates)} active {terms.agreement}s of {company.identifier}")
        work.item.agreement = work.candidates[0].id if len(work.candidates) == 1 else None
        notes = [n for n in (missing_note(a.id, work.product) for a in work.candidates) if n] if missing_note else []
        if notes:  # Autotask: billed through a service bundle
            work.fail(notes[0], f"bill {work.product!r} as its own contract service, or adjust the bundle by hand")
            return
        work.fail(f"product {work.product!r} (SKU {work.row.sku}) is not on {where}",
                  f"add {work.product!r} to the {terms.agreement} in {terms.psa}; psabill never adds products")
        return
    if len(holding) > 1:
        shown = ", ".join(_agreement(a) for a, _ in holding[:5])
        work.fail(f"{len(holding)} active {terms.agreement}s of {company.identifier} hold product "
                  f"{work.product!r}: {shown}",
                  f"pin one in the mapping file: {work.row.customer},{company.identifier},<{terms.agreement} id>")
        return
    agreement, found = holding[0]
    work.item.agreement = agreement.id
    if len(found) > 1:
        work.fail(f"{terms.agreement} {_agreement(agreement)} has {len(found)} {terms.line}s for product "
                  f"{work.product!r} (#{', #'.join(ln.id for ln in found[:5])})",
                  f"remove the duplicate {terms.line} in {terms.psa} so one line holds the count")
        return
    work.line = found[0]
    work.item.line = found[0].id
    work.item.old = found[0].quantity


def _check_shared_lines(works: List[_Work], terms: Terms) -> None:
    """Two rows aiming at one line would each overwrite the other's count."""
    by_line: Dict[str, List[_Work]] = {}
    for work in works:
        if not work.done and work.line is not None:
            by_line.setdefault(work.line.id, []).append(work)
    for line_id, sharing in by_line.items():
        if len(sharing) < 2:
            continue
        names = ", ".join(f"{w.row.customer}/{w.row.sku}" for w in sharing[:5])
        for work in sharing:
            work.fail(f"{terms.line} #{line_id} is the target of {len(sharing)} rows ({names})",
                      "give each customer and SKU its own company, agreement or product mapping")


def _ensure_budget(client: PsaClient, writes: int, where: str) -> None:
    """Autotask caps requests per hour: better no write at all than half the book."""
    if not client.budgeted or not writes:
        return
    try:
        client.ensure_budget(2 * writes)  # each write re-reads the period's units, then posts the delta
    except PsaError as exc:
        raise AbortError(f"{where}: {exc}; nothing was written") from None


def _compare(work: _Work, dry_run: bool) -> None:
    line = work.line
    assert line is not None
    if line.quantity == work.row.seats:
        work.item.outcome = UNCHANGED
    elif dry_run:
        work.item.outcome = PLANNED


def _write_all(client: PsaClient, writes: List[_Work], terms: Terms, pool: ThreadPoolExecutor,
               emit: Callable[[_Work], None], settled: Sequence[_Work]) -> None:
    """Run the writes; record ``settled`` (items needing no write) while they are on the wire."""
    stop = threading.Event()

    def write(work: _Work) -> int:
        if stop.is_set():
            raise _StopWrites()
        assert work.line is not None
        try:
            return client.set_quantity(work.line, work.row.seats)
        except (PsaUnreachable, PsaAuthError):
            stop.set()
            raise

    futures = {pool.submit(write, work): work for work in writes}
    try:
        for work in settled:
            emit(work)
        for future, work in _completed(futures):
            try:
                before = future.result()
            except _StopWrites:
                work.fail(f"not written: {terms.psa} became unreachable or refused the credentials earlier in this run",
                          "re-run; quantities already written are kept and not written twice")
            except (PsaUnreachable, PsaAuthError) as exc:
                work.fail(f"update failed: {_why(exc)}", "re-run once the PSA is reachable; nothing is double-counted")
            except Exception as exc:  # one refused write must not sink the rest
                work.fail(f"update failed: {_why(exc)}",
                          f"check the {terms.line} in {terms.psa}, then re-run; other updates are kept")
            else:
                _settle(work, before)
            emit(work)
    finally:
        # On Ctrl-C or SIGTERM: writes not yet started never start.
        stop.set()
        for future in futures:
            future.cancel()


def _settle(work: _Work, result: "int | Written") -> None:
    before, note = (result.before, result.note) if isinstance(result, Written) else (result, "")
    work.item.old = before
    work.item.outcome = UNCHANGED if before == work.row.seats else UPDATED
    work.item.message = note


def _within_allowance(client: PsaClient, writes: List[_Work]) -> List[_Work]:
    """Autotask's hourly allowance: write what fits; the rest fail as not written, to be re-run."""
    fits, message = client.write_capacity(len(writes))
    for work in writes[fits:]:
        work.fail(f"not written: {message}", "re-run after that time; nothing is double-counted")
    return writes[:fits]


def _write_batches(client: PsaClient, writes: List[_Work], terms: Terms, pool: ThreadPoolExecutor,
                   emit: Callable[[_Work], None], settled: Sequence[_Work]) -> None:
    """Autotask: each batch re-reads its units in bulk, posts, then re-reads to verify.

    The batches overlap, one stage apart. A batch's re-read before its posts is
    started one batch early (``read_ahead``), while the batch before it posts.
    Its posts start once the batch before has posted, while that batch's
    verify read runs (on an executor of its own, so it never queues behind the
    posts) and its items are recorded. The items needing no write are recorded
    while the first batch posts. Each batch covers services no other batch
    touches, so the overlap changes no delta.

    The first unreachable PSA or refused credentials, found by a post or a
    verify read, stops the writing: from then on no post is sent (also none
    waiting for a slot), later batches are not written, and every post that
    was sent is still re-read; if that read fails too, a post Autotask
    answered counts as written (a re-run re-reads before any delta). A post
    whose answer was lost stops nothing: it may have landed, and the verify
    read says.
    """
    size = max(1, client.write_batch)
    batches = [writes[start: start + size] for start in range(0, len(writes), size)]
    targets = [[(_line(w), w.row.seats) for w in batch] for batch in batches]
    stop = threading.Event()
    aheads = {index: client.read_ahead(targets[index], pool.map) for index in range(min(2, len(batches)))}

    def post(index: int) -> object:
        return client.post_batch(targets[index], pool.map, aheads.pop(index, None), stop.is_set)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="psabill-post") as poster, \
            ThreadPoolExecutor(max_workers=_VERIFY_WORKERS, thread_name_prefix="psabill-verify") as checker:
        try:
            posting: "Optional[Future[object]]" = poster.submit(post, 0) if batches else None
            for work in settled:
                emit(work)
            for index, batch in enumerate(batches):
                if posting is None:  # stopped before this batch
                    for work in batch:
                        _settle_written(work, Halted("not written"), terms)
                        emit(work)
                    continue
                results: Dict[str, object] = {}
                posted: Any = None
                try:
                    posted = posting.result()
                except (PsaUnreachable, PsaAuthError) as exc:
                    stop.set()
                    results = {_line(w).id: exc for w in batch}
                except PsaError as exc:
                    results = {_line(w).id: exc for w in batch}
                else:
                    if posted.problem is not None:
                        stop.set()
                posting = None
                if index + 1 < len(batches) and not stop.is_set():
                    if index + 2 < len(batches):
                        aheads[index + 2] = client.read_ahead(targets[index + 2], pool.map)
                    posting = poster.submit(post, index + 1)
                if posted is not None:
                    found, problem = client.verify_batch(posted, checker.map)
                    results.update(found)
                    if isinstance(problem, (PsaUnreachable, PsaAuthError)):
                        stop.set()
                for work in batch:
                    _settle_written(work, results.get(_line(work).id), terms)
                    emit(work)
        finally:
            # On Ctrl-C or SIGTERM too: posts not yet sent are never sent.
            stop.set()


#: Threads for a batch's verify read: a few one-page queries, and the client caps requests per endpoint.
_VERIFY_WORKERS = 3


def _settle_written(work: _Work, result: object, terms: Terms) -> None:
    """A batch item's outcome from what post_batch and verify_batch said of its line."""
    if isinstance(result, Halted):
        work.fail(f"not written: {terms.psa} became unreachable or refused the credentials earlier in this run",
                  "re-run; quantities already written are kept and not written twice")
    elif isinstance(result, (PsaUnreachable, PsaAuthError)):
        work.fail(f"update failed: {_why(result)}", "re-run once the PSA is reachable; nothing is double-counted")
    elif isinstance(result, Exception) or result is None:
        work.fail(f"update failed: {_why(result or PsaError('no result'))}",
                  f"check the {terms.line} in {terms.psa}, then re-run; other updates are kept")
    else:
        assert isinstance(result, (int, Written))
        _settle(work, result)


def _line(work: _Work) -> Line:
    assert work.line is not None
    return work.line


def _completed(futures: Dict["Future[R]", K]) -> Iterator[Tuple["Future[R]", K]]:
    """(future, its payload) in completion order."""
    for future in as_completed(futures):
        yield future, futures[future]


def _abort(exc: PsaError, terms: Terms, where: str) -> AbortError:
    if isinstance(exc, PsaAuthError):
        return AbortError(f"{where} refused the credentials; nothing was written: {exc}")
    if isinstance(exc, PsaUnreachable):
        return AbortError(f"{where} is unreachable; nothing was written: {exc}")
    return AbortError(f"{where} failed while reading companies and {terms.agreement}s; nothing was written: {exc}")


def _agreement(agreement: Agreement) -> str:
    return f"{agreement.name!r} (#{agreement.id})"


def _why(exc: Exception) -> str:
    text = one_line(exc)
    return text if isinstance(exc, PsaError) and text else f"{type(exc).__name__}: {text}"
