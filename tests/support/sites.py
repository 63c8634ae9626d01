"""The history site's test data: :class:`FakeSiteView` (an in-memory ledger) and a realistic year of runs.

:class:`FakeSiteView` implements :class:`psabill.site.view.SiteView` over a list
of :class:`~psabill.report.Run` objects with their items and approvals, the way
the ledger will: ``runs()`` hands out item-less copies with a ``tally``,
``attempts()`` groups by occurrence and ``of_run``.

:func:`year_of_runs` makes an MSP's year of daily scheduled runs: ~5,000
customers (LastPass Business or Teams, some with Advanced MFA or Dark Web
Monitoring), seats drifting a little every day, new customers unmapped for a
few days, PSA hiccups (transient 503s, one run aborted and retried within
catch-up), a customer whose agreement was cancelled failing every run since,
sudden jumps held for approval and approved a couple of hours later, an email
that failed, a manual dry run now and then, and, on the last day, a plan still
held. Deterministic for a seed. Unchanged items are shared between runs (the
site never changes an item), so a year at 5,000 customers fits in memory.
"""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Dict, Iterable, List, Optional, Sequence, Tuple
from zoneinfo import ZoneInfo

from psabill import outcomes
from psabill.report import Approval, Email, Item, Run

ZONE = ZoneInfo("America/New_York")
END = datetime(2026, 12, 1, 11, 0, 30, tzinfo=timezone.utc)  # 06:00:30 in New York


def _key(run: Run) -> Tuple[datetime, int]:
    return run.started_at, run.id or 0


class FakeSiteView:
    """An in-memory :class:`psabill.site.view.SiteView` over ``runs`` (with items and approvals)."""

    def __init__(self, runs: Iterable[Run]) -> None:
        self._runs: List[Run] = sorted(runs, key=_key)
        self._by_id: Dict[int, Run] = {}
        self._light: Dict[int, Run] = {}
        self._totals: Dict[int, Dict[str, int]] = {}
        self._lines: Dict[str, List[Tuple[Run, Item]]] = {}
        self.calls: Dict[str, int] = {}
        for run in self._runs:
            assert run.id is not None, "every run of the fake needs an id"
            self._by_id[run.id] = run
            light = replace(run, items=[], approvals=[], tally=run.counts)
            self._light[run.id] = light
            totals: Dict[str, int] = {}
            for item in run.items:
                if item.new is not None:
                    totals[item.sku] = totals.get(item.sku, 0) + int(item.new)
                self._lines.setdefault(item.customer, []).append((light, item))
            self._totals[run.id] = totals

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    def runs(self, since: datetime) -> List[Run]:
        self._count("runs")
        return [self._light[r.id] for r in reversed(self._runs) if r.started_at >= since]  # type: ignore[index]

    def run(self, run_id: int) -> Optional[Run]:
        self._count("run")
        return self._by_id.get(run_id)

    def attempts(self, run: Run) -> List[Run]:
        self._count("attempts")
        if run.occurrence is not None:
            group = [r for r in self._runs if r.occurrence == run.occurrence and r.trigger != "approval"]
        else:
            group = [self._by_id.get(run.id, run)]  # type: ignore[arg-type]
        ids = {r.id for r in group}
        group += [r for r in self._runs if r.trigger == "approval" and r.of_run in ids and r.id not in ids]
        return [self._light[r.id] for r in sorted(group, key=_key)]  # type: ignore[index]

    def customers_lines(self, customers: Sequence[str], since: datetime) -> Dict[str, List[Tuple[Run, Item]]]:
        self._count("customers_lines")
        self.customers_asked = list(customers)
        return {customer: [(run, item) for run, item in self._lines.get(customer, []) if run.started_at >= since]
                for customer in customers}

    def sku_totals(self, since: datetime) -> List[Tuple[Run, Dict[str, int]]]:
        self._count("sku_totals")
        return [(self._light[r.id], dict(self._totals[r.id])) for r in self._runs  # type: ignore[index]
                if r.started_at >= since]

    def add(self, run: Run) -> None:
        """Record one more run (as the ledger does after a run)."""
        self.__init__(self._runs + [run])  # type: ignore[misc]


# -- a realistic year -------------------------------------------------------------------

