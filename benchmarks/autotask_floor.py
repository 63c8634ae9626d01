#!/usr/bin/env python3
"""How fast can anything post 1,004 Autotask adjustments, three at a time? (the floor under figure 5b)

    python benchmarks/autotask_floor.py            # httpx, then http.client
    python benchmarks/autotask_floor.py httpx

The Autotask stand-in (20 ms per request, as in figure 5b: each answer leaves
20 ms after its request arrived, the stand-in's own work included) runs in this
process; a child process posts the adjustments with no psabill code at all,
three in flight (Autotask's per-endpoint limit), over keep-alive connections:
once with httpx (what psabill uses) and once with the standard library's
http.client. What it prints is the least the posts of figure 5b can take.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timezone

from psabill.sandbox.autotask import AutotaskStandin

POSTS = 1004
LATENCY_MS = 20.0

CHILD = r'''
import http.client, json, sys, threading, time, urllib.parse
from concurrent.futures import ThreadPoolExecutor

base, headers, jobs, day, kind = json.loads(sys.stdin.read())
bodies = [json.dumps({"contractID": c, "contractServiceID": cs, "serviceID": s,
                      "effectiveDate": day + "T00:00:00", "unitChange": 1}) for c, s, cs in jobs]
if kind == "httpx":
    import httpx
    client = httpx.Client(headers={**headers, "Content-Type": "application/json"})
    def post(body):
        client.post(base + "/ContractServiceAdjustments", content=body).raise_for_status()
else:
    where, local = urllib.parse.urlsplit(base), threading.local()
    def post(body):
        conn = getattr(local, "conn", None) or http.client.HTTPConnection(where.hostname, where.port)
        local.conn = conn
        conn.request("POST", where.path + "/ContractServiceAdjustments", body,
                     {**headers, "Content-Type": "application/json"})
        answer = conn.getresponse()
        answer.read()
        assert answer.status == 200, answer.status
t0 = time.perf_counter()
with ThreadPoolExecutor(3) as pool:
    list(pool.map(post, bodies))
wall = time.perf_counter() - t0
print(f"{kind:12s} {len(bodies):,} posts in {wall:.2f} s: {wall / len(bodies) * 3 * 1000:.2f} ms a round trip")
'''


def main(kinds: list) -> int:
    today = datetime.now(timezone.utc).date()
    st = AutotaskStandin(today=today, latency_ms=LATENCY_MS)
    jobs = []
    for n in range(1, POSTS // 2 + 2):
        contract = st.add_contract(st.add_company(f"Customer {n:05d} Ltd", f"CUST{n:05d}"))
        for service in (301, 302):
            jobs.append((contract, service, st.add_service(contract, service, 10)))
    headers = {"UserName": st.username, "Secret": st.secret, "ApiIntegrationCode": st.integration_code}
    with st:
        for kind in kinds or ["httpx", "http.client"]:
            payload = json.dumps([st.url + "/ATServicesRest/V1.0", headers, jobs[:POSTS],
                                  today.replace(day=1).isoformat(), kind])
            subprocess.run([sys.executable, "-c", CHILD], input=payload, text=True, check=True)
        print(f"stand-in: {st.counts.get('ContractServiceAdjustments', 0):,} adjustments, "
              f"at most {max(st.max_inflight.values())} in flight")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
