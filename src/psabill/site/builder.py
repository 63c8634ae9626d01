"""Building the history site: :func:`build` (every page of the window) and :func:`update` (after one run).

:func:`build` reads each run of the window once, oldest first: it writes the
run's page and CSV, keeps the run's events for the customer pages (see
:mod:`psabill.site.facts`), then writes one page per customer seen in the
window and the index. Items are not kept beyond their run, so a year of daily
runs at 5,000 customers builds in bounded memory.

:func:`update` writes what one run changed: the index; the run's page and CSV;
the pages of the run's other attempts and of the plan an approval applied
(their attempt lists changed); and the pages of the customers the run touched,
i.e. whose item in it is an event, judged against their previous line (plus
any customer of the run whose page does not exist yet). A customer the run
left unchanged keeps its page: nothing on it would differ, except that its
window start moves only at the next :func:`build`.

Both skip a file whose bytes are unchanged and return the files they wrote.
No page is ever deleted: a run page stays where an email linked to it. (A
:func:`build` does remove the temp files of writes that never finished.)
"""

from __future__ import annotations

import os
import time
from itertools import compress
from operator import itemgetter
from datetime import datetime, timedelta, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Set, Tuple

from psabill.site import facts
from psabill.site.lines import RunLines
from psabill.site.pages import Renderer, index_context
from psabill.site.paths import CUSTOMERS_DIR, INDEX, RUNS_DIR, customer_page_path, run_csv_path, run_page_path
from psabill.site.write import Writer, remove_stale_temps

if TYPE_CHECKING:
    from psabill.report import Item, Run
    from psabill.site.view import SiteView

SUBDIRS = [RUNS_DIR, CUSTOMERS_DIR]
_FIRST = itemgetter(0)
CUSTOMER_CHUNK = 1000  # customers whose lines an update reads at a time


class _Loaded:
    """``view.run`` for the few runs the index reads, each read once (a build hands over the ones it read)."""

    def __init__(self, view: "SiteView") -> None:
        self.view = view
        self.runs: Dict[int, Optional["Run"]] = {}

    def __call__(self, run_id: int) -> Optional["Run"]:
        if run_id not in self.runs:
            self.runs[run_id] = self.view.run(run_id)
        return self.runs[run_id]


def _index_wants(runs: List["Run"], now: datetime, zone: tzinfo) -> Set[int]:
    """The ids of the runs the index reads with their items (so a build keeps them when it passes)."""
    real_plans = [run for run in runs if facts.is_real(run) and facts.item_count(run) > 0]
    wanted = {run.id for run in real_plans[:facts.RECURRING_RUNS]}
    wanted.update(run.id for run in facts.open_held(runs)[:3])
    plan_oldest = [run for run in reversed(runs) if facts.is_plan_run(run)]
    baseline, _ = facts.movers_baseline(plan_oldest, facts.month_start(now, zone))
    if baseline is not None:
        wanted.add(baseline.id)
    return {i for i in wanted if i is not None}


def _write_index(writer: Writer, renderer: Renderer, view: "SiteView", runs: List["Run"], since: datetime,
                 load: _Loaded, now: datetime, days: int) -> None:
    context = index_context(renderer, runs=runs, totals=view.sku_totals(since), load=load, now=now, days=days)
    writer.put(INDEX, renderer.index_page(context))


def _write_run(writer: Writer, renderer: Renderer, view: "SiteView", run: "Run") -> Optional[RunLines]:
    if run.id is None:
        return None
    page, table, lines = renderer.run_files(run, view.attempts(run))
    writer.put(run_page_path(run.id), page)
    writer.put(run_csv_path(run.id), table)
    return lines


