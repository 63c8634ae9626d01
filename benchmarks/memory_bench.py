#!/usr/bin/env python3
"""Peak RSS of a due cron run (``psabill run --scheduled``) at 5,000 and 20,000 customers (issue 26, point 6).

    python benchmarks/memory_bench.py                    # 5k and 20k, SQLite ledger
    python benchmarks/memory_bench.py 5000 20000 50000   # any sizes
    python benchmarks/memory_bench.py --time-v 20000     # also a rerun that changes nothing
    python benchmarks/memory_bench.py --next-day 20000   # also the next day's run (the steady state)
    python benchmarks/memory_bench.py --no-site 20000    # the run without its history site update

The ConnectWise sandbox (``Sandbox.sample(customers=N)``, two SKUs a customer,
0 ms latency) runs in this process on loopback; the run is a child process
started the way cron starts it, for a due daily occurrence, with the guard on
(its defaults), the report email delivered to a file and the history site
updated: everything the cron path does. About a third of the quantities
change. The child's peak RSS is the "Maximum resident set size" of
``/usr/bin/time -v`` (when the host has it; else ``ru_maxrss`` from
``os.wait4``, which on Linux starts from this process's RSS at the spawn, so
it can only overstate). ``--next-day`` runs the next day's occurrence over the
first day's ledger and site, a third of the lines one seat up: the history
site then reads the run before as well.

Targets: at most 150 MB at 20,000 customers; sub-linear beyond it (the
growth from 20k to 50k customers below 2.5x the 5k-20k growth per customer
is not the claim: the claim is MB per 1,000 customers falls as N grows).
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from refresh_bench import _billing_now  # noqa: E402 - beside this script

BIN = Path(sys.executable).parent
PSABILL = BIN / "psabill"
SAVED = "2026-11-26T12:00:00Z"
DUE = "2026-11-27T06:00:00Z"
NEXT_DUE = "2026-11-28T06:00:00Z"  # --next-day: the next day's occurrence, over the first day's ledger and site
LIMIT_MB = 150.0
TIME_V = os.path.exists("/usr/bin/time")


def book(home: Path, customers: int, seed: int = 26) -> Tuple[Any, int, int]:
    """A sandbox of ``customers`` and a usage CSV for it; (sandbox, rows, changed)."""
    from psabill.sandbox.connectwise import Sandbox

    sb = Sandbox.sample(customers=customers, seed=seed)
    rng = random.Random(seed)
    rows: List[Tuple[str, str, int]] = []
    changed = 0
    for aid, agreement in sorted(sb.agreements.items()):
        if agreement["agreementStatus"] != "Active" or agreement["cancelledFlag"]:
            continue
        company = agreement["company"]["identifier"]
        seen = set()
        for addition in sb.additions[aid].values():
            product = addition["product"]["identifier"]
            if not _billing_now(addition) or product in seen:
                continue
            seen.add(product)
            qty = int(addition["quantity"])
            new = qty + rng.choice((1, 2, -1)) if rng.random() < 0.33 else qty
            new = max(new, 1)
            changed += new != qty
            rows.append((company, product, new))
    with (home / "usage.csv").open("w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["customer", "sku", "seats"])
        writer.writerows(rows)
    os.chmod(home / "usage.csv", 0o600)
    os.utime(home / "usage.csv", (1_000_000_000, 1_000_000_000))
    return sb, len(rows), changed


def child_env(home: Path, extra: Dict[str, str]) -> Dict[str, str]:
    return {"HOME": str(home), "PATH": "/usr/bin:/bin", "LANG": os.environ.get("LANG", "C.UTF-8"),
            "PSABILL_CONFIG": str(home / "config.toml"), "PSABILL_STATE_DIR": str(home / "state"),
            "PSABILL_CRONTAB": str(home / "crontab"), "PSABILL_HOST_TZ": "UTC", **extra}


def prepare(home: Path, sb: Any, key_env: str, state_url: Optional[str] = None) -> None:
    """The config: a daily 06:00 UTC schedule (saved the day before), the CSV, the sandbox, a file mailer."""
    import tomli_w  # the test extra: writes the nested [notify.file] table

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    env = child_env(home, {"PSABILL_NOW": SAVED})
    subprocess.run([str(PSABILL), "schedule", "set", "--daily", "--hour", "6", "--timezone", "UTC",
                    "--notify", "billing@msp.example", "--no-cron"], env=env, check=True, capture_output=True)
    data = tomllib.loads((home / "config.toml").read_text())
    data["source"] = {"kind": "csv", "path": "usage.csv"}
    data["products"] = {"SEATS-STD": "SEATS-STD", "SEATS-MFA": "SEATS-MFA"}
    data["psa"] = {**sb.config_section(), "private_key_env": key_env}
    data["notify"].update({"transport": "file", "from": "psabill@msp.example", "file": {"dir": str(home / "outbox")}})
    if state_url:
        data["state"] = {"url": state_url}
    (home / "config.toml").write_text(tomli_w.dumps(data))
    os.chmod(home / "config.toml", 0o600)


WITHOUT_SITE = ("import sys, psabill.notify.site as site\n"
                "site.publish = lambda *args, **kwargs: []  # the run alone: no history site\n"
                "from psabill.cli import cli\n"
                "cli.main(['run', '--scheduled'], prog_name='psabill')\n")


def cron_run(home: Path, env_extra: Dict[str, str], *, time_v: bool = False,
             site: bool = True, due: str = DUE) -> Tuple[int, float, float, str]:
    """One due ``run --scheduled``: (exit code, wall s, peak RSS MB, stderr tail). ``site`` False leaves
    the history site out (to tell the run's own cost from the site's)."""
    env = child_env(home, {"PSABILL_NOW": due, **env_extra})
    argv = [str(PSABILL), "run", "--scheduled"] if site else [sys.executable, "-c", WITHOUT_SITE]
    if time_v:
        argv = ["/usr/bin/time", "-v", *argv]
    err = home / "run.err"
    with err.open("wb") as stderr:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    text = err.read_text(errors="replace")
    rss = usage.ru_maxrss / 1024
    if time_v:
        found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
        rss = int(found.group(1)) / 1024 if found else float("nan")
    return os.waitstatus_to_exitcode(status), wall, rss, text[-1500:]


def next_day_source(home: Path, seed: int = 27) -> None:
    """The next day's counts: a third of the lines one seat up."""
    rng = random.Random(seed)
    with (home / "usage.csv").open(newline="") as fh:
        rows = list(csv.reader(fh))
    for row in rows[1:]:
        if rng.random() < 0.33:
            row[2] = str(int(row[2]) + 1)
    with (home / "usage.csv").open("w", newline="") as fh:
        csv.writer(fh, lineterminator="\n").writerows(rows)
    os.utime(home / "usage.csv", (1_000_000_000, 1_000_000_000))


