#!/usr/bin/env python3
"""History-site performance (issue 25): one command, outside the test suite.

    python benchmarks/site_bench.py                  # all figures, text table
    python benchmarks/site_bench.py --markdown       # the same table as Markdown
    python benchmarks/site_bench.py --runs 5 --customers 5000 --days 365 --dir /var/tmp

Figures (the target is the issue's; the others are measured and shown):

1. ``build``      ``psabill.site.build`` of a year of daily runs (``--days``, 365) at
                  ``--customers`` (5,000) customers into an empty directory: every run
                  page and CSV, every customer page, the index. Target: under 10 s.
2. ``rebuild``    the same build again over the finished site: nothing changed, so
                  nothing is written (the index neither: same ``now``).
3. ``window``     a build of the default window (60 days) of the same ledger.
4. ``update``     ``psabill.site.update`` after the next day's run (about 1.5% of lines
                  changed, as every day of the year): the files written and the time,
                  against rewriting the page of every customer in the run.

The ledger is ``tests/support/sites.FakeSiteView`` over ``year_of_runs()``: it hands
out runs it holds in memory, so the figures are the site's own work (rendering,
cleaning, writing, fsync) and leave out the ledger's read; the time spent inside
the view is shown apart. Making the year of runs is not timed. Everything is
written under a temp dir (``--dir`` picks its parent: the file system matters,
each page is fsynced). Exit status 1 when a figure misses its target.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

from psabill import site  # noqa: E402
from psabill.site import builder  # noqa: E402
from support.sites import ZONE, FakeSiteView, next_run, year_of_runs  # noqa: E402

TARGET_SECONDS = 10.0


@dataclasses.dataclass
class Row:
    figure: str
    target: str
    measured: str
    ok: Optional[bool]  # None: no target
    notes: List[str] = dataclasses.field(default_factory=list)

    @property
    def verdict(self) -> str:
        return "-" if self.ok is None else ("pass" if self.ok else "FAIL")


class TimedView:
    """The view, with the time spent inside it added up (the ledger's share of a build)."""

    def __init__(self, view: FakeSiteView) -> None:
        self.view = view
        self.seconds = 0.0

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.view, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start
        return timed


def spread(values: Sequence[float]) -> str:
    return f"{statistics.median(values):.2f} s ({min(values):.2f}–{max(values):.2f})"


def megabytes(paths: Sequence[Path]) -> float:
    return sum(p.stat().st_size for p in paths) / 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--days", type=int, default=365, help="days of daily runs in the ledger, all built")
    parser.add_argument("--runs", type=int, default=3, help="builds to time (the median is the figure)")
    parser.add_argument("--dir", type=Path, default=None, help="parent of the temp site dirs")
    parser.add_argument("--markdown", nargs="?", const="-", default=None, metavar="FILE")
    options = parser.parse_args()

    t0 = time.perf_counter()
    runs = year_of_runs(customers=options.customers, days=options.days)
    latest = runs[-1]
    tomorrow = next_run(latest)  # the next day: each line as the last run left it, ~1.5% changed
    view = FakeSiteView(runs)
    made = time.perf_counter() - t0
    items = sum(len(r.items) for r in runs)
    plans = [r for r in runs if r.items]
    now = latest.started_at + timedelta(minutes=10)
    print(f"ledger: {len(runs)} runs over {options.days} days, {items:,} items "
          f"({items // max(len(plans), 1):,} per run), {options.customers:,} customers; made in {made:.1f} s",
          file=sys.stderr)

    rows: List[Row] = []
    parent = options.dir or Path(tempfile.gettempdir())
    work = Path(tempfile.mkdtemp(prefix="psabill-site-bench-", dir=parent))
    try:
        # -- 1. a cold build of the whole year, and 2. the same again ------------------------
        cold: List[float] = []
        warm: List[float] = []
        inside: List[float] = []
        cpu: List[float] = []  # every thread of this process: rendering, and the writers' system time
        written: List[Path] = []
        rewritten: List[Path] = []
        for n in range(options.runs):
            out = work / f"year-{n}"
            timed = TimedView(view)
            start, cpu_start = time.perf_counter(), time.process_time()
            written = site.build(timed, out, zone=ZONE, now=now, days=options.days, account_name="Example MSP")
            cold.append(time.perf_counter() - start)
            cpu.append(time.process_time() - cpu_start)
            inside.append(timed.seconds)
            start = time.perf_counter()
            rewritten = site.build(view, out, zone=ZONE, now=now, days=options.days, account_name="Example MSP")
            warm.append(time.perf_counter() - start)
            if n < options.runs - 1:
                shutil.rmtree(out)
        site_dir = work / f"year-{options.runs - 1}"
        rows.append(Row("1. build: a year of daily runs, empty dir", f"< {TARGET_SECONDS:.0f} s", spread(cold),
                        statistics.median(cold) < TARGET_SECONDS,
                        [f"{len(written):,} files, {megabytes(written):,.0f} MB; {items:,} items",
                         f"CPU {statistics.median(cpu):.2f} s (all threads); in the view (the ledger's share): "
                         f"{statistics.median(inside):.2f} s"]))
        rows.append(Row("2. rebuild: the same, nothing changed", "-", spread(warm), None,
                        [f"{len(rewritten)} files written"]))

        # -- 3. the default window ------------------------------------------------------------
        window: List[float] = []
        for n in range(options.runs):
            out = work / f"window-{n}"
            start = time.perf_counter()
            files = site.build(view, out, zone=ZONE, now=now, days=60, account_name="Example MSP")
            window.append(time.perf_counter() - start)
            shutil.rmtree(out)
        rows.append(Row("3. build: the default 60-day window", "-", spread(window), None, [f"{len(files):,} files"]))

        # -- 4. update after one more run -----------------------------------------------------
        view.add(tomorrow)
        later = tomorrow.started_at + timedelta(minutes=10)
        copy = work / "update-all"
        shutil.copytree(site_dir, copy)
        start = time.perf_counter()
        smart = site.update(view, site_dir, tomorrow.id or 0, zone=ZONE, now=later, days=options.days,
                            account_name="Example MSP")
        smart_s = time.perf_counter() - start
        everyone = sorted({i.customer for i in tomorrow.items})
        touched = builder._touched
        builder._touched = lambda *a, **k: everyone
        try:
            start = time.perf_counter()
            naive = site.update(view, copy, tomorrow.id or 0, zone=ZONE, now=later, days=options.days,
                                account_name="Example MSP")
            naive_s = time.perf_counter() - start
        finally:
            builder._touched = touched
        changed = sum(1 for i in tomorrow.items if i.outcome != "unchanged")
        rows.append(Row("4. update after one run (touched customers)", "-", f"{smart_s:.2f} s", None,
                        [f"{len(smart)} files written ({changed} of {len(tomorrow.items):,} lines not unchanged)",
                         f"rewriting every customer of the run instead: {naive_s:.2f} s, {len(naive):,} files "
                         f"(bytes changed)"]))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    header = (f"psabill history site, {platform.python_implementation()} {platform.python_version()}, "
              f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; peak RSS {rss:,.0f} MB (the ledger held in memory)")
    print_table(rows, header, options.markdown)
    return 0 if all(row.ok is not False for row in rows) else 1


def print_table(rows: List[Row], header: str, markdown: Optional[str]) -> None:
    if markdown is not None:
        lines = [f"_{header}_", "", "| figure | target | measured | verdict | notes |", "|---|---|---|---|---|"]
        lines += [f"| {r.figure} | {r.target} | {r.measured} | {r.verdict} | {'; '.join(r.notes)} |" for r in rows]
        text = "\n".join(lines) + "\n"
        if markdown == "-":
            print(text)
        else:
            Path(markdown).write_text(text)
        return
    print(header)
    width = max(len(r.figure) for r in rows)
    for r in rows:
        print(f"{r.figure:<{width}}  {r.target:>6}  {r.measured:<22}  {r.verdict}")
        for note in r.notes:
            print(f"{'':<{width}}    {note}")


if __name__ == "__main__":
    sys.exit(main())
