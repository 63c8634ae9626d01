"""A ConnectWise book of customers with known seats, and a config that bills it with the guard on.

Every customer CUST0001..N has one agreement with one SEATS-STD addition, so
a run's writes are easy to count and to check line by line.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Iterable, List, Optional, Tuple

import tomli_w

from psabill.sandbox.connectwise import Sandbox
from support.env import Env, tomllib, write_old

SKU = "LastPass"
PRODUCT = "SEATS-STD"


class Book:
    """A sandbox with ``customers`` lines of ``seats`` each, and the env's config pointed at it."""

    def __init__(self, env: Env, sandbox: Sandbox, customers: int = 20, seats: int = 25,
                 guard: Optional[Dict[str, Any]] = None, notify: Optional[Dict[str, Any]] = None) -> None:
        self.env = env
        self.sandbox = sandbox
        self.lines: Dict[str, Tuple[int, int]] = {}  # customer -> (agreement, addition)
        for n in range(1, customers + 1):
            customer = f"CUST{n:04d}"
            agreement = sandbox.add_agreement(sandbox.add_company(customer, f"Customer {n} Ltd"))
            self.lines[customer] = (agreement, sandbox.add_addition(agreement, PRODUCT, seats))
        self.seats = {customer: seats for customer in self.lines}
        key = env.config.parent / "cw-key"
        env.config.parent.mkdir(parents=True, exist_ok=True)
        key.write_text(sandbox.private_key + "\n")
        os.chmod(key, 0o600)
        data: Dict[str, Any] = {
            "account": {"name": "Example MSP", "timezone": "America/New_York"},
            "notify": {"emails": ["billing@msp.example"], "from": "psabill@msp.example", "transport": "file",
                       "on_manual": True, "file": {"dir": str(env.tmp / "outbox")}, **(notify or {})},
            "source": {"kind": "csv", "path": "usage.csv"},
            "products": {SKU: PRODUCT},
            "psa": {**sandbox.config_section(), "private_key_file": "cw-key", "max_retries": 0},
        }
        if guard is not None:
            data["guard"] = guard
        env.config.write_text(tomli_w.dumps(data))
        os.chmod(env.config, 0o600)

    def source(self, seats: Dict[str, int], *, terminated: bool = True, extra: Iterable[str] = ()) -> None:
        """Write the usage CSV: one row per customer in ``seats`` (plus ``extra`` raw rows)."""
        rows = ["customer,sku,seats"] + [f"{c},{SKU},{n}" for c, n in seats.items()] + list(extra)
        text = "\n".join(rows) + ("\n" if terminated else "")
        write_old(self.env.config.parent / "usage.csv", text)

    def quantity(self, customer: str) -> float:
        agreement, addition = self.lines[customer]
        return self.sandbox.quantity(agreement, addition)

    def quantities(self) -> Dict[str, float]:
        return {customer: self.quantity(customer) for customer in self.lines}

    def set_quantity(self, customer: str, value: float) -> None:
        agreement, addition = self.lines[customer]
        with self.sandbox._lock:
            self.sandbox.additions[agreement][addition]["quantity"] = float(value)

    def run(self, *args: str, now: Optional[str] = None) -> Tuple[int, Dict[str, Any], str]:
        """``psabill run ARGS --json``: (exit code, the run's JSON, everything printed)."""
        result = self.env.run("run", *args, "--json", now=now)
        out = result.output
        start = out.find("{")
        data = json.loads(out[start:out.rindex("}") + 1]) if start >= 0 else {}
        return result.exit_code, data, out

    def writes(self) -> int:
        return len(self.sandbox.patches())

    def schedule(self) -> None:
        """A weekly Tuesday 09:00 New York schedule, saved well before the runs."""
        result = self.env.run("schedule", "set", "--weekly", "tue", "--hour", "9", "--timezone", "America/New_York",
                              "--no-cron", now="2026-11-20T12:00:00Z")
        assert result.exit_code == 0, result.output
        data = tomllib.loads(self.env.config.read_text())
        self.env.config.write_text(tomli_w.dumps(data))
        os.chmod(self.env.config, 0o600)


def outcomes_of(run: Dict[str, Any]) -> Dict[str, List[str]]:
    found: Dict[str, List[str]] = {}
    for item in run.get("items", []):
        found.setdefault(item["outcome"], []).append(item["customer"])
    return found
