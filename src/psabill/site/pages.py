"""The site's three kinds of page, rendered to bytes: the index, a run's page and a customer's page.

Jinja2 templates (``psabill/site/templates``, autoescaped, strict about
undefined names) lay each page out; the context they get holds only cleaned
strings, numbers and markup this module built itself, never a raw model field,
so nothing from outside reaches a page without :mod:`psabill.text.clean` and
an escape. The long tables (a run's items, a customer's events) are built here
as strings, every outside value through :class:`psabill.site.fmt.Texts`: a
year of daily runs at 5,000 customers is millions of rows, and Jinja's
per-value overhead would be most of the build. A run's rows come from the
records of :mod:`psabill.site.lines` as UTF-8 bytes and are spliced into the
rendered page where the template printed :func:`block` markers (a NUL byte
around the block's number: no cleaned text can hold a NUL, the cleaner
escapes it).

Every page carries a Content-Security-Policy that forbids every script, frame,
form, font and remote image (``default-src 'none'; style-src 'unsafe-inline';
img-src data:``), and holds no script of its own.
"""

from __future__ import annotations

import functools
from datetime import datetime, timedelta, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

import jinja2
from markupsafe import Markup, escape

from psabill import outcomes
from psabill.site import charts, facts, fmt
from psabill.site.csvfile import CsvRows
from psabill.site.lines import LineBook, RunLines
from psabill.site.paths import CUSTOMERS_DIR, customer_slug, run_csv_path, run_page_path
from psabill.text import clean
from psabill.text.files import human_duration

if TYPE_CHECKING:
    from psabill.report import Item, Run

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"
TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
#: How many SKUs the index charts (the largest by seats); the rest are named below the chart.
SEAT_CHART_SKUS = 8
SERIES = 6  # colours s0..s5 in site.css
ARROW = "\u2192"
DASH = "\u2014"

SECTION_TEXT = {
    outcomes.HELD: "Held for approval: the guard stopped these changes and nothing was written.",
    outcomes.FAILED: "Not updated: each line has the PSA's answer and the fix.",
    outcomes.UNKNOWN: "A write was sent but its result could not be read back; the next run checks it again.",
    outcomes.UNMAPPED: "No PSA company or agreement is mapped, so these were not updated.",
    outcomes.UPDATED: "Written to the PSA.",
    outcomes.PLANNED: "In the plan, not written.",
    outcomes.UNCHANGED: "The PSA already had the right quantity.",
    outcomes.REJECTED: "Held changes an admin rejected: nothing was written.",
}
#: Outcome words whose badge and section use the bad / warning / good / info tone.
TONE = {outcomes.FAILED: "bad", outcomes.UNKNOWN: "bad", outcomes.HELD: "warn", outcomes.UNMAPPED: "warn",
        outcomes.UPDATED: "good", outcomes.PLANNED: "info", outcomes.UNCHANGED: "neutral",
        outcomes.REJECTED: "neutral"}
STATUS_TONE = {outcomes.SUCCESS: "good", outcomes.PARTIAL: "warn", outcomes.FAILED_RUN: "bad",
               outcomes.ABORTED: "bad", outcomes.INTERRUPTED: "bad", outcomes.HELD_RUN: "warn",
               outcomes.UNMAPPED_RUN: "warn", outcomes.PLANNED_RUN: "info", outcomes.RUNNING: "info"}
EMAIL_TONE = {"sent": "good", "failed": "bad", "pending": "warn", "skipped": "neutral"}
COLLAPSED = (outcomes.UNCHANGED,)


@functools.lru_cache(maxsize=None)
def environment() -> Any:
    """The site's Jinja environment, one per process: its templates compile once however many sites
    the process writes (a long-lived process, or the tests' simulated years of runs). Nothing changes it
    after it is made, and Jinja renders from one environment on several threads."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        auto_reload=False,  # the shipped templates do not change under a build: no stat per page
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["csp"] = CSP
    return env


def block(n: int) -> Markup:
    """The marker :meth:`Renderer._page` replaces with its n-th block of finished HTML."""
    return Markup(f"\x00{n}\x00")


def tone(word: str) -> str:
    return TONE.get(word, "neutral")


def status_tone(word: str) -> str:
    return STATUS_TONE.get(word, "neutral")


def counts_list(counts: Dict[str, int]) -> List[Dict[str, Any]]:
    """A run's non-zero counts in ITEM_ORDER (unknown words after): word, count, tone."""
    return [{"word": fmt.word(w), "count": counts[w], "n": f"{counts[w]:,}", "tone": tone(w), "id": "o-" + fmt.css_word(w)}
            for w in sorted(counts, key=facts.outcome_rank) if counts[w]]


