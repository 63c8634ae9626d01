"""After every run: bring the static history site (:mod:`psabill.site`) up to date.

The site is written to ``[history] site_dir`` (default ``site`` in the state
dir): the index and the run's own pages. Writing it never fails a run: a
problem is logged and said once on stderr, and the next run or ``psabill
history site`` writes it again.
"""

import importlib.util
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from psabill.config.paths import Paths
from psabill.config.settings import Settings
from psabill.ledger.history import Ledger
from psabill.report import Item, Run
from psabill.text import log


class LedgerView:
    """The ledger as the site reads it (psabill.site.SiteView). A view lives for one build or update:
    the runs it read are kept, so customer pages get their runs without reading them again."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._runs: Dict[int, Run] = {}
        self._since: Optional[datetime] = None

    def runs(self, since: datetime) -> List[Run]:
        runs = self.ledger.runs(since)
        self._runs = {run.id: run for run in runs if run.id is not None}
        self._since = since
        return runs

    def run(self, run_id: int) -> Optional[Run]:
        return self.ledger.run(run_id)

    def attempts(self, run: Run) -> List[Run]:
        return self.ledger.of_occurrence(run)

    def customers_lines(self, customers: Sequence[str], since: datetime) -> Dict[str, List[Tuple[Run, Item]]]:
        if self._since is None or self._since > since:
            self.runs(since)
        found = self.ledger.customer_items(customers, since)
        return {customer: [(self._runs[run_id], item) for run_id, item in pairs if run_id in self._runs]
                for customer, pairs in found.items()}

    def sku_totals(self, since: datetime) -> List[Tuple[Run, dict]]:
        return self.ledger.sku_totals(since)


def site_dir(settings: Settings, paths: Paths) -> Path:
    return settings.history.site_dir or paths.site


def publish(settings: Settings, paths: Paths, ledger: Ledger, run: Run, logger: logging.Logger,
            now: Optional[datetime] = None) -> List[Path]:
    """Update the site after ``run``; never raises."""
    if run.id is None or not _built_in():
        return []
    try:
        from psabill import site  # the site's templates: only once a run has ended

        return site.update(LedgerView(ledger), site_dir(settings, paths), run.id, zone=settings.zone or _utc(),
                           now=now or run.finished_at or run.started_at, days=settings.history.site_days,
                           account_name=settings.account.name)
    except Exception as exc:  # a site that cannot be written must never fail a billing run

        logger.warning("the history site in %s was not updated: %s: %s", site_dir(settings, paths),
                       type(exc).__name__, exc)
        log.warn(f"the history site in {site_dir(settings, paths)} was not updated ({type(exc).__name__}: {exc}); "
                 "the next run writes it again ('psabill history site' rebuilds it now)")
        return []


def rebuild(settings: Settings, paths: Paths, ledger: Ledger, *, output: Optional[Path], days: Optional[int],
            now: datetime) -> List[Path]:
    """``psabill history site``: the whole site, again."""
    from psabill import site  # as in publish

    return site.build(LedgerView(ledger), output or site_dir(settings, paths), zone=settings.zone or _utc(), now=now,
                      days=days or settings.history.site_days, account_name=settings.account.name)


def _built_in() -> bool:
    """Whether this build has the site generator (:mod:`psabill.site`); without it there is no site to update."""
    return importlib.util.find_spec("psabill.site") is not None


def _utc() -> "object":
    return timezone.utc
