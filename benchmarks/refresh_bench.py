"""Figure 5 of benchmarks/run.py: the refresh at scale, through the real CLI.

The PSA (the ConnectWise sandbox, or the Autotask sandbox) runs in
this process on loopback with 20 ms latency per request (each answer leaves 20 ms
after its request arrived, the sandbox's own work included); ``psabill run --yes
--json`` runs in a child process against a temp config pointing at it. The
child's peak RSS comes from ``os.wait4`` (that child alone), the call count
from the PSA's own request log and from the run report.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Tuple

ROOT = Path(__file__).resolve().parent.parent

LATENCY_MS = 20.0
CUSTOMERS = 5000
RSS_LIMIT_MB = 150.0
CALLS_SLACK = 1.01
WALL_SLACK = 1.25
AT_CALLS_PER_CHANGE = 1.05  # Autotask cost acceptance: requests per changed service, plus a fixed allowance
AT_CALLS_FIXED = 40


def _toml(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    raise TypeError(value)


def write_config(path: Path, sections: Dict[str, Dict[str, Any]]) -> None:
    lines = ["version = 1", ""]
    for name, section in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{json.dumps(k) if not k.replace('_', '').replace('-', '').isalnum() else k} = {_toml(v)}"
                  for k, v in section.items()]
        lines.append("")
    path.write_text("\n".join(lines))
    path.chmod(0o600)


def run_cli(home: Path, psabill: Path, env_extra: Dict[str, str]) -> Tuple[int, float, float, Dict[str, Any], str]:
    """``psabill run --yes --json`` in a child: exit code, wall s, peak RSS MB, report, stderr."""
    env = {"HOME": os.environ.get("HOME", "/root"), "PATH": "/usr/bin:/bin", "LANG": os.environ.get("LANG", "C.UTF-8"),
           "PSABILL_CONFIG": str(home / "config.toml"), "PSABILL_STATE_DIR": str(home / "state"),
           "PSABILL_CRONTAB": str(home / "crontab"), "PSABILL_HOST_TZ": "UTC", **env_extra}
    out, err = home / "run.json", home / "run.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        t0 = time.perf_counter()
        proc = subprocess.Popen([str(psabill), "run", "--yes", "--json"], env=env, stdin=subprocess.DEVNULL,
                                stdout=stdout, stderr=stderr)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
    rss_mb = usage.ru_maxrss / 1024  # Linux: KiB
    text = out.read_text()
    try:
        report = json.loads(text) if text.strip() else {}
    except ValueError:
        report = {}
    return proc.returncode, wall, rss_mb, report, err.read_text()[-2000:]


def _counts(report: Dict[str, Any]) -> str:
    counts = report.get("counts") or {}
    return ", ".join(f"{k} {v}" for k, v in counts.items()) if counts else f"status {report.get('status')}"


def connectwise(root: Path, psabill: Path, Row: Any) -> List[Any]:  # noqa: N803 - the Row class of run.py
    from psabill.sandbox.connectwise import Sandbox

    home = root / "cw"
    (home / "state").mkdir(parents=True)
    sb = Sandbox.sample(customers=CUSTOMERS, seed=6, latency_ms=LATENCY_MS)
    rng = random.Random(6)
    rows: List[Tuple[str, str, int]] = []
    changed = 0
    active = {aid for aid, a in sb.agreements.items() if a["agreementStatus"] == "Active" and not a["cancelledFlag"]}
    for aid in sorted(active):
        company = sb.agreements[aid]["company"]["identifier"]
        for addition in sb.additions[aid].values():
            if not _billing_now(addition):
                continue
            qty = int(addition["quantity"])
            new = qty
            if rng.random() < 0.5:
                new = qty + rng.choice((-3, -2, -1, 1, 2, 5, 10))
                new = new if new >= 0 else qty + 1
            changed += new != qty
            rows.append((company, addition["product"]["identifier"], new))
    with (home / "usage.csv").open("w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["customer", "sku", "seats"])
        writer.writerows(rows)
    key_env = "PSABILL_BENCH_CW_KEY"
    write_config(home / "config.toml", {
        "account": {"name": "Bench MSP", "timezone": "UTC"},
        "source": {"kind": "csv", "path": "usage.csv"},
        "products": {"SEATS-STD": "SEATS-STD", "SEATS-MFA": "SEATS-MFA"},
        "psa": {**sb.config_section(), "private_key_env": key_env},
    })
    # The minimum, from the sandbox's own data: every list paged at 1000, one
    # additions read per active agreement, one PATCH per changed quantity.
    companies_pages = math.ceil(len(sb.companies) / 1000)
    agreements_pages = math.ceil(len(active) / 1000)
    minimum = companies_pages + agreements_pages + len(active) + changed
    concurrency = 8  # [psa] concurrency default (refresh.DEFAULT_CONCURRENCY, ConnectWiseClient)
    ideal = minimum * LATENCY_MS / 1000 / concurrency
    label = (f"5. refresh, ConnectWise sandbox, {CUSTOMERS:,} customers × 2 SKUs ({len(rows):,} rows, "
             f"{changed:,} changed), {LATENCY_MS:.0f} ms latency, `psabill run --yes --json`")
    with sb:
        code, wall, rss, report, stderr = run_cli(home, psabill, {key_env: sb.private_key})
        calls = sb.total
        counts = dict(sb.counts)
        patched = len(sb.patches())
    wrong = sum(1 for aid in active for a in sb.additions[aid].values() if _billing_now(a)
                and int(a["quantity"]) != _target(rows, sb.agreements[aid]["company"]["identifier"],
                                                 a["product"]["identifier"]))
    bound = WALL_SLACK * calls * LATENCY_MS / 1000 / concurrency
    ok_calls = calls <= CALLS_SLACK * minimum
    ok_wall = wall <= bound
    ok_rss = rss <= RSS_LIMIT_MB
    notes = [f"per endpoint: {', '.join(f'{k} {v}' for k, v in sorted(counts.items()))}; "
             f"report says {report.get('api_requests')} API requests; {_counts(report)}; exit {code}",
             f"minimum = {companies_pages} company pages + {agreements_pages} agreement pages + "
             f"{len(active)} additions reads + {changed} PATCHes = {minimum}; ideal wall at concurrency "
             f"{concurrency} = {ideal:.1f} s"]
    if wrong or patched != changed:
        notes.append(f"CORRECTNESS: {wrong} quantities differ from the source after the run; {patched} PATCHes for "
                     f"{changed} changes")
    if code != 0:
        notes.append(f"run exited {code}: {stderr.strip().splitlines()[-1] if stderr.strip() else ''}")
    import plan_bench  # benchmarks/plan_bench.py: figure 5c, the plan stage of this same run

    plan_rows = plan_bench.measure(home, int(report["id"]), wall, Row) if code == 0 and report.get("id") else []
    return [
        Row(label + ": API calls", f"≤ {CALLS_SLACK} × minimum ({minimum:,}) = {CALLS_SLACK * minimum:,.0f}",
            f"{calls:,} ({calls / minimum:.3f} × minimum)", ok_calls and code == 0 and not wrong, notes),
        Row("5. … wall time", f"≤ {WALL_SLACK} × calls × 20 ms ÷ {concurrency} = {bound:.1f} s",
            f"{wall:.1f} s ({wall / (max(calls, 1) * LATENCY_MS / 1000 / concurrency):.2f} × calls × 20 ms ÷ {concurrency})",
            ok_wall and code == 0),
        Row("5. … peak RSS of the `psabill run` process", f"≤ {RSS_LIMIT_MB:.0f} MB", f"{rss:.1f} MB",
            ok_rss and code == 0),
        *plan_rows,
    ]


def _billing_now(addition: Dict[str, Any]) -> bool:
    """The sandbox addition bills today: effective already, not cancelled yet (ConnectWise's rule)."""
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    cancelled = addition.get("cancelledDate")
    return str(addition.get("effectiveDate") or "") <= now and (cancelled is None or str(cancelled) > now)


def _target(rows: List[Tuple[str, str, int]], company: str, product: str) -> int:
    global _INDEX
    if _INDEX is None:
        _INDEX = {(c, p): n for c, p, n in rows}
    return _INDEX[(company, product)]


_INDEX = None  # type: Any


def autotask(root: Path, psabill: Path, Row: Any) -> List[Any]:  # noqa: N803
    try:
        from psabill.sandbox.autotask import AutotaskStandin
    except Exception as exc:  # noqa: BLE001 - report, never crash the harness
        return [Row("5b. refresh, Autotask stand-in", "calls, wall ≤ 1.25 × calls × 20 ms ÷ 3", "not measured", None,
                    [f"the Autotask sandbox is not usable: {exc!r}"])]
    today = datetime.now(timezone.utc).date()
    customers = 1000  # 2,000 lines: the run's default Autotask budget is 5,000 requests
    home = root / "at"
    (home / "state").mkdir(parents=True)
    st = AutotaskStandin(today=today, latency_ms=LATENCY_MS)
    rng = random.Random(7)
    rows: List[Tuple[str, str, int]] = []
    changed = 0
    services = {"SEATS-STD": 301, "SEATS-MFA": 302}
    for n in range(1, customers + 1):
        name = f"Customer {n:05d} Ltd"
        cid = st.add_company(name, f"CUST{n:05d}")
        contract = st.add_contract(cid)
        for sku, sid in services.items():
            qty = rng.randint(1, 200)
            st.add_service(contract, sid, qty)
            new = qty + rng.choice((-1, 1, 2, 5)) if rng.random() < 0.5 else qty
            changed += new != qty
            rows.append((name, sku, new))
    with (home / "usage.csv").open("w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["customer", "sku", "seats"])
        writer.writerows(rows)
    secret_env = "PSABILL_BENCH_AT_SECRET"
    label = (f"5b. refresh, Autotask stand-in, {customers:,} customers × 2 SKUs ({changed:,} changed), "
             f"{LATENCY_MS:.0f} ms latency, `psabill run --yes --json`")
    with st:
        write_config(home / "config.toml", {
            "account": {"name": "Bench MSP", "timezone": "UTC"},
            "source": {"kind": "csv", "path": "usage.csv"},
            "products": {sku: str(sid) for sku, sid in services.items()},
            "psa": {"kind": "autotask", "url": st.url + "/ATServicesRest/", "username": st.username,
                    "integration_code": st.integration_code, "secret_env": secret_env},
        })
        code, wall, rss, report, stderr = run_cli(home, psabill, {secret_env: st.secret})
        calls = st.total
        counts = dict(st.counts)
        max_inflight = dict(st.max_inflight)
    concurrency = 3
    bound = WALL_SLACK * calls * LATENCY_MS / 1000 / concurrency
    allowed = AT_CALLS_PER_CHANGE * changed + AT_CALLS_FIXED
    notes = [f"per endpoint: {', '.join(f'{k} {v}' for k, v in sorted(counts.items()))}; max in flight "
             f"{max(max_inflight.values()) if max_inflight else 0}; report says {report.get('api_requests')} "
             f"API requests; {_counts(report)}; exit {code}; peak RSS {rss:.1f} MB",
             f"reads in bulk, 500 ids a query: Companies, Contracts, ContractServices, ContractServiceUnits "
             f"(bounded to the billing period) and ContractServiceBundles; writes in batches of 500, each with a "
             f"bulk units read before and after; {counts.get('ContractServiceAdjustments', 0)} adjustments for "
             f"{changed} changes",
             f"wall {wall:.1f} s; bound {WALL_SLACK} × calls × 20 ms ÷ {concurrency} = {bound:.1f} s"]
    if code != 0:
        notes.append(f"run exited {code}: {stderr.strip().splitlines()[-1] if stderr.strip() else ''}")
    return [Row(label + ": API calls", f"≤ {AT_CALLS_PER_CHANGE} × changed + {AT_CALLS_FIXED} = {allowed:,.0f}",
                f"{calls:,} calls ({calls / max(changed, 1):.3f} per changed service)",
                code == 0 and calls <= allowed, notes),
            Row("5b. … wall time", f"≤ {WALL_SLACK} × calls × 20 ms ÷ {concurrency} = {bound:.1f} s",
                f"{wall:.1f} s ({wall / (max(calls, 1) * LATENCY_MS / 1000 / concurrency):.2f} × calls × 20 ms ÷ "
                f"{concurrency})", code == 0 and wall <= bound)]


def run(root: Path, psabill: Path, want: Any, Row: Any) -> List[Any]:  # noqa: N803
    rows: List[Any] = []
    if "refresh" in want:
        rows += connectwise(root, psabill, Row)
    if "autotask" in want:
        rows += autotask(root, psabill, Row)
    return rows