class Renderer:
    """Renders pages for one build: one Jinja environment, one memo of cleaned text and slugs."""

    def __init__(self, zone: tzinfo, account_name: str = "") -> None:
        self.env = environment()
        self.zone = zone
        self.text = fmt.Texts()
        self.account = clean.name(account_name) if account_name else ""
        self._hrefs: Dict[str, str] = {}
        self._folds: Dict[str, str] = {}
        self.csv = CsvRows()
        self._run_cells: Dict[Tuple[Optional[int], datetime], str] = {}
        self._run_days: Dict[Tuple[Optional[int], datetime], Tuple[float, str]] = {}
        self.book = LineBook(self._fold, self.row, self.csv.row)

    def forget_lines(self) -> None:
        """Let go of the run lines remembered so far (an update, once its run pages are written: its
        customer pages do not need them, and at 20,000 customers they are tens of MB)."""
        self.book = LineBook(self._fold, self.row, self.csv.row)

    # -- shared bits ------------------------------------------------------------

    def customer_href(self, customer: str, prefix: str = "../") -> str:
        """The link to a customer's page from a page in ``runs/`` or ``customers/`` (prefix ``../``)."""
        try:
            slug = self._hrefs[customer]
        except KeyError:
            slug = self._hrefs[customer] = customer_slug(customer)
        return f"{prefix}{CUSTOMERS_DIR}/{slug}.html"

    def _fold(self, text: str) -> str:
        try:
            return self._folds[text]
        except KeyError:
            out = self._folds[text] = text.casefold()
            return out

    def sort_items(self, items: Sequence["Item"]) -> List["Item"]:
        """``items`` in :func:`psabill.report.item_order` (customer, SKU case-folded, then plan order)."""
        fold = self._fold
        return sorted(items, key=lambda i: (fold(i.customer), fold(i.sku), i.seq))

    def _page(self, template: str, root: str = "../", blocks: Sequence[bytes] = (), **context: Any) -> bytes:
        """``template`` rendered as UTF-8. ``blocks`` are finished HTML (bytes): the context names
        block n as ``block(n)`` and its bytes are spliced in there after rendering."""
        context.setdefault("account", self.account)
        context["root"] = root
        text: bytes = self.env.get_template(template).render(**context).encode("utf-8", "surrogatepass")
        if not blocks:
            return text
        parts = text.split(b"\x00")  # a cleaned text never holds NUL: only block markers do
        for n in range(1, len(parts), 2):
            parts[n] = blocks[int(parts[n])]
        return b"".join(parts)

    # -- rows -------------------------------------------------------------------

    def item_row(self, item: "Item", prefix: str = "../") -> str:
        """One item of a run page's open sections: who, old -> new, change, outcome, message, fix, rule."""
        t = self.text
        outcome = item.outcome
        change = item.delta
        old = fmt.qty(item.old) or DASH
        new = fmt.qty(item.new) or DASH
        detail: List[str] = []
        if item.message:
            detail.append(f'<span class="m">{t.message(item.message)}</span>')
        if item.hint:
            detail.append(f'<span class="fix"><b>Fix:</b> {t.message(item.hint)}</span>')
        if item.rule:
            detail.append(f'<span class="rule"><b>Rule:</b> {t.message(item.rule)}</span>')
        refs = [t.name(v) for v in (item.psa_company, item.agreement, item.line) if v]
        if refs:
            detail.append(f'<span class="refs">{" · ".join(refs)}</span>')
        return (f'<tr><td class="who"><a href="{self.customer_href(item.customer, prefix)}">{t.name(item.customer)}</a>'
                f'<span class="sku">{t.name(item.sku)}</span></td>'
                f'<td class="q">{old} {ARROW} {new}</td>'
                f'<td class="q d {fmt.direction(change)}">{fmt.delta(change)}</td>'
                f'<td class="o"><span class="badge t-{tone(outcome)}">{t.word(outcome)}</span></td>'
                f'<td class="msg">{"".join(detail)}</td></tr>')

    def plain_row(self, item: "Item") -> str:
        """One row of a collapsed section (unchanged): customer, SKU, quantity."""
        t = self.text
        seats = item.new if item.new is not None else item.old
        return (f'<tr><td><a href="{self.customer_href(item.customer)}">{t.name(item.customer)}</a></td>'
                f'<td>{t.name(item.sku)}</td><td>{fmt.qty(seats)}</td></tr>')

    # -- a run's page -----------------------------------------------------------

    def row(self, item: "Item") -> str:
        """The item's row on its run's page: plain in a collapsed section, full in the others."""
        return self.plain_row(item) if item.outcome in COLLAPSED else self.item_row(item)

    def run_files(self, run: "Run", attempts: Sequence["Run"]) -> Tuple[bytes, bytes, RunLines]:
        """The run's page (``runs/000042.html``), its CSV (``runs/000042.csv``) and its sorted lines."""
        lines = self.book.lines(run.items)
        counts = lines.counts()
        sections = []
        blocks: List[bytes] = []
        rows = lines.html_by_outcome()
        for word in sorted(counts, key=facts.outcome_rank):
            sections.append({"id": "o-" + fmt.css_word(word), "word": fmt.word(word), "count": counts[word],
                             "n": f"{counts[word]:,}", "tone": tone(word), "collapsed": word in COLLAPSED,
                             "rows": block(len(blocks)), "about": SECTION_TEXT.get(word, "")})
            blocks.append(rows[word])
        total = len(lines.items)
        page = self._page("run.html", blocks=blocks, **self.run_context(run, attempts, counts), sections=sections,
                          csv_href=run_csv_path(run.id or 0).split("/", 1)[1], total=total, total_n=f"{total:,}")
        table = self.csv.header.encode("utf-8") + lines.csv()
        return page, table, lines

    def run_context(self, run: "Run", attempts: Sequence["Run"], counts: Dict[str, int]) -> Dict[str, Any]:
        zone = self.zone
        started = fmt.aware(run.started_at)
        rows: List[Tuple[str, str]] = [("Started", fmt.when_seconds(started, zone))]
        if run.finished_at is not None:
            seconds = (fmt.aware(run.finished_at) - started).total_seconds()
            rows.append(("Finished", f"{fmt.when_seconds(run.finished_at, zone)} ({duration(seconds)})"))
        rows.append(("Trigger", fmt.word(run.trigger)))
        if run.occurrence is not None:
            rows.append(("Occurrence", f"{fmt.when(run.occurrence, zone)}, attempt {int(run.attempt)}"))
        if run.of_run is not None:
            rows.append(("Applies", f"the held plan of run {int(run.of_run)}"))
        if run.late_seconds:
            rows.append(("Late", duration(run.late_seconds)))
        if run.host:
            rows.append(("Host", clean.name(run.host)))
        if run.psa:
            rows.append(("PSA", clean.name(run.psa)))
        if run.api_requests:
            rows.append(("API requests", f"{int(run.api_requests):,}"))
        if run.schedule_text:
            rows.append(("Schedule", clean.message(run.schedule_text)))
        if run.source_digest:
            rows.append(("Source", "sha-256 " + clean.clean(run.source_digest, limit=16)))
        email = run.email
        attempt_rows = []
        for other in attempts:
            attempt_rows.append({
                "href": run_page_path(other.id).split("/", 1)[1] if other.id is not None else "",
                "id": other.id, "current": other.id == run.id, "when": fmt.when_seconds(other.started_at, zone),
                "trigger": fmt.word(other.trigger), "attempt": int(other.attempt),
                "host": clean.name(other.host) if other.host else "", "status": fmt.word(other.status),
                "tone": status_tone(other.status), "message": clean.message(other.message, limit=300),
            })
        chips = counts_list(counts)
        approvals = [{"action": fmt.word(a.action), "by": clean.name(a.by), "host": clean.name(a.host),
                      "when": fmt.when_seconds(a.at, zone), "count": int(a.items),
                      "tone": "good" if a.action == "approved" else "neutral"} for a in run.approvals]
        return {
            "title": f"Run {run.id}", "run_id": run.id, "status": fmt.word(run.status),
            "status_tone": status_tone(run.status), "when": fmt.when(started, zone),
            "trigger": fmt.word(run.trigger), "dry_run": run.dry_run,
            "zone": fmt.zone_label(zone, started), "rows": rows,
            "message": clean.message(run.message), "message_bad": run.status in outcomes.BAD,
            "email_status": fmt.word(email.status) if email.status else "",
            "email_tone": EMAIL_TONE.get(email.status or "", "neutral"),
            "email_message": clean.message(email.message, limit=300),
            "attempts": attempt_rows if len(attempt_rows) > 1 or approvals else [],
            "approvals": approvals, "counts": chips, "chips": chips,
        }

    # -- a customer's page --------------------------------------------------------

    def customer_page(self, customer: str, events: Sequence[Tuple["Run", "Item"]]) -> bytes:
        """The customer's page: per SKU, its seats at each event (a step chart) and the events."""
        t = self.text
        zone = self.zone
        by_sku: Dict[str, List[Tuple["Run", "Item"]]] = {}
        for run, item in events:
            by_sku.setdefault(item.sku, []).append((run, item))
        skus = []

        def latest_seats(sku: str) -> float:
            last = by_sku[sku][-1][1]
            value = last.new if last.new is not None else last.old
            return float(value or 0)

        order = sorted(by_sku, key=lambda s: (-latest_seats(s), self._fold(s), s))
        for n, sku in enumerate(order):
            lines = by_sku[sku]
            rows: List[str] = []
            points: List[Tuple[float, float]] = []
            tips: List[str] = []
            for n_event, (run, item) in enumerate(reversed(lines)):  # newest first in the table
                first = n_event == len(lines) - 1
                rows.append(self.event_row(run, item, first and item.outcome == outcomes.UNCHANGED))
            for run, item in lines:
                seats = item.new if item.new is not None else item.old
                if seats is None:
                    continue
                stamp, day = self._run_day(run)
                points.append((stamp, float(seats)))
                tips.append(f"{day}: {escape(fmt.qty(seats))} seats ({t.word(item.outcome)}, run {int(run.id or 0)})")
            last_run, last = lines[-1]
            seats_now = last.new if last.new is not None else last.old
            label = escape(f"Seats of {clean.name(sku)} at each change")
            skus.append({
                "sku": clean.name(sku), "seats": fmt.qty(seats_now) or DASH,
                "since": fmt.day_year(last_run.started_at, zone),
                "steady": len(lines) == 1 and last.outcome == outcomes.UNCHANGED,
                "first": fmt.day_year(lines[0][0].started_at, zone), "events": len(lines),
                "chart": Markup(charts.step_chart(points, tips, n % SERIES, str(label))) if points else "",
                "rows": Markup("".join(rows)),
                "refs": " · ".join(clean.name(v) for v in (last.psa_company, last.agreement, last.line) if v),
                "outcome": fmt.word(last.outcome), "tone": tone(last.outcome),
            })
        return self._page("customer.html", title=clean.name(customer), customer=clean.name(customer), skus=skus)

    def _run_day(self, run: "Run") -> Tuple[float, str]:
        """The run's start as a timestamp and as an escaped ``1 Dec 2026``, once per run and build."""
        key = (run.id, run.started_at)
        found = self._run_days.get(key)
        if found is None:
            found = self._run_days[key] = (fmt.aware(run.started_at).timestamp(),
                                           str(escape(fmt.day_year(run.started_at, self.zone))))
        return found

    def event_row(self, run: "Run", item: "Item", baseline: bool = False) -> str:
        t = self.text
        change = item.delta
        detail = ['<span class="m">The line at the start of this window.</span>'] if baseline else []
        if item.message:
            detail.append(f'<span class="m">{t.message(item.message)}</span>')
        if item.hint:
            detail.append(f'<span class="fix"><b>Fix:</b> {t.message(item.hint)}</span>')
        if item.rule:
            detail.append(f'<span class="rule"><b>Rule:</b> {t.message(item.rule)}</span>')
        key = (run.id, run.started_at)
        cell = self._run_cells.get(key)
        if cell is None:
            cell = self._run_cells[key] = (
                f'<tr><td class="who"><a href="../{run_page_path(run.id or 0)}">'
                f'{escape(fmt.when(run.started_at, self.zone))}</a><span class="sku">run {int(run.id or 0)}</span></td>')
        return (f'{cell}'
                f'<td class="q">{fmt.qty(item.old) or DASH} {ARROW} {fmt.qty(item.new) or DASH}</td>'
                f'<td class="q d {fmt.direction(change)}">{fmt.delta(change)}</td>'
                f'<td class="o"><span class="badge t-{tone(item.outcome)}">{t.word(item.outcome)}</span></td>'
                f'<td class="msg">{"".join(detail)}</td></tr>')

    # -- the index ------------------------------------------------------------------

    def index_page(self, context: Dict[str, Any]) -> bytes:
        return self._page("index.html", root="", **context)