def measure(customers: int, root: Path, *, time_v: bool = False, state_url: Optional[str] = None,
            site: bool = True, next_day: bool = False) -> Dict[str, Any]:
    home = root / f"n{customers}"
    (home / "state").mkdir(parents=True)
    sb, rows, changed = book(home, customers)
    key_env = "PSABILL_BENCH_CW_KEY"
    prepare(home, sb, key_env, state_url)
    with sb:
        # Under /usr/bin/time -v when there is one (see next_day below for why); else ru_maxrss.
        code, wall, rss, err = cron_run(home, {key_env: sb.private_key}, site=site, time_v=TIME_V)
        patched = len(sb.patches())
        result = {"customers": customers, "rows": rows, "changed": changed, "patched": patched, "exit": code,
                  "wall": wall, "rss": rss, "err": err}
        if next_day:
            # The steady state: the next day's run over this ledger and site (the site then reads the
            # run before too). Under /usr/bin/time -v, whose own image is small: a child's ru_maxrss
            # starts from its parent's RSS at the spawn (vfork), and this process holds the sandbox.
            next_day_source(home)
            code2, wall2, rss2, err2 = cron_run(home, {key_env: sb.private_key}, time_v=True, site=site, due=NEXT_DUE)
            result.update(next_rss=rss2, next_wall=wall2, next_exit=code2)
        if time_v:
            # Again from a fresh state dir (the first run did the work): the same run under /usr/bin/time -v.
            import shutil

            shutil.rmtree(home / "state")
            (home / "state").mkdir()
            # The quantities now equal the source: the run reads everything and writes nothing.
            code2, wall2, rss2, _ = cron_run(home, {key_env: sb.private_key}, time_v=True)
            result.update(time_v_rss=rss2, time_v_exit=code2)
    return result


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[5000, 20000])
    parser.add_argument("--time-v", action="store_true", help="also measure under /usr/bin/time -v")
    parser.add_argument("--no-site", action="store_true", help="the run without its history site update")
    parser.add_argument("--next-day", action="store_true", help="also the next day's run over the first's ledger")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="psabill-mem-"))
    results = []
    try:
        for n in args.sizes:
            print(f"{n:,} customers ...", file=sys.stderr)
            results.append(measure(n, root, time_v=args.time_v, site=not args.no_site, next_day=args.next_day))
    finally:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    print("| customers | rows | changed | PATCHes | exit | wall | peak RSS | MB per 1,000 customers |")
    print("|---|---|---|---|---|---|---|---|")
    ok = True
    for r in results:
        extra = f" (`/usr/bin/time -v`: {r['time_v_rss']:.1f} MB, no changes)" if "time_v_rss" in r else ""
        if "next_rss" in r:
            extra += (f"; the next day's run (`/usr/bin/time -v`): {r['next_rss']:.1f} MB, {r['next_wall']:.1f} s, "
                      f"exit {r['next_exit']}")
        print(f"| {r['customers']:,} | {r['rows']:,} | {r['changed']:,} | {r['patched']:,} | {r['exit']} | "
              f"{r['wall']:.1f} s | {r['rss']:.1f} MB{extra} | {r['rss'] / r['customers'] * 1000:.2f} |")
        if r["exit"] not in (0,):
            ok = False
            print(f"  run exited {r['exit']}: {r['err'].strip().splitlines()[-1] if r['err'].strip() else ''}")
        if r["customers"] == 20000 and max(r["rss"], r.get("next_rss", 0)) > LIMIT_MB:
            ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