FIRST = ("Northwind", "Contoso", "Fabrikam", "Tailspin", "Wingtip", "Adventure Works", "Litware", "Proseware",
         "Alpine", "Blue Yonder", "Coho", "Fourth Coffee", "Lucerne", "Margie's", "Trey", "Wide World",
         "Woodgrove", "Humongous", "Graphic", "City Power", "Datum", "Relecloud", "Bellows", "Lamna", "Munson's",
         "Nod", "Oak Street", "Pine Ridge", "Harbor", "Summit", "Redwood", "Granite", "Lakeside", "Meridian",
         "Beacon", "Cedar", "Evergreen", "Keystone", "Liberty", "Pioneer")
TRADE = ("Dental", "Legal", "Logistics", "Accounting", "Realty", "Clinic", "Engineering", "Architects",
         "Marketing", "Construction", "Veterinary", "Insurance", "Academy", "Foods", "Hotels", "Pharmacy",
         "Orthopedics", "Capital", "Manufacturing", "Design")
FORM = ("LLC", "Inc.", "Ltd", "Group", "Partners", "& Co", "Associates", "Holdings")
PLACES = ("Boston", "Austin", "Denver", "Toronto", "Leeds", "Dublin", "Tampa", "Omaha", "Reno", "Tulsa")
SPECIAL = ("Müller & Söhne GmbH", "Café Société SARL", "Zürich Treuhand AG", "Ørsted Bygg AS",
           "Clínica São Paulo", "北京云桥科技有限公司", "Łódź Logistyka Sp. z o.o.", "Ærø Rederi ApS")
BUSINESS, TEAMS = "LastPass Business", "LastPass Teams"
MFA, DWM = "LastPass Advanced MFA", "Dark Web Monitoring"
HOST = "billing-01"
CANCELLED = ("PATCH https://na.myconnectwise.net/v4_6_release/apis/3.0/finance/agreements/{a}/additions/{l} "
             "answered 400: agreementStatusInvalidForAddition (the agreement is cancelled)")
CANCELLED_FIX = "reactivate the agreement in ConnectWise, or map the customer to an active one"
UNAVAILABLE = "PATCH https://na.myconnectwise.net/v4_6_release/apis/3.0/finance/agreements: answered 503 Service Unavailable"
UNAVAILABLE_FIX = "nothing to do if it passes: the next run tries again; otherwise check ConnectWise's status page"
UNMAPPED_MSG = "no PSA company is mapped for this customer"
UNMAPPED_FIX = "add the customer to the mapping file, then run again"
HELD_RULE = "max_line_factor"  # psabill.run.safety: a line that grows more than tenfold is held


class _Line:
    __slots__ = ("seq", "customer", "sku", "company", "agreement", "line", "psa", "seats", "mapped_on",
                 "cancelled_from", "cache")

    def __init__(self, seq: int, customer: str, sku: str, company: str, line: str, seats: int) -> None:
        self.seq, self.customer, self.sku, self.company = seq, customer, sku, company
        self.agreement, self.line = "Managed Services", line
        self.psa: Optional[int] = seats
        self.seats = seats
        self.mapped_on = -1  # unmapped until this day (-1: mapped from the start)
        self.cancelled_from = 10 ** 6
        self.cache: Dict[int, Item] = {}

    def unchanged(self) -> Item:
        item = self.cache.get(self.seats)
        if item is None:
            item = self.cache[self.seats] = Item(
                self.customer, self.sku, outcomes.UNCHANGED, seq=self.seq, psa_company=self.company,
                agreement=self.agreement, line=self.line, product=self.sku, old=self.seats, new=self.seats)
        return item

    def item(self, outcome: str, **extra: object) -> Item:
        return Item(self.customer, self.sku, outcome, seq=self.seq, psa_company=self.company,
                    agreement=self.agreement, line=self.line, product=self.sku, old=self.psa, new=self.seats,
                    **extra)  # type: ignore[arg-type]


