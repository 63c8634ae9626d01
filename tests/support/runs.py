"""Plan and apply a refresh in process, the way a run does, for tests of the engine and the PSA clients."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from psabill import outcomes
from psabill.psa.base import PsaClient, Target
from psabill.report import Run
from psabill.run import engine
from psabill.sources.rows import UsageRow


def refresh(client: PsaClient, rows: Sequence[UsageRow], *, products: Mapping[str, str],
            pins: Optional[Mapping[str, Any]] = None, dry_run: bool = False, where: str = "the PSA",
            halt: Callable[[], bool] = lambda: False, sent: Optional[List[Sequence[Target]]] = None,
            sending: Optional[Callable[[Sequence[Target]], None]] = None) -> Run:
    """Plan ``rows`` against ``client`` and (unless ``dry_run``) write the plan; the run with its items.

    ``sent`` collects each batch the client announced before sending it (the run's intents);
    ``sending``, if given, is called with each such batch too (it may raise ``Stop``)."""
    run = Run(trigger="dry-run" if dry_run else "manual", started_at=datetime.now(timezone.utc))
    run.items = engine.plan(client, rows, products=products, pins=pins or {}, where=where)
    if not dry_run:
        todo = [item for item in run.items if item.outcome == outcomes.PLANNED]

        def announce(batch: Sequence[Target]) -> None:
            if sent is not None:
                sent.append(list(batch))
            if sending is not None:
                sending(batch)

        for item, written in engine.apply(client, todo, products=products, halt=halt, sending=announce):
            engine.settle(item, written)
    run.psa = client.kind
    run.api_requests = client.request_count
    return run


def by_outcome(run: Run) -> Dict[str, List[str]]:
    """outcome -> ["customer/sku", ...], for compact assertions."""
    found: Dict[str, List[str]] = {}
    for item in run.items:
        found.setdefault(item.outcome, []).append(f"{item.customer}/{item.sku}")
    return found
