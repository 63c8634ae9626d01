"""Figure 5c of benchmarks/run.py: what the billing safety net adds to a refresh (issue 20).

A run is plan, then guard, then apply. The requests are the refresh itself; what
the plan stage adds on top is CPU and ledger work before the first write:

* the digest of the source's bytes,
* storing the whole plan in the ledger, in one transaction,
* the guard's review of every item against the last applied run,
* and, during apply, an intent row committed before each batch is sent.

After figure 5's real ``psabill run --yes --json`` against the 5,000-customer
ConnectWise sandbox at 20 ms, this replays exactly those steps on that run's
own items (read back from its ledger) into a copy of its SQLite ledger, times
them, and compares their sum with the run's wall time. Target: under 5%.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, List

PLAN_SHARE = 0.05


def measure(home: Path, run_id: int, wall: float, Row: Any) -> List[Any]:  # noqa: N803 - run.py's Row
    from psabill import outcomes
    from psabill.config.paths import Paths
    from psabill.config.settings import load
    from psabill.ledger.history import open_store
    from psabill.report import Run
    from psabill.run import safety

    settings = load(home / "config.toml")
    state = home / "plan-copy"
    state.mkdir()
    shutil.copy2(home / "state" / "state.db", state / "state.db")
    store = open_store(Paths(config=home / "config.toml", state_dir=state, crontab_file=home / "crontab"), None,
                       settings.account_id)
    with store.ledger as ledger:
        recorded = ledger.run(run_id)
        assert recorded is not None and recorded.items, f"run {run_id} has no items in its ledger"
        items = recorded.items
        for item in items:  # the plan as it stood before apply
            if item.outcome == outcomes.UPDATED:
                item.outcome = outcomes.PLANNED
        source = (home / "usage.csv").read_bytes()
        started = time.perf_counter()
        digest = hashlib.sha256(source).hexdigest()
        t_digest = time.perf_counter()
        run = Run(trigger="manual", started_at=datetime.now(timezone.utc), status=outcomes.RUNNING, items=items)
        run.source_digest = digest
        ledger.start_run(run)
        ledger.store_plan(run, datetime.now(timezone.utc))
        t_store = time.perf_counter()
        baseline = ledger.baseline()
        review = safety.review(items, rows=len(items), unterminated=False, rules=settings.guard,
                               baseline=safety.Baseline(baseline.run_id, set(baseline.keys))
                               if baseline is not None else None)
        t_review = time.perf_counter()
        planned = [item.seq for item in items if item.outcome == outcomes.PLANNED]
        for start in range(0, len(planned), 32):  # ConnectWise's sending windows: concurrency 8 × 4
            ledger.intend(run.id, planned[start:start + 32], datetime.now(timezone.utc))
        t_intents = time.perf_counter()
    total = t_intents - started
    parts = (f"digest {1000 * (t_digest - started):.1f} ms, store the plan {1000 * (t_store - t_digest):.0f} ms, "
             f"review {1000 * (t_review - t_store):.0f} ms ({len(review.run) + len(review.lines)} findings), "
             f"intents for {len(planned):,} writes {1000 * (t_intents - t_review):.0f} ms")
    return [Row(f"5c. … plan stage: digest, plan stored, guard review, intents ({len(items):,} items)",
                f"≤ {PLAN_SHARE:.0%} of the refresh's wall time ({wall:.1f} s) = {PLAN_SHARE * wall:.2f} s",
                f"{total:.2f} s ({total / wall:.1%})", total <= PLAN_SHARE * wall, [parts])]
