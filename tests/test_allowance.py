"""Autotask's hourly allowance is the whole database's (issue 26, point 4).

Autotask allows "10,000 ... external requests ... per hour between an individual database and the API"
(Autotask developer help, SOAP_Thresholds_Limits.htm; /work/research/autotask.md), every integration
together, and ``GET /V1.0/ThresholdInformation`` answers ``externalRequestThreshold``,
``requestThresholdTimeframe`` and ``currentTimeframeRequestCount`` (the Threshold API's OpenAPI
description, ThresholdStatusResultModel), the count counting every integration's requests.
``[psa] budget_share`` is the share of that allowance the *database* may reach because of a run: the
stand-in below reports other integrations' usage in that count, and the run must stop where the database,
not the run, reaches the share; the unfinished items continue at the next firing, once the hour's count
has fallen, and each service is adjusted exactly once.
"""

from __future__ import annotations

import os
from datetime import date
from typing import Dict, List

import tomli_w

from psabill.errors import ExitCode
from psabill.sandbox.autotask import AutotaskStandin
from support.env import Env, write_old

TODAY = date(2026, 12, 1)
THRESHOLD = 4_000
SHARE = 0.5  # [psa] budget_share (the default)
CAP = int(THRESHOLD * SHARE)  # what the database may reach because of a run


def autotask_book(env: Env, at: AutotaskStandin, services: int) -> Dict[str, int]:
    csids = {}
    for n in range(1, services + 1):
        contract = at.add_contract(at.add_company(f"Customer {n}", f"C{n:05d}"))
        csids[f"C{n:05d}"] = at.add_service(contract, 501, 10)
    env.config.parent.mkdir(parents=True, exist_ok=True)
    (env.config.parent / "at-secret").write_text(at.secret + "\n")
    os.chmod(env.config.parent / "at-secret", 0o600)
    result = env.run("schedule", "set", "--daily", "--hour", "9", "--timezone", "UTC", "--no-cron",
                     now="2026-11-20T00:00:00Z")
    assert result.exit_code == 0, result.output
    import sys

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    data = tomllib.loads(env.config.read_text())
    data.update({
        "notify": {"transport": "file", "file": {"dir": str(env.tmp / "outbox")}, "from": "psabill@msp.example"},
        "source": {"kind": "csv", "path": "usage.csv"},
        "products": {"LastPass": 501},
        "psa": {"kind": "autotask", "url": at.url + "/ATServicesRest/", "username": at.username,
                "integration_code": at.integration_code, "secret_file": "at-secret", "max_retries": 0,
                "budget_share": SHARE},
        "guard": {"enabled": False},
    })
    env.config.write_text(tomli_w.dumps(data))
    os.chmod(env.config, 0o600)
    write_old(env.config.parent / "usage.csv",
              "customer,sku,seats\n" + "".join(f"{c},LastPass,20\n" for c in csids))
    return csids


def test_a_run_stops_where_the_whole_database_reaches_its_share_and_the_next_firing_finishes(env: Env) -> None:
    """1,200 services to change; other integrations have used 1,100 of the hour's 4,000 requests when the
    run starts. The run stops where the *database* reaches 2,000 (0.5 of 4,000), not where the run alone
    would; an hour later (the count back to the others' 1,100) the next firing adjusts the rest, and every
    service is adjusted exactly once."""
    with AutotaskStandin(today=TODAY, threshold=THRESHOLD, used_this_hour=1_100) as at:
        csids = autotask_book(env, at, 1_200)
        first = env.run("run", "--scheduled", now="2026-12-01T09:00:30Z")
        database = at.used_this_hour + at.total  # what ThresholdInformation counts now
        done = sum(at.units(csid, TODAY) == 20 for csid in csids.values())
        assert first.exit_code == ExitCode.PARTIAL, first.output
        assert "hourly allowance" in first.output and "a firing after 10:00 continues" in first.output
        assert CAP - 15 <= database <= CAP, database  # at the share: a batch's reads short of it at most
        assert at.total <= CAP - 1_100
        assert 0 < done < len(csids) and len(at.adjustments) == done  # nothing posted that did not land
        status = env.run("status", "--json", now="2026-12-01T09:30:00Z")
        assert '"retrying": {' in status.output
        at.used_this_hour = 1_100 - at.total  # the next hour: the count holds only the others' 1,100
        second = env.run("run", "--scheduled", now="2026-12-01T10:00:30Z")
        assert second.exit_code == 0, second.output
        assert at.used_this_hour + at.total <= CAP
        assert all(at.units(csid, TODAY) == 20 for csid in csids.values())
        assert len(at.adjustments) == len(csids)  # each service adjusted once
        assert sum(a["unitChange"] for a in at.adjustments) == 10 * len(csids)


def test_the_count_is_read_again_between_batches_so_another_integrations_burst_stops_the_next_batch(
        env: Env) -> None:
    """The same tenant; another integration uses 700 requests while the run posts its first batch of 500.
    At the start the share left the run room for about 870 adjustments; the count read before the second
    batch shows the database past its share, so the second batch is never sent, and the first is still
    verified (its 500 services end "updated", not unknown). The next firing finishes the rest, once each."""
    with AutotaskStandin(today=TODAY, threshold=THRESHOLD, used_this_hour=1_100) as at:
        csids = autotask_book(env, at, 1_200)
        burst: List[int] = []

        def busy_neighbour(method: str, endpoint: str) -> None:
            if endpoint == "ContractServiceAdjustments" and not burst and len(at.adjustments) >= 200:
                at.used_this_hour += 700
                burst.append(at.total)

        at.before = busy_neighbour
        first = env.run("run", "--scheduled", now="2026-12-01T09:00:30Z")
        at.before = None
        assert burst, "the other integration's burst never came"
        assert first.exit_code == ExitCode.PARTIAL, first.output
        assert len(at.adjustments) == 500  # the batch in flight when the burst came, and no other
        assert at.total <= CAP - 1_100  # the run never spent more than the share left it at the start
        history = env.run("history", "show", "--json")
        import json

        outcomes = [i["outcome"] for i in json.loads(history.output)["items"]]
        assert outcomes.count("updated") == 500 and outcomes.count("failed") == 700 and "unknown" not in outcomes
        at.used_this_hour = 1_100 - at.total
        second = env.run("run", "--scheduled", now="2026-12-01T10:00:30Z")
        assert second.exit_code == 0, second.output
        assert all(at.units(csid, TODAY) == 20 for csid in csids.values())
        assert len(at.adjustments) == len(csids)
