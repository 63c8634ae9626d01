#!/usr/bin/env python3
"""What a PostgreSQL ledger costs a 5,000-customer run, against SQLite (issue 26, point 5).

    python benchmarks/ledger_bench.py                   # 5,000 customers, RTT 0 and 2 ms
    python benchmarks/ledger_bench.py --customers 2000 --rtt 5
    python benchmarks/ledger_bench.py --head            # also the committed code (git HEAD), for a before/after

The ConnectWise sandbox (``Sandbox.sample(customers=N)``, two SKUs a customer, 0 ms PSA latency, about a
third of the lines changed) runs in this process; ``psabill run --scheduled`` (the cron path: plan,
guard, writes, report email to a file, history site) runs in a child against:

* SQLite in the state dir;
* PostgreSQL over its Unix socket (a throwaway cluster, as the tests start one);
* the same PostgreSQL through a loopback TCP proxy that delivers what the client sends ``--rtt`` ms
  late: a remote ledger. Only a wait for an answer costs the run a round trip (a pipelined batch is
  one). The proxy counts the round trips: each time the client speaks after the server did; and
  ``(wall at RTT - wall at 0) / RTT`` estimates them from the time they cost.

Also reported: the transactions the run committed (``pg_stat_database.xact_commit``), and its rows
written. Each configuration runs ``--repeat`` times on a fresh book and ledger; the median is shown.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "tests"))

import memory_bench as mb  # noqa: E402 - beside this script: the book, the config and the cron run

KEY_ENV = "PSABILL_BENCH_CW_KEY"


class Proxy:
    """TCP on 127.0.0.1 to a PostgreSQL Unix socket; what the client sends arrives ``rtt`` seconds later.

    Latency, not bandwidth: each chunk is forwarded ``rtt`` after it arrived, so chunks sent back to back
    (a pipeline) travel together, and only a wait for an answer costs a round trip.
    """

    def __init__(self, socket_path: str, rtt: float) -> None:
        self.socket_path = socket_path
        self.rtt = rtt
        self.chunks = 0
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(64)
        self.port = self.server.getsockname()[1]
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self.socket_path)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            turn = ["server"]  # who spoke last on this connection
            for source, sink, delay in ((client, upstream, self.rtt), (upstream, client, 0.0)):
                threading.Thread(target=self._pump, args=(source, sink, delay, turn), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, delay: float, turn: List[str]) -> None:
        import queue

        pending: "queue.Queue[Optional[Tuple[float, bytes]]]" = queue.Queue()

        def deliver() -> None:
            while True:
                entry = pending.get()
                if entry is None:
                    break
                due, data = entry
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                try:
                    sink.sendall(data)
                except OSError:
                    break
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        threading.Thread(target=deliver, daemon=True).start()
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if delay:  # the client speaks: a new round trip if the server spoke last
                    if turn[0] != "client":
                        self.chunks += 1
                        turn[0] = "client"
                else:
                    turn[0] = "server"
                pending.put((time.monotonic() + delay, data))
        except OSError:
            pass
        finally:
            pending.put(None)

    def close(self) -> None:
        self._stop = True
        self.server.close()


def commits(admin_url: str) -> int:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_force_next_flush()")
        return int(conn.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
                   .fetchone()[0])


def one(root: Path, label: str, customers: int, url: Optional[str], admin: Optional[str],
        pythonpath: Optional[str], proxy: Optional[Proxy], site: bool) -> Dict[str, Any]:
    home = root / f"{label}-{time.monotonic_ns()}"
    (home / "state").mkdir(parents=True)
    sb, rows, changed = mb.book(home, customers)
    mb.prepare(home, sb, KEY_ENV, url)
    extra = {KEY_ENV: sb.private_key}
    if pythonpath:
        extra["PYTHONPATH"] = pythonpath
    before = commits(admin) if admin else 0
    chunks = proxy.chunks if proxy else 0
    with sb:
        code, wall, rss, err = mb.cron_run(home, extra, site=site)
        patched = len(sb.patches())
    time.sleep(0.3)
    after = commits(admin) if admin else 0
    shutil.rmtree(home, ignore_errors=True)
    if code != 0:
        raise RuntimeError(f"{label}: the run exited {code}: {err.strip().splitlines()[-3:]}")
    return {"wall": wall, "rss": rss, "commits": after - before, "rows": rows, "changed": changed,
            "patched": patched, "chunks": (proxy.chunks - chunks) if proxy else None}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--rtt", type=float, default=2.0, help="the remote ledger's round trip, ms")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--head", action="store_true", help="also measure git HEAD's code (before this change)")
    parser.add_argument("--without-site", action="store_true",
                        help="leave the history site out of the run (its reads are one query per customer)")
    args = parser.parse_args(argv)
    from support.pg import fresh_schema, start_cluster

    root = Path(tempfile.mkdtemp(prefix="psabill-ledger-"))
    cluster = start_cluster()
    codes: List[Tuple[str, Optional[str]]] = [("working tree", None)]
    if args.head:
        head = root / "head"
        head.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", "HEAD", "src", "templates"], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(head)], input=archive.stdout, check=True)
        codes.append(("git HEAD", str(head / "src")))
    results: Dict[Tuple[str, str], List[Dict[str, Any]]] = {}
    try:
        socket_path = str(cluster.socket_dir / ".s.PGSQL.5432")
        proxy = Proxy(socket_path, args.rtt / 1000.0)
        for code_label, pythonpath in codes:
            for _ in range(args.repeat):
                for ledger in ("sqlite", "postgresql", f"postgresql, RTT {args.rtt:g} ms"):
                    print(f"{code_label}: {ledger} ...", file=sys.stderr)
                    if ledger == "sqlite":
                        url = None
                    else:
                        url = fresh_schema(cluster.url)
                        if "RTT" in ledger:
                            url = url.replace(f"host={cluster.url.split('host=')[1].split('&')[0]}",
                                              "host=127.0.0.1").replace("port=5432", f"port={proxy.port}")
                    results.setdefault((code_label, ledger), []).append(
                        one(root, ledger.split(",")[0], args.customers, url, cluster.url if url else None,
                            pythonpath, proxy if url and "RTT" in ledger else None, not args.without_site))
        proxy.close()
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    print(f"\n{args.customers:,} customers x 2 SKUs, ConnectWise sandbox at 0 ms, `psabill run --scheduled`"
          f"{' without the history site' if args.without_site else ''}; median of {args.repeat}\n")
    print("| code | ledger | wall | vs SQLite | ledger transactions | round trips | peak RSS |")
    print("|---|---|---|---|---|---|---|")
    for code_label, _ in codes:
        base = statistics.median(r["wall"] for r in results[(code_label, "sqlite")])
        zero = statistics.median(r["wall"] for r in results[(code_label, "postgresql")])
        for ledger in ("sqlite", "postgresql", f"postgresql, RTT {args.rtt:g} ms"):
            rs = results[(code_label, ledger)]
            wall = statistics.median(r["wall"] for r in rs)
            trips = ""
            if "RTT" in ledger:
                chunks = statistics.median(r["chunks"] for r in rs)
                trips = f"{chunks:,.0f} counted ({(wall - zero) / (args.rtt / 1000):,.0f} from the time)"
            tx = f"{statistics.median(r['commits'] for r in rs):,.0f}" if ledger != "sqlite" else "-"
            print(f"| {code_label} | {ledger} | {wall:.2f} s | {wall / base:.2f}x | {tx} | {trips} | "
                  f"{statistics.median(r['rss'] for r in rs):.0f} MB |")
    first = results[(codes[0][0], "sqlite")][0]
    print(f"\n{first['rows']:,} rows, {first['changed']:,} changed ({first['patched']:,} PATCHes) per run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