def duration(seconds: float) -> str:
    return human_duration(seconds, spaced=True)


# -- the index's context ----------------------------------------------------------------


def index_context(r: Renderer, *, runs: Sequence["Run"], totals: Sequence[Tuple["Run", Dict[str, int]]],
                  load: Callable[[int], Optional["Run"]], now: datetime, days: int) -> Dict[str, Any]:
    """Everything the index shows. ``runs`` newest first (without items), ``totals`` oldest first;
    ``load`` reads a run with its items (the few the index lists from)."""
    zone = r.zone
    real = [run for run in runs if facts.is_real(run)]
    plan_real = [run for run in real if facts.item_count(run) > 0]
    latest = load(plan_real[0].id) if plan_real and plan_real[0].id is not None else None
    month = facts.month_start(now, zone)

    # -- what needs action ---------------------------------------------------------
    held_runs = facts.open_held(runs)
    held = []
    for run in held_runs[:3]:
        full = load(run.id) if run.id is not None else None
        items = [i for i in r.sort_items(full.items) if i.outcome == outcomes.HELD] if full else []
        held.append({"href": run_page_path(run.id or 0), "id": run.id, "when": fmt.when(run.started_at, zone),
                     "count": run.count(outcomes.HELD),
                     "items": [action_item(r, i) for i in items[:facts.ACTION_LIST_LIMIT]],
                     "more": max(run.count(outcomes.HELD) - facts.ACTION_LIST_LIMIT, 0)})
    held_more = max(len(held_runs) - 3, 0)

    recent_ids = [run.id for run in plan_real[:facts.RECURRING_RUNS] if run.id is not None]
    recent = [run for run in (load(i) for i in recent_ids) if run is not None]
    again: Dict[Tuple[str, str, str], str] = {}
    for rec in facts.recurring_lines(recent):
        again[(rec.customer, rec.sku, rec.outcome)] = f"{fmt.word(rec.outcome)} in {rec.times} of the last {rec.of} runs"
    shown: Set[Tuple[str, str, str]] = set()

    def listed(word: str) -> Optional[Dict[str, Any]]:
        if latest is None:
            return None
        items = [i for i in r.sort_items(latest.items) if i.outcome == word]
        if not items:
            return None
        rows = []
        for i in items[:facts.ACTION_LIST_LIMIT]:
            shown.add((i.customer, i.sku, i.outcome))
            rows.append(action_item(r, i, again.get((i.customer, i.sku, i.outcome), "")))
        return {"href": run_page_path(latest.id or 0) + "#o-" + fmt.css_word(word), "id": latest.id,
                "when": fmt.when(latest.started_at, zone), "count": len(items), "items": rows,
                "more": max(len(items) - facts.ACTION_LIST_LIMIT, 0)}

    failures = listed(outcomes.FAILED)
    unknown = listed(outcomes.UNKNOWN)
    unmapped = listed(outcomes.UNMAPPED)
    recurring = []  # the recurring lines the lists above had no room for
    for rec in facts.recurring_lines(recent):
        if (rec.customer, rec.sku, rec.outcome) in shown:
            continue
        recurring.append({"customer": clean.name(rec.customer), "href": r.customer_href(rec.customer, ""),
                          "sku": clean.name(rec.sku), "outcome": fmt.word(rec.outcome), "tone": tone(rec.outcome),
                          "text": again[(rec.customer, rec.sku, rec.outcome)],
                          "message": clean.message(rec.item.message, limit=240),
                          "hint": clean.message(rec.item.hint, limit=240)})
    recurring_count = len(again)
    run_problem = None
    bad = facts.recurring_run_problem(real)
    newest_real = real[0] if real else None
    if bad is not None:
        times, of, newest = bad
        run_problem = {"text": f"The run went wrong in {times} of the last {of} runs",
                       "status": fmt.word(newest.status), "href": run_page_path(newest.id or 0),
                       "when": fmt.when(newest.started_at, zone), "message": clean.message(newest.message, limit=300)}
    elif newest_real is not None and newest_real.status in outcomes.BAD:
        run_problem = {"text": "The last run went wrong", "status": fmt.word(newest_real.status),
                       "href": run_page_path(newest_real.id or 0), "when": fmt.when(newest_real.started_at, zone),
                       "message": clean.message(newest_real.message, limit=300)}

    # -- charts ---------------------------------------------------------------------
    points = [(run, sums) for run, sums in totals if run.trigger != "approval" and sums]
    seats = seat_charts(r, points)
    changes = changes_chart(r, list(reversed(runs)))
    plan_oldest = [run for run in reversed(runs) if facts.is_plan_run(run)]
    baseline_light, field = facts.movers_baseline(plan_oldest, month)
    baseline = load(baseline_light.id) if baseline_light is not None and baseline_light.id is not None else None
    current = latest if latest is not None and fmt.aware(latest.started_at) >= month else None
    moved = facts.movers(baseline, field, current)
    largest = max([abs(m.change) for m in moved] + [1])
    mover_rows = []
    for m in moved:
        name = clean.name(m.customer)
        tip = escape(f"{name}: {fmt.qty(m.before)} {ARROW} {fmt.qty(m.after)} seats ({fmt.delta(m.change)})")
        mover_rows.append({"customer": name, "href": r.customer_href(m.customer, ""), "before": fmt.qty(m.before),
                           "after": fmt.qty(m.after), "delta": fmt.delta(m.change), "dir": fmt.direction(m.change),
                           "chart": Markup(charts.mover_bar(m.change, largest, str(tip)))})

    # -- headline figures ---------------------------------------------------------------
    kpis = []
    if runs:
        last_run = runs[0]
        kpis.append({"label": "Last run", "value": fmt.word(last_run.status), "tone": status_tone(last_run.status),
                     "sub": f"{fmt.short(last_run.started_at, zone)} · {fmt.word(last_run.trigger)}",
                     "href": run_page_path(last_run.id or 0)})
    if points:
        now_total = sum(points[-1][1].values())
        first_total = sum(points[0][1].values())
        kpis.append({"label": "Seats planned", "value": fmt.qty(now_total), "tone": "",
                     "sub": f"{fmt.delta(now_total - first_total)} since {fmt.day(points[0][0].started_at, zone)}",
                     "href": "#seats"})
    this_month = [run for run in runs if fmt.aware(run.started_at) >= month and run.trigger != "dry-run"]
    kpis.append({"label": f"Changes in {fmt.MONTH_NAMES[month.month - 1]}",
                 "value": f"{sum(run.count(outcomes.UPDATED) for run in this_month):,}", "tone": "",
                 "sub": f"lines updated over {fmt.plural(len(this_month), 'run')}", "href": "#changes"})
    parts = [(sum(run.count(outcomes.HELD) for run in held_runs), "held"),
             ((failures or {}).get("count", 0), "failed"), ((unknown or {}).get("count", 0), "unknown"),
             ((unmapped or {}).get("count", 0), "unmapped")]
    needs = sum(n for n, _ in parts)
    kpis.append({"label": "Needs action", "value": f"{needs:,}", "tone": "bad" if needs else "good",
                 "sub": " · ".join(f"{n:,} {w}" for n, w in parts if n) if needs
                 else "nothing held, failed or unmapped", "href": "#action"})

    run_rows = []
    for run in runs:
        email = run.email
        run_rows.append({
            "href": run_page_path(run.id or 0), "id": run.id, "when": fmt.when(run.started_at, zone),
            "trigger": fmt.word(run.trigger), "status": fmt.word(run.status), "tone": status_tone(run.status),
            "counts": counts_list(run.counts), "attempt": int(run.attempt),
            "email": fmt.word(email.status) if email.status else "", "email_tone": EMAIL_TONE.get(email.status or "", "neutral"),
            "email_message": clean.message(email.message, limit=200), "host": clean.name(run.host) if run.host else "",
            "message": clean.message(run.message, limit=160),
        })
    action = bool(held or failures or unknown or unmapped or again or run_problem)
    return {
        "title": "Billing history", "generated": fmt.when(now, zone), "zone": fmt.zone_label(zone, now), "days": days,
        "kpis": kpis, "action": action, "held": held, "held_more": held_more, "failures": failures,
        "unknown": unknown, "unmapped": unmapped, "recurring": recurring, "recurring_count": recurring_count,
        "run_problem": run_problem,
        "seats": seats, "changes": changes, "movers": mover_rows,
        "month": fmt.MONTH_NAMES[month.month - 1], "runs": run_rows,
        "since": fmt.day_year(now - timedelta(days=days), zone),
    }