def build(view: "SiteView", out_dir: Path, *, zone: tzinfo, now: datetime, days: int = 60,
          account_name: str = "") -> List[Path]:
    """Rebuild the whole site for the runs of the last ``days`` days; return the files written."""
    out_dir = Path(out_dir)
    since = now - timedelta(days=days)
    renderer = Renderer(zone, account_name)
    runs = view.runs(since)
    runs.sort(key=facts.order_key, reverse=True)
    wanted = _index_wants(runs, now, zone)
    load = _Loaded(view)
    tracker = facts.Tracker()
    events: Dict[str, List[Tuple["Run", "Item"]]] = {}
    writer = Writer(out_dir, SUBDIRS)
    for directory in [out_dir] + [out_dir / name for name in SUBDIRS]:
        remove_stale_temps(directory, time.time())
    try:
        for light in reversed(runs):  # oldest first: the order events are judged in
            if light.id is None:
                continue
            run = view.run(light.id)
            if run is None:
                continue
            lines = _write_run(writer, renderer, view, run)
            assert lines is not None
            pairs, olds, news, words = lines.columns()
            for customer in set(map(_FIRST, pairs)).difference(events):
                events[customer] = []
            if run.trigger != "dry-run":
                for item in compress(lines.items, tracker.see_lines(pairs, olds, news, words)):
                    events[item.customer].append((light, item))
            if run.id in wanted:
                load.runs[run.id] = run
        for customer, history in events.items():
            writer.put(customer_page_path(customer), renderer.customer_page(customer, history))
        _write_index(writer, renderer, view, runs, since, load, now, days)
    except BaseException:
        writer.abandon()
        raise
    return writer.close()


def update(view: "SiteView", out_dir: Path, run_id: int, *, zone: tzinfo, now: datetime, days: int = 60,
           account_name: str = "") -> List[Path]:
    """Write what run ``run_id`` changed (see the module doc); return the files written."""
    out_dir = Path(out_dir)
    since = now - timedelta(days=days)
    renderer = Renderer(zone, account_name)
    runs = view.runs(since)
    runs.sort(key=facts.order_key, reverse=True)
    load = _Loaded(view)
    writer = Writer(out_dir, SUBDIRS)
    try:
        run = load(run_id)
        if run is not None:
            _write_run(writer, renderer, view, run)
            for other in _related(view, run):
                full = load(other)
                if full is not None:
                    _write_run(writer, renderer, view, full)
            touched = _touched(view, run, runs, load, out_dir)
            # The run pages are written: let their lines and payloads go before the customer pages, read a
            # chunk of customers at a time (a large run's lines are never all held twice).
            renderer.forget_lines()
            writer.drain()
            for start in range(0, len(touched), CUSTOMER_CHUNK):
                chunk = touched[start: start + CUSTOMER_CHUNK]
                for customer, lines in view.customers_lines(chunk, since).items():
                    writer.put(customer_page_path(customer),
                               renderer.customer_page(customer, facts.customer_events(lines)))
        _write_index(writer, renderer, view, runs, since, load, now, days)
    except BaseException:
        writer.abandon()
        raise
    return writer.close()


def _related(view: "SiteView", run: "Run") -> List[int]:
    """The other runs whose page lists ``run`` among its attempts (and the plan an approval applied)."""
    ids = [other.id for other in view.attempts(run) if other.id is not None and other.id != run.id]
    if run.of_run is not None and run.of_run != run.id and run.of_run not in ids:
        ids.append(run.of_run)
        ids.extend(o.id for o in view.attempts(view.run(run.of_run) or run)
                   if o.id is not None and o.id not in ids and o.id != run.id)
    return ids


def _touched(view: "SiteView", run: "Run", runs: List["Run"], load: _Loaded, out_dir: Path) -> List[str]:
    """The customers of ``run`` whose page must be rewritten: an event in ``run``, or no page yet."""
    customers: Dict[str, None] = {}
    if run.trigger != "dry-run":
        tracker = facts.Tracker()
        key = facts.order_key(run)
        earlier = [r for r in runs if facts.order_key(r) < key and r.trigger != "dry-run"]  # newest first
        base = next((r for r in earlier if r.trigger != "approval" and facts.item_count(r) > 0), None)
        if base is not None and base.id is not None:
            chain = [base] + [r for r in reversed(earlier) if r.trigger == "approval"
                              and facts.order_key(r) > facts.order_key(base)]
            for previous in chain:
                full = load(previous.id) if previous.id is not None else None
                for item in (full.items if full is not None else []):
                    tracker.seed(item)
        for item in run.items:
            if not tracker.known(item) or tracker.see(item):
                customers[item.customer] = None
    for item in run.items:
        if item.customer not in customers and not os.path.exists(out_dir / customer_page_path(item.customer)):
            customers[item.customer] = None
    return list(customers)
