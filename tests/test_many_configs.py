"""Several configs on one ledger (issue 26, point 2): occurrences are keyed by the config's identity.

Two MSP brands bill two PSA instances on the same schedule, from one state dir (SQLite, the default) or
one ``[state] url`` (PostgreSQL). Each config runs its own occurrence once, whether they fire one after
the other or together, and ``status`` and ``history`` show each config only its own runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import tomli_w

from psabill.sandbox.connectwise import Sandbox
from support.env import Env, tomllib, write_old

SAVED = "2026-11-26T12:00:00Z"
DUE = "2026-11-27T06:00:00Z"
OCC = "2026-11-27T06:00:00+00:00"


def brand(env: Env, config: Path, sandbox: Sandbox, customer: str, seats: int, state: Path) -> None:
    """A config at ``config`` billing ``customer`` in ``sandbox``: daily at 06:00 UTC, a report to a file."""
    agreement = sandbox.add_agreement(sandbox.add_company(customer, f"{customer} Ltd"))
    sandbox.add_addition(agreement, "SEATS-STD", 10)
    result = env.run("--config", str(config), "--state-dir", str(state), "schedule", "set", "--daily", "--hour", "6",
                     "--timezone", "UTC", "--notify", "billing@msp.example", "--no-cron", now=SAVED)
    assert result.exit_code == 0, result.output
    write_old(config.parent / "usage.csv", f"customer,sku,seats\n{customer},LastPass,{seats}\n")
    (config.parent / "psa-key").write_text(sandbox.private_key + "\n")
    os.chmod(config.parent / "psa-key", 0o600)
    data = tomllib.loads(config.read_text())
    data["source"] = {"kind": "csv", "path": "usage.csv"}
    data["products"] = {"LastPass": "SEATS-STD"}
    data["psa"] = {**sandbox.config_section(), "private_key_file": "psa-key", "max_retries": 0}
    data["notify"].update({"transport": "file", "from": "psabill@msp.example",
                           "file": {"dir": str(config.parent / "outbox")}})
    config.write_text(tomli_w.dumps(data))
    os.chmod(config, 0o600)


def cli(env: Env, config: Path, state: Path, *args: str, now: Optional[str] = None) -> Any:
    return env.run("--config", str(config), "--state-dir", str(state), *args, now=now)


def history(env: Env, config: Path, state: Path) -> List[Dict[str, Any]]:
    result = cli(env, config, state, "history", "--days", "100000", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_two_configs_on_one_ledger_each_run_their_occurrence_once_and_see_only_their_own_runs(
        env: Env, ledger_url: Optional[str]) -> None:
    """SQLite: both configs on one state dir. PostgreSQL: one [state] url (PSABILL_STATE_URL), and each
    config its own state dir (its log and lock file), as two installs would have."""
    configs = [env.tmp / "brand-a" / "config.toml", env.tmp / "brand-b" / "config.toml"]
    states = [env.state_dir, env.state_dir] if ledger_url is None else [env.tmp / "a-state", env.tmp / "b-state"]
    customers = ["ALPHA", "BRAVO"]
    with Sandbox() as psa_a, Sandbox() as psa_b:
        sandboxes = [psa_a, psa_b]
        for config, sandbox, customer, state, seats in zip(configs, sandboxes, customers, states, (11, 12)):
            brand(env, config, sandbox, customer, seats, state)
        # One after the other: the second is not taken for the first's occurrence.
        for config, state in zip(configs, states):
            result = cli(env, config, state, "run", "--scheduled", now=DUE)
            assert result.exit_code == 0, result.output
        # Again, within the hour: each has run its own occurrence.
        for config, state in zip(configs, states):
            assert cli(env, config, state, "run", "--scheduled", now="2026-11-27T06:30:00Z").exit_code == 0
        # The next day both fire together (separate processes, as cron starts them).
        procs = [subprocess.Popen([sys.executable, "-m", "psabill", "--config", str(config), "--state-dir", str(state),
                                   "run", "--scheduled"], env={**os.environ, "PSABILL_NOW": "2026-11-28T06:00:00Z"},
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for config, state in zip(configs, states)]
        outputs = [proc.communicate(timeout=120) for proc in procs]
        assert [proc.returncode for proc in procs] == [0, 0], outputs
        assert [len(sandbox.patches()) for sandbox in sandboxes] == [1, 1]  # each PSA written once, by its config
    for config, state, customer in zip(configs, states, customers):
        runs = history(env, config, state)
        assert [(r["occurrence"], r["status"]) for r in runs] == [
            ("2026-11-28T06:00:00+00:00", "success"), (OCC, "success")], (config, runs)
        shown = cli(env, config, state, "history", "show", str(runs[-1]["id"]), "--json")
        assert [i["customer"] for i in json.loads(shown.output)["items"]] == [customer]
        status = json.loads(cli(env, config, state, "status", "--json", now="2026-11-28T07:00:00Z").output)
        assert status["last_run"]["id"] == runs[0]["id"] and status["missed"] == []
        assert status["retrying"] is None
        assert len(list((config.parent / "outbox").glob("*.eml"))) == 2  # its own two reports
    ids = [{r["id"] for r in history(env, config, state)} for config, state in zip(configs, states)]
    assert not ids[0] & ids[1] and all(len(x) == 2 for x in ids)