def action_item(r: Renderer, item: "Item", recurring: str = "") -> Dict[str, Any]:
    return {"recurring": recurring, "customer": clean.name(item.customer), "href": r.customer_href(item.customer, ""),
            "sku": clean.name(item.sku), "old": fmt.qty(item.old) or DASH, "new": fmt.qty(item.new) or DASH,
            "delta": fmt.delta(item.delta), "dir": fmt.direction(item.delta),
            "message": clean.message(item.message, limit=300), "hint": clean.message(item.hint, limit=300),
            "rule": clean.message(item.rule, limit=200)}


def seat_charts(r: Renderer, points: Sequence[Tuple["Run", Dict[str, int]]]) -> Dict[str, Any]:
    """Small multiples: one chart per SKU (the largest SEAT_CHART_SKUS), one point per plan run."""
    if not points:
        return {"charts": [], "others": [], "runs": 0, "first": "", "last": ""}
    zone = r.zone
    latest = points[-1][1]
    names: Set[str] = set()
    for _, sums in points:
        names.update(sums)
    order = sorted(names, key=lambda s: (-latest.get(s, 0), r._fold(s), s))
    shown, others = order[:SEAT_CHART_SKUS], order[SEAT_CHART_SKUS:]
    days = [escape(fmt.day_year(run.started_at, zone)) for run, _ in points]
    out = []
    for n, sku in enumerate(shown):
        values = [sums.get(sku, 0) for _, sums in points]
        name = r.text.name(sku)
        tips = [f"{name} · {d} · run {int(run.id or 0)}: {escape(fmt.qty(v))} seats"
                for (run, _), d, v in zip(points, days, values)]
        label = f"Seats of {name} per run, {days[0]} to {days[-1]}: {escape(fmt.qty(values[0]))} to {escape(fmt.qty(values[-1]))}"
        change = values[-1] - values[0]
        out.append({"sku": clean.name(sku), "latest": fmt.qty(values[-1]), "delta": fmt.delta(change),
                    "dir": fmt.direction(change), "low": fmt.qty(min(values)), "high": fmt.qty(max(values)),
                    "points": len(values), "chart": Markup(charts.seats_chart(values, tips, n % SERIES, label))})
    return {"charts": out, "others": [clean.name(s) for s in others], "runs": len(points),
            "first": fmt.day(points[0][0].started_at, zone), "last": fmt.day(points[-1][0].started_at, zone)}


