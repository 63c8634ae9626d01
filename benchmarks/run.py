#!/usr/bin/env python3
"""psabill performance harness (issue 6): one command, outside the test suite.

    python benchmarks/run.py                 # all figures, text table
    python benchmarks/run.py --markdown      # the same table as Markdown
    python benchmarks/run.py --markdown out.md --runs 21 --only cron,status

Figures (targets as the README table states them):

1. ``cron``      ``psabill run --scheduled`` when nothing is due, started the way
                 cron starts it (absolute path of the console script next to
                 ``sys.executable``), vs ``python -c "import click"``; interleaved.
2. ``status``    ``psabill status --json`` (crontab *file*) vs the same baseline.
3. ``imports``   neither path imports httpx or jinja2; the not-due path does not
                 import python-crontab either (also asserted by tests/test_imports.py).
4. ``schedule``  100,000 occurrences (daily, monthly; a DST zone) and the worst
                 ``cronplan.plan`` over ~50 schedule/zone pairs.
5. ``refresh``   a 5,000 customer x 2 SKU book on the ConnectWise sandbox with
                 20 ms latency, ~half the quantities changed, through the real CLI
                 (``psabill run --yes --json``): API calls vs the minimum, wall time
                 vs calls x latency / concurrency, peak RSS. Plus Autotask against
                 the Autotask sandbox (psabill.sandbox.autotask).

Every subprocess gets temp PSABILL_CONFIG / PSABILL_STATE_DIR / PSABILL_CRONTAB,
so nothing outside a temp dir is touched. The whole run takes a few minutes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
TESTS = ROOT / "tests"
BIN = Path(sys.executable).parent
PSABILL = BIN / "psabill"

# The not-due instant: the Tuesday 09:00 America/New_York occurrence of
# 2025-01-07 (14:00 UTC) has run; "now" is 10 h later, still inside the 24 h
# catch-up window, so the guard has to load the schedule *and* ask the state db.
SAVED_AT = "2025-01-01T00:00:00Z"
RAN_AT = "2025-01-07T14:00:30Z"
NOT_DUE = "2025-01-08T00:00:00Z"



# -- results -------------------------------------------------------------------


@dataclass
class Row:
    figure: str
    target: str
    measured: str
    ok: Optional[bool]  # None: not measured
    notes: List[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        return "not measured" if self.ok is None else ("pass" if self.ok else "FAIL")


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def spread(values: Sequence[float], unit: Callable[[float], str] = fmt_ms) -> str:
    return f"{unit(statistics.median(values))} ({unit(min(values))}–{unit(max(values))})"


# -- the temp psabill home -------------------------------------------------------


class Home:
    """A throwaway config, state dir and crontab file, with one past run."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.config = root / "config.toml"
        self.state = root / "state"
        self.crontab = root / "crontab"
        # What cron gives a job (Debian: HOME, LOGNAME, PATH, SHELL), plus the
        # locale. Notably *not* PYTHONDONTWRITEBYTECODE: a cron job writes and
        # reuses .pyc files, so the warm-up runs below leave them in place.
        self.env = {"HOME": os.environ.get("HOME", "/root"), "LOGNAME": os.environ.get("LOGNAME", "root"),
                    "PATH": "/usr/bin:/bin", "SHELL": "/bin/sh"}
        for key in ("LANG", "LC_ALL", "TZ"):
            if key in os.environ:
                self.env[key] = os.environ[key]
        self.env.update(
            PSABILL_CONFIG=str(self.config),
            PSABILL_STATE_DIR=str(self.state),
            PSABILL_CRONTAB=str(self.crontab),
        )

    def psabill(self, *args: str, now: Optional[str] = None, check: bool = True,
                extra_env: Optional[Dict[str, str]] = None, timeout: float = 600) -> subprocess.CompletedProcess:
        env = dict(self.env)
        if now:
            env["PSABILL_NOW"] = now
        if extra_env:
            env.update(extra_env)
        proc = subprocess.run([str(PSABILL), *args], env=env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"psabill {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def setup(self, *when: str) -> None:
        """A schedule (``--weekly tue`` by default) at 09:00 New York, one past run, a crontab file."""
        self.psabill("schedule", "set", *(when or ("--weekly", "tue")), "--hour", "9", "--timezone",
                     "America/New_York", "--account-name", "Bench MSP", "--no-cron", now=SAVED_AT)
        # A config a run accepts: an empty usage source, so the past run below needs no PSA request.
        (self.root / "usage.csv").write_text("customer,sku,seats\n")
        os.chmod(self.root / "usage.csv", 0o600)
        os.utime(self.root / "usage.csv", (1_000_000_000, 1_000_000_000))  # written long ago: read at once
        (self.root / "psa-key").write_text("not-a-real-key\n")
        os.chmod(self.root / "psa-key", 0o600)
        with self.config.open("a") as handle:
            handle.write('\n[source]\nkind = "csv"\npath = "usage.csv"\n\n[products]\nLastPass = "SEATS-STD"\n\n'
                         '[psa]\nkind = "connectwise"\nurl = "https://psa.invalid"\ncompany = "msp"\n'
                         'public_key = "pub"\nclient_id = "client"\nprivate_key_file = "psa-key"\n')
        # One real past run: the occurrence of 2025-01-07 09:00 New York (a Tuesday, and the 7th), run by cron.
        # Its source is empty, so it ends "unmapped" (exit 1): recorded, and its occurrence done.
        past = self.psabill("run", "--scheduled", now=RAN_AT, check=False)
        if past.returncode not in (0, 1):
            raise RuntimeError(f"the past run exited {past.returncode}:\n{past.stdout}\n{past.stderr}")
        self.psabill("cron", "install", now=NOT_DUE)
        if not (self.state / "state.db").is_file():
            raise RuntimeError("the past run left no state.db")
        if not self.crontab.is_file():
            raise RuntimeError("cron install wrote no crontab file")

    def cron_argv(self) -> List[str]:
        """The argv cron would run (what `cron install` wrote, minus the comment)."""
        for line in self.crontab.read_text().splitlines():
            if line.startswith("@reboot") or not line.strip() or line.startswith("#"):
                continue
            fields = line.split("#", 1)[0].split()
            return fields[5:]
        raise RuntimeError("no schedule line in the crontab file")


# -- figures 1 and 2: startup ratios ----------------------------------------------


def timed(argv: Sequence[str], env: Dict[str, str]) -> Tuple[float, float]:
    """Wall time and CPU time (user + sys) of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(list(argv), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.decode(errors='replace')}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu


def startup(home: Home, monthly: Home, runs: int, want: Sequence[str]) -> List[Row]:
    env = dict(home.env, PSABILL_NOW=NOT_DUE)
    cron_cmd, monthly_cmd = home.cron_argv(), monthly.cron_argv()
    for argv in (cron_cmd, monthly_cmd):
        if Path(argv[0]) != PSABILL:
            raise RuntimeError(f"crontab runs {argv[0]}, expected {PSABILL}")
        probe = subprocess.run(argv, env=env, capture_output=True, text=True)
        if probe.returncode != 0 or probe.stdout or probe.stderr:
            raise RuntimeError(f"the not-due run is not silent: rc={probe.returncode} {probe.stdout!r} "
                               f"{probe.stderr!r}")
    commands: Dict[str, List[str]] = {
        "click": [sys.executable, "-c", "import click"],
        "bare": [sys.executable, "-c", "pass"],
    }
    if "cron" in want:
        commands["cron"] = cron_cmd
        commands["cron-monthly"] = monthly_cmd  # the --config/--state-dir on its line point at its own home
    if "status" in want:
        commands["status"] = [str(PSABILL), "status", "--json"]
    for argv in commands.values():  # warm the page cache and .pyc files
        timed(argv, env)
        timed(argv, env)
    samples: Dict[str, List[float]] = {k: [] for k in commands}
    cpu: Dict[str, List[float]] = {k: [] for k in commands}
    for _ in range(runs):  # interleaved: each round runs every command once
        for name, argv in commands.items():
            wall, used = timed(argv, env)
            samples[name].append(wall)
            cpu[name].append(used)
    base = samples["click"]
    rows = []
    for name, target, label in (("cron", 1.3, "1. cron path: `run --scheduled`, nothing due (weekly)"),
                                ("cron-monthly", 1.3, "1b. cron path, nothing due (monthly on the 7th)"),
                                ("status", 2.0, "2. `status --json` (crontab file)")):
        if name not in samples:
            continue
        ratios = [a / b for a, b in zip(samples[name], base)]
        ratio = statistics.median(samples[name]) / statistics.median(base)
        rows.append(Row(
            label, f"≤ {target}× `python -c \"import click\"`",
            f"{ratio:.2f}× (paired {min(ratios):.2f}–{max(ratios):.2f}); psabill {spread(samples[name])}, "
            f"click {spread(base)}; n={runs}",
            ratio <= target,
            [f"CPU time (user+sys, less sensitive to other load): psabill {spread(cpu[name])}, click "
             f"{spread(cpu['click'])} = {statistics.median(cpu[name]) / statistics.median(cpu['click']):.2f}×"],
        ))
    rows[0].notes.append(f"interpreter startup alone (`python -c pass`): {spread(samples['bare'])}")
    return rows


# -- figure 3: forbidden imports ------------------------------------------------------

def imports(home: Home) -> List[Row]:
    """Figure 3 is exactly what tests/test_imports.py asserts, so it runs that test file."""
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(TESTS / "test_imports.py")],
                          capture_output=True, text=True, cwd=str(home.root))
    summary = (proc.stdout.strip().splitlines() or ["no output"])[-1]
    return [Row("3. cron path and `status --json` imports", "tests/test_imports.py passes", summary,
                proc.returncode == 0)]


# -- figure 4: the schedule core ---------------------------------------------------------


def schedule_core(repeats: int) -> List[Row]:
    from itertools import islice
    from zoneinfo import ZoneInfo

    from psabill.schedule import cronplan as cronexpr
    from psabill.schedule.rules import Schedule

    ny = ZoneInfo("America/New_York")
    rows = []
    cases = (
        ("daily 02:00", Schedule(mode="daily", hour=2, zone=ny), dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)),
        # 100,000 months is 8,333 years: start early enough to stay below year 9999.
        ("monthly day 31 02:00", Schedule(mode="monthly", hour=2, zone=ny, day=31),
         dt.datetime(1200, 1, 1, tzinfo=dt.timezone.utc)),
    )
    for name, schedule, start in cases:
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            n = sum(1 for _ in islice(schedule.occurrences(start), 100_000))
            times.append(time.perf_counter() - t0)
            assert n == 100_000, n
        rows.append(Row(f"4a. 100,000 occurrences, {name} America/New_York", "≤ 500 ms",
                        f"{spread(times)}; n={repeats}", statistics.median(times) <= 0.5))

    zones = ["Australia/Lord_Howe", "Asia/Kathmandu", "America/Santiago", "America/New_York", "Europe/London", "UTC"]
    pairs = [  # (account, host): every zone against a DST-heavy host and itself
        ("America/New_York", "Europe/London"), ("Europe/London", "America/New_York"),
        ("Australia/Lord_Howe", "America/New_York"), ("America/New_York", "Australia/Lord_Howe"),
        ("Asia/Kathmandu", "America/Santiago"), ("America/Santiago", "Asia/Kathmandu"),
        ("Australia/Lord_Howe", "America/Santiago"), ("America/Santiago", "Europe/London"),
        ("Australia/Lord_Howe", "Australia/Lord_Howe"), ("America/Santiago", "UTC"),
    ]
    assert {z for p in pairs for z in p} == set(zones)
    schedules = [
        dict(mode="daily", hour=2), dict(mode="daily", hour=1),
        dict(mode="weekly", hour=2, weekday=6),
        dict(mode="monthly", hour=0, day=31), dict(mode="monthly", hour=23, day="last"),
    ]
    now = dt.datetime(2025, 3, 1, tzinfo=dt.timezone.utc)
    per_pair: List[Tuple[float, str]] = []
    for account, host in pairs:
        for spec in schedules:
            schedule = Schedule(zone=ZoneInfo(account), **spec)  # type: ignore[arg-type]
            host_zone = ZoneInfo(host)
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                cronexpr.plan(schedule, host_zone, now)
                times.append(time.perf_counter() - t0)
            per_pair.append((statistics.median(times), f"{spec['mode']} {spec['hour']}h {account} on {host}"))
    worst, worst_name = max(per_pair)
    values = [t for t, _ in per_pair]
    rows.append(Row(f"4b. `cronplan.plan`, worst of {len(per_pair)} schedule/zone pairs", "≤ 50 ms each",
                    f"worst {fmt_ms(worst)} ({worst_name}); all pairs {spread(values)}", worst <= 0.05))
    return rows


# -- figure 5: refresh at scale ------------------------------------------------------------------

REFRESH_CHILD = ROOT / "benchmarks" / "refresh_child.py"


def refresh(home_root: Path, want: Sequence[str]) -> List[Row]:
    missing = [p for p in ("src/psabill/run/engine.py", "src/psabill/sandbox/connectwise.py", "src/psabill/psa/base.py")
               if not (ROOT / p).is_file()]
    label = "5. refresh, ConnectWise sandbox, 5,000 customers × 2 SKUs, 20 ms latency"
    if missing:
        return [Row(label, "calls ≤ 1.01 × min; wall ≤ 1.25 × calls×20 ms÷concurrency; RSS ≤ 150 MB",
                    "not measured", None, [f"not ready: {', '.join(missing)} missing"])]
    import refresh_bench  # benchmarks/refresh_bench.py, beside this script

    return refresh_bench.run(home_root, PSABILL, want, Row)


# -- output ------------------------------------------------------------------------------------


def machine() -> str:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"{dt.datetime.now().astimezone().isoformat(timespec='seconds')}; {platform.node()}; "
            f"nproc {os.cpu_count()}; load {load}; Python {platform.python_version()} ({sys.executable}); "
            f"{platform.platform()}")


def table(rows: List[Row], markdown: bool) -> str:
    head = ("figure", "target", "measured (median, min–max)", "result")
    body = [(r.figure, r.target, r.measured, r.verdict) for r in rows]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in body]
    else:
        widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
        widths[2] = min(widths[2], 200)
        lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths)), "  ".join("-" * w for w in widths)]
        lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in body]
    notes = [f"{r.figure.split()[0]} {n}" for r in rows for n in r.notes]
    if notes:
        lines.append("")
        lines += [("- " if markdown else "  ") + n for n in notes]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=21, help="subprocess runs per command for figures 1-2 (>= 15)")
    parser.add_argument("--repeats", type=int, default=5, help="repeats of the in-process figure 4 timings")
    parser.add_argument("--only", default="cron,status,imports,schedule,refresh,autotask",
                        help="comma-separated subset of: cron,status,imports,schedule,refresh,autotask")
    parser.add_argument("--markdown", nargs="?", const="-", metavar="FILE",
                        help="print the table as Markdown (to FILE when given, else stdout)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = parser.parse_args(argv)
    if args.runs < 15:
        parser.error("--runs must be at least 15")
    want = {w.strip() for w in args.only.split(",") if w.strip()}
    if not PSABILL.is_file():
        parser.error(f"{PSABILL} not found: install psabill into this interpreter (pip install -e .)")

    print(f"psabill benchmarks: {machine()}", file=sys.stderr)
    root = Path(tempfile.mkdtemp(prefix="psabill-bench-"))
    rows: List[Row] = []
    started = time.perf_counter()
    try:
        home = Home(root / "home")
        home.root.mkdir()
        home.setup()
        monthly = Home(root / "monthly")
        monthly.root.mkdir()
        if want & {"cron", "status"}:
            monthly.setup("--monthly", "7")
        if want & {"cron", "status"}:
            print("figures 1-2: startup ratios ...", file=sys.stderr)
            rows += startup(home, monthly, args.runs, sorted(want & {"cron", "status"}))
        if "imports" in want:
            print("figure 3: imports ...", file=sys.stderr)
            rows += imports(home)
        if "schedule" in want:
            print("figure 4: schedule core ...", file=sys.stderr)
            rows += schedule_core(args.repeats)
        if want & {"refresh", "autotask"}:
            print("figure 5: refresh at scale ...", file=sys.stderr)
            rows += refresh(root, sorted(want & {"refresh", "autotask"}))
    finally:
        if args.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    elapsed = time.perf_counter() - started
    header = f"Machine: {machine()}\nHarness wall time: {elapsed:.0f} s\n"
    print()
    print(header)
    print(table(rows, markdown=False))
    if args.markdown:
        md = "## psabill performance\n\n" + header.replace("\n", "  \n") + "\n" + table(rows, markdown=True) + "\n"
        if args.markdown == "-":
            print()
            print(md)
        else:
            Path(args.markdown).write_text(md)
            print(f"\nMarkdown written to {args.markdown}", file=sys.stderr)
    return 0 if all(r.ok is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