def customer_names(count: int, rng: random.Random) -> List[str]:
    names: List[str] = list(SPECIAL[:min(len(SPECIAL), max(count // 50, 1))])
    seen = set(names)
    while len(names) < count:
        name = f"{rng.choice(FIRST)} {rng.choice(TRADE)} {rng.choice(FORM)}"
        if name in seen:
            name = f"{name} ({rng.choice(PLACES)})"
        if name in seen:
            name = f"{name} {len(names)}"
        seen.add(name)
        names.append(name)
    return names


def _seats(rng: random.Random) -> int:
    return min(int(3 + rng.paretovariate(1.5) * 6), 1800)


def year_of_runs(customers: int = 5000, days: int = 365, *, end: datetime = END, seed: int = 7,
                 first_id: int = 1, change_rate: float = 0.015) -> List[Run]:
    """``days`` days of daily 06:00 (New York) runs ending with the run at ``end``'s day (see the module doc)."""
    rng = random.Random(seed)
    names = customer_names(customers, rng)
    lines: List[_Line] = []
    for n, name in enumerate(names):
        company = "".join(ch for ch in name.upper() if ch.isascii() and ch.isalnum())[:14] + f"{n:04d}"
        base = _seats(rng)
        skus = [TEAMS if base < 12 and rng.random() < 0.6 else BUSINESS]
        if rng.random() < 0.5:
            skus.append(MFA)
        if rng.random() < 0.15:
            skus.append(DWM)
        for sku in skus:
            seats = base if sku != MFA else max(1, int(base * rng.uniform(0.3, 1.0)))
            lines.append(_Line(len(lines), name, sku, company, str(200000 + len(lines)), seats))
    # Onboarding: some customers appear later, unmapped for a few runs.
    late = rng.sample(range(len(names)), max(customers // 120, 2))
    appears: Dict[str, int] = {}
    for k, n in enumerate(sorted(late)):
        appears[names[n]] = rng.randrange(1, days)
    appears[names[late[0]]] = days - 4  # still unmapped on the last day
    for line in lines:
        if line.customer in appears:
            day = appears[line.customer]
            line.mapped_on = day + (rng.randrange(2, 5) if day != days - 4 else 10 ** 6)
            line.psa = None
    # One customer's agreement was cancelled: it fails every run of the last nine days.
    cancelled = next(l for l in lines if l.customer not in appears and l.sku == BUSINESS and l.seats > 20)
    cancelled.cancelled_from = days - 9
    held_days = set(range(days - 330, days - 1, 37)) | {days - 1}
    retry_days = {days // 3, (2 * days) // 3}
    email_failed = {days // 2}
    dry_days = set(range(20, days - 2, 45))
    start_day = (end.astimezone(ZONE) - timedelta(days=days - 1)).date()
    runs: List[Run] = []
    next_id = first_id

    def at(day: int, hour: int, minute: int = 0, second: int = 30) -> datetime:
        d = start_day + timedelta(days=day)
        return datetime(d.year, d.month, d.day, hour, minute, second, tzinfo=ZONE).astimezone(timezone.utc)

    for day in range(days):
        occurrence = at(day, 6, 0, 0)
        attempt = 1
        if day in retry_days:
            runs.append(Run("scheduled", at(day, 6), outcomes.ABORTED, id=next_id, account="example",
                            occurrence=occurrence, attempt=1, finished_at=at(day, 6, 0, 52), psa="connectwise",
                            host=HOST, api_requests=3, account_name="Example MSP", zone=ZONE.key,
                            message="PSA unreachable: connect to na.myconnectwise.net:443 timed out after 30 s "
                                    "(the next firing within catch-up retries)",
                            email=Email("sent", "sent to billing@example.com")))
            next_id += 1
            attempt = 2
        # Today's seat counts.
        for line in lines:
            if rng.random() < change_rate:
                step = rng.choice((1, 1, 1, 2, 3))
                line.seats = max(0, line.seats + (step if rng.random() < 0.6 else -step))
        if day == cancelled.cancelled_from:
            cancelled.seats += 3  # the change its cancelled agreement refuses from now on
        hold: Optional[_Line] = None
        if day in held_days:
            hold = rng.choice([l for l in lines if l.seats >= 20 and l is not cancelled and l.psa is not None])
            hold.seats = hold.seats * 40  # a typo in the source: 25 -> 1000
        flaky = set()
        if rng.random() < 0.05:
            flaky = {rng.randrange(len(lines)) for _ in range(rng.randrange(1, 4))}
        items: List[Item] = []
        for line in lines:
            present = appears.get(line.customer, -1) <= day
            if not present:
                continue
            if day < line.mapped_on:
                items.append(Item(line.customer, line.sku, outcomes.UNMAPPED, seq=line.seq, product=line.sku,
                                  new=line.seats, message=UNMAPPED_MSG, hint=UNMAPPED_FIX))
                continue
            if line.psa is None:
                line.psa = 0
            if day >= line.cancelled_from:
                items.append(line.item(outcomes.FAILED, message=CANCELLED.format(a=line.seq, l=line.line),
                                       hint=CANCELLED_FIX))
            elif line is hold:
                items.append(line.item(outcomes.HELD, rule=HELD_RULE,
                                       message=f"{line.psa} -> {line.seats} grows the line more than 10-fold"))
            elif line.psa == line.seats:
                items.append(line.unchanged())
            elif line.seq in flaky:
                items.append(line.item(outcomes.FAILED, message=UNAVAILABLE, hint=UNAVAILABLE_FIX, transient=True))
            else:
                items.append(line.item(outcomes.UPDATED))
                line.psa = line.seats
        counts = {o: 0 for o in outcomes.ITEM_ORDER}
        for item in items:
            counts[item.outcome] = counts.get(item.outcome, 0) + 1
        status = (outcomes.PARTIAL if counts[outcomes.FAILED] else
                  outcomes.HELD_RUN if counts[outcomes.HELD] else outcomes.SUCCESS)
        started = at(day, 6 + attempt - 1)
        changed = counts[outcomes.UPDATED] + counts[outcomes.FAILED]
        run = Run("scheduled", started, status, id=next_id, account="example", occurrence=occurrence,
                  attempt=attempt, finished_at=started + timedelta(seconds=40 + changed * 2), psa="connectwise",
                  host=HOST, api_requests=12 + 2 * changed, account_name="Example MSP", zone=ZONE.key,
                  late_seconds=3600 if attempt > 1 else None, source_digest=f"{rng.getrandbits(256):064x}",
                  schedule_text="Every day at 06:00 (America/New_York)",
                  next_run=at(day + 1, 6, 0, 0),
                  email=Email("failed", "SMTP 421 4.7.0 try again later (smtp.example.com)") if day in email_failed
                  else Email("sent", "sent to billing@example.com", f"<run-{next_id}@psabill>"),
                  items=items)
        runs.append(run)
        next_id += 1
        if hold is not None and day != days - 1:
            approved = at(day, 8, 14, 5)
            run.approvals = [Approval("approved", "alice", "admin-laptop", approved, 1)]
            applied = hold.item(outcomes.UPDATED)
            hold.psa = hold.seats
            runs.append(Run("approval", approved, outcomes.SUCCESS, id=next_id, account="example", of_run=run.id,
                            finished_at=approved + timedelta(seconds=6), psa="connectwise", host="admin-laptop",
                            api_requests=4, account_name="Example MSP", zone=ZONE.key,
                            email=Email("sent", "sent to billing@example.com"), items=[applied]))
            next_id += 1
        if day in dry_days:
            started = at(day, 14, 12)
            dry = [line.unchanged() if line.psa == line.seats else line.item(outcomes.PLANNED)
                   for line in lines if appears.get(line.customer, -1) <= day and day >= line.mapped_on]
            runs.append(Run("dry-run", started, outcomes.PLANNED_RUN, id=next_id, account="example",
                            finished_at=started + timedelta(seconds=35), psa="connectwise", host="admin-laptop",
                            api_requests=10, account_name="Example MSP", zone=ZONE.key, items=dry,
                            email=Email("skipped", "dry runs send no email")))
            next_id += 1
    return runs


def next_run(previous: Run, *, seed: int = 1, change_rate: float = 0.015, days: int = 1) -> Run:
    """The scheduled run ``days`` after ``previous``: each line as ``previous`` left it, ``change_rate``
    of them changed (and updated); failed, held and unmapped lines are so again."""
    rng = random.Random(seed)
    items: List[Item] = []
    for item in previous.items:
        if item.outcome in (outcomes.FAILED, outcomes.HELD, outcomes.UNMAPPED):
            items.append(replace(item))
            continue
        settled = item.new if item.outcome == outcomes.UPDATED else item.old
        if settled is not None and rng.random() < change_rate:
            new = max(0, int(settled) + rng.choice((1, 1, 2, -1, -2)))
            items.append(replace(item, outcome=outcomes.UPDATED, old=settled, new=new))
        else:
            items.append(replace(item, outcome=outcomes.UNCHANGED, old=settled, new=item.new))
    started = previous.started_at + timedelta(days=days)
    occurrence = previous.occurrence + timedelta(days=days) if previous.occurrence else None
    return replace(previous, id=(previous.id or 0) + 1, started_at=started, occurrence=occurrence, attempt=1,
                   finished_at=started + timedelta(seconds=90), late_seconds=None, items=items, approvals=[],
                   tally=None)