def changes_chart(r: Renderer, runs: Sequence["Run"]) -> Dict[str, Any]:
    """One stacked bar per run (oldest first)."""
    if not runs:
        return {"chart": "", "top": 0, "first": "", "last": "", "runs": 0}
    zone = r.zone
    bars = []
    for run in runs:
        counts = run.counts
        stacks = [sum(counts.get(w, 0) for w in words) for words in facts.CHANGE_STACKS]
        said = ", ".join(f"{n:,} {w}" for n, (w, _) in zip(stacks, charts.STACKS) if n) or "no changes"
        tip = escape(f"Run {int(run.id or 0)} · {fmt.short(run.started_at, zone)} · {fmt.word(run.trigger)} · "
                     f"{fmt.word(run.status)}: {said}")
        bars.append((stacks, run.status in outcomes.BAD, str(tip)))
    top = max(sum(s) for s, _, _ in bars)
    label = f"Changes per run, {fmt.day(runs[0].started_at, zone)} to {fmt.day(runs[-1].started_at, zone)}"
    return {"chart": Markup(charts.changes_chart(bars, str(escape(label)))), "top": f"{top:,}",
            "first": fmt.day(runs[0].started_at, zone), "last": fmt.day(runs[-1].started_at, zone),
            "runs": len(runs)}
