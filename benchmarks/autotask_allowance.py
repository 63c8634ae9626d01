#!/usr/bin/env python3
"""A 10,000-change Autotask tenant, finished across hourly firings within the shared allowance (issue 26, point 4).

    python benchmarks/autotask_allowance.py                       # 10,000 services, others use 0 and 2,000
    python benchmarks/autotask_allowance.py --services 4000 --others 1000 --latency 0

Autotask allows 10,000 requests an hour per database, every integration together
(ThresholdInformation's ``externalRequestThreshold``), and a run may take the
database to ``[psa] budget_share`` (0.5) of it. The Autotask stand-in holds
``--services`` contract services (one per customer), each to change; it counts
"other integrations" as ``--others`` requests in every hour's
``currentTimeframeRequestCount``. Cron's hourly firings are ``psabill run
--scheduled`` in a child with ``PSABILL_NOW`` at 09:00:30, 10:00:30, ... UTC
(a daily 09:00 schedule, catch-up 24 h); between two firings the hour's
count falls back to the others' usage, as a new hour's would.

The minimum: first the same book is run once with an allowance too large to
matter, which gives the requests a whole run needs (R). A run may spend
``share × threshold - others`` an hour, so no scheduler can finish in fewer
than ``ceil(R / (share × threshold - others))`` firings (and each firing also
spends a few requests re-reading before it writes). Reported: the firings
taken against that minimum, the requests of each firing, the database's
count at its end against the cap, each firing's wall time (at ``--latency``
ms per request, 3 requests in flight, Autotask's thread limit), and whether
every service ended at its target, adjusted exactly once.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Tuple

import tomli_w

THRESHOLD = 10_000
SHARE = 0.5
TODAY = date(2026, 12, 1)
SAVED = datetime(2026, 11, 20, tzinfo=timezone.utc)
SECRET_ENV = "PSABILL_BENCH_AT_SECRET"


def book(st: Any, services: int) -> Dict[int, int]:
    """``services`` customers with one service each, every one to change: csid -> target."""
    targets = {}
    for n in range(1, services + 1):
        contract = st.add_contract(st.add_company(f"Customer {n:05d} Ltd", f"CUST{n:05d}"))
        old = 10 + n % 190
        targets[st.add_service(contract, 301, old)] = old + (1, 2, 5)[n % 3]
    return targets


def firing(home: Path, psabill: Path, st: Any, now: str) -> Tuple[int, float, str]:
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PSABILL_CONFIG": str(home / "config.toml"),
           "PSABILL_STATE_DIR": str(home / "state"), "PSABILL_CRONTAB": str(home / "crontab"),
           "PSABILL_HOST_TZ": "UTC", "PSABILL_NOW": now, SECRET_ENV: st.secret}
    t0 = time.perf_counter()
    proc = subprocess.run([str(psabill), "run", "--scheduled"], env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True)
    return proc.returncode, time.perf_counter() - t0, (proc.stdout + proc.stderr).strip()


def tenant(root: Path, psabill: Path, services: int, others: int, threshold: int, latency: float,
           max_firings: int) -> Dict[str, Any]:
    from psabill.sandbox.autotask import AutotaskStandin

    home = root / f"t{threshold}-{others}"
    (home / "state").mkdir(parents=True)
    st = AutotaskStandin(today=TODAY, latency_ms=latency, threshold=threshold, used_this_hour=others)
    targets = book(st, services)
    with (home / "usage.csv").open("w") as fh:
        fh.write("customer,sku,seats\n")
        fh.writelines(f"Customer {n:05d} Ltd,LastPass,{target}\n" for n, target in enumerate(targets.values(), 1))
    firings: List[Dict[str, Any]] = []
    with st:
        (home / "config.toml").write_text(tomli_w.dumps({
            "version": 1,
            "account": {"name": "Bench MSP", "timezone": "UTC"},
            "schedule": {"mode": "daily", "hour": 9, "saved_at": SAVED},
            "source": {"kind": "csv", "path": "usage.csv"},
            "products": {"LastPass": "301"},
            "psa": {"kind": "autotask", "url": st.url + "/ATServicesRest/", "username": st.username,
                    "integration_code": st.integration_code, "secret_env": SECRET_ENV, "budget_share": SHARE},
            # Every line changes by design here: the allowance is what is measured, not the guard.
            "guard": {"enabled": False},
            "notify": {"transport": "file", "file": {"dir": str(home / "outbox")}, "from": "psabill@msp.example"},
        }))
        for hour in range(max_firings):
            before = st.total
            st.used_this_hour = others - before  # a new hour: the count holds only the others' requests
            code, wall, output = firing(home, psabill, st, f"2026-12-01T{9 + hour:02d}:00:30Z")
            firings.append({"exit": code, "wall": wall, "requests": st.total - before,
                            "database": st.used_this_hour + st.total, "output": output.splitlines()[-1:]})
            if code == 0:
                break
        done = sum(st.units(csid, TODAY) == target for csid, target in targets.items())
        adjusted: Dict[int, int] = {}
        for adjustment in st.adjustments:
            csid = adjustment["contractServiceID"]
            adjusted[csid] = adjusted.get(csid, 0) + 1
    return {"firings": firings, "done": done, "services": services, "adjustments": len(st.adjustments),
            "twice": sum(n > 1 for n in adjusted.values())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--others", type=int, action="append", help="other integrations' requests an hour "
                        "(repeatable; default 0 and 2000)")
    parser.add_argument("--latency", type=float, default=20.0, help="ms per request (default 20)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    others_list = args.others or [0, 2_000]
    psabill = Path(sys.executable).with_name("psabill")
    results: Dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="psabill-at-allowance-") as tmp:
        root = Path(tmp)
        whole = tenant(root, psabill, args.services, 0, 10 ** 9, 0.0, 1)  # R: one run, no allowance in the way
        needed = whole["firings"][0]["requests"]
        results["needed"] = needed
        print(f"{args.services:,} services to change: one run with no allowance in the way sends {needed:,} "
              f"requests (exit {whole['firings'][0]['exit']}, {whole['done']:,} at target)")
        if whole["firings"][0]["exit"] != 0:
            print("  " + "\n  ".join(whole["firings"][0]["output"]))
            return 1
        for others in others_list:
            per_hour = int(THRESHOLD * SHARE) - others
            minimum = math.ceil(needed / per_hour)
            got = tenant(root, psabill, args.services, others, THRESHOLD, args.latency, minimum + 4)
            results[f"others={others}"] = {**got, "minimum": minimum, "per_hour": per_hour}
            print(f"\nothers use {others:,} of {THRESHOLD:,} an hour; the run may take the database to "
                  f"{int(THRESHOLD * SHARE):,} ({per_hour:,} for psabill); minimum ceil({needed:,} / {per_hour:,}) "
                  f"= {minimum} firings")
            for n, f in enumerate(got["firings"]):
                print(f"  {9 + n:02d}:00 firing: exit {f['exit']}, {f['requests']:,} requests, database at "
                      f"{f['database']:,} / cap {int(THRESHOLD * SHARE):,}, wall {f['wall']:.1f} s"
                      + (f" ({f['output'][0][:200]})" if f["exit"] != 0 and f["output"] else ""))
            taken = len(got["firings"])
            ok = got["firings"][-1]["exit"] == 0 and got["done"] == args.services and got["twice"] == 0
            print(f"  finished in {taken} firing(s) (minimum {minimum}): {got['done']:,}/{args.services:,} at "
                  f"target, {got['adjustments']:,} adjustments, {got['twice']} service(s) adjusted twice; "
                  f"{'pass' if ok and taken == minimum else 'FAIL'}")
            over = [f["database"] for f in got["firings"] if f["database"] > THRESHOLD * SHARE]
            if over:
                print(f"  the database passed its share: {over}")
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    os.umask(0o077)
    sys.exit(main())
