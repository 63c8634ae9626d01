#!/usr/bin/env python3
"""LastPass source at scale (issue 21): one command, outside the test suite.

    python benchmarks/lastpass_bench.py                  # 2,000 companies x 20 users, 50 ms latency
    python benchmarks/lastpass_bench.py --markdown       # the same table as Markdown
    python benchmarks/lastpass_bench.py --companies 500 --users 1200 --latency 20

The LastPass stand-in (psabill.sandbox.lastpass) runs on loopback in a child
process (``--in-process``: in this one), as the real API runs outside
psabill's process: in one process the two would share one interpreter lock.
Every answer leaves ``--latency`` ms after its request arrived, the
stand-in's own work included. The real reader (``[source] kind =
"lastpass"``) reads it in this process through psabill's HttpClient, as a
run would.

Targets:

1. ``requests``  the read makes the minimum number of requests: pages of 500
                 companies, plus pages of 500 users per company.
2. ``wall``      the read's wall time is within 1.25 x requests x latency /
                 concurrency (8 in flight).
3. ``in flight`` never more than 8 requests at once.
4. ``rows``      one row per company, with every user counted.

Exit status 1 when a target fails.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))  # this worktree's psabill, whatever is installed

from run import Row, machine, table  # noqa: E402 - benchmarks/run.py, beside this script

WALL_SLACK = 1.25


def _standin(companies: int, users: int, latency_ms: float) -> Any:
    from psabill.sandbox.lastpass import LastPassStandin

    lp = LastPassStandin(latency_ms=latency_ms)
    for n in range(1, companies + 1):
        cid = lp.add_company(f"Customer {n:05d} Ltd", addons=["mfa"] if n % 3 == 0 else [])
        lp.add_users(cid, users)
    return lp.start()


def _figures(lp: Any) -> Tuple[int, int, List[int]]:
    return lp.total, max(lp.max_inflight.values()), sorted({r.status for r in lp.requests})


def _child(conn: Any, companies: int, users: int, latency_ms: float) -> None:
    lp = _standin(companies, users, latency_ms)
    conn.send((lp.config_section(), lp.api_key))
    conn.recv()  # the read is done
    conn.send(_figures(lp))
    lp.stop()


def bench(companies: int, users: int, latency_ms: float, in_process: bool = False) -> List[Row]:
    from psabill.config.settings import from_document
    from psabill.sources import lastpass, reader

    concurrency = lastpass.CONCURRENCY
    page = lastpass.PAGE_SIZE
    print(f"building {companies:,} companies x {users:,} users ...", file=sys.stderr)
    if in_process:
        lp = _standin(companies, users, latency_ms)
        section, key_text = lp.config_section(), lp.api_key
    else:
        context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods()
                                              else "spawn")
        conn, theirs = context.Pipe()
        child = context.Process(target=_child, args=(theirs, companies, users, latency_ms), daemon=True)
        child.start()
        section, key_text = conn.recv()
    try:
        with tempfile.TemporaryDirectory(prefix="psabill-lastpass-bench-") as temp:
            conf = Path(temp)
            key = conf / "lastpass-api-key"
            key.write_text(key_text + "\n")
            os.chmod(key, 0o600)
            settings = from_document(conf / "config.toml", {
                "source": {**section, "api_key_file": key.name},
                "products": {"LastPass": "SEATS-STD", "LastPass+MFA": "SEATS-MFA"}})
            read = reader("lastpass")
            print(f"reading at {latency_ms:g} ms ...", file=sys.stderr)
            started = time.perf_counter()
            usage = read(settings.source, set(settings.product_map), settings.path)
            wall = time.perf_counter() - started
    finally:
        if in_process:
            requests, peak, statuses = _figures(lp)
            lp.stop()
        else:
            conn.send("done")
            requests, peak, statuses = conn.recv()
            child.join(10)

    minimum = math.ceil(companies / page) + companies * max(1, math.ceil(users / page))
    ideal = requests * latency_ms / 1000.0 / concurrency
    limit = WALL_SLACK * ideal
    seats = sum(row.seats for row in usage.rows)
    where = "this process" if in_process else "a child process"
    return [
        Row("requests", f"= {minimum:,} (pages of {page})", f"{requests:,}", requests == minimum,
            [f"answers {statuses}"]),
        Row("wall", f"<= {limit:.2f} s ({WALL_SLACK} x requests x {latency_ms:g} ms / {concurrency})",
            f"{wall:.2f} s", wall <= limit,
            [f"{wall / ideal:.2f} x requests x latency / concurrency ({ideal:.2f} s); stand-in in {where}"]),
        Row("in flight", f"<= {concurrency}", str(peak), peak <= concurrency),
        Row("rows", f"{companies:,} rows, {companies * users:,} seats", f"{len(usage.rows):,} rows, {seats:,} seats",
            len(usage.rows) == companies and seats == companies * users, [usage.note]),
    ]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--companies", type=int, default=2000, help="managed companies (default 2000)")
    parser.add_argument("--users", type=int, default=20, help="users per company (default 20)")
    parser.add_argument("--latency", type=float, default=50.0, help="stand-in latency in ms (default 50)")
    parser.add_argument("--in-process", action="store_true", help="run the stand-in in this process")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    args = parser.parse_args(argv)
    print(f"psabill LastPass benchmark: {machine()}", file=sys.stderr)
    rows = bench(args.companies, args.users, args.latency, args.in_process)
    print(f"\nMachine: {machine()}\n")
    print(table(rows, markdown=args.markdown))
    return 0 if all(r.ok is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
