"""Open the ledger a test's psabill uses, whichever backend it is."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from psabill.config.paths import Paths
from psabill.config.settings import load
from psabill.ledger.history import Ledger, Store, open_store


def store_for(state_dir: Path, url: Optional[str], config: Optional[Path] = None) -> Store:
    """The store psabill opens for ``state_dir`` and ``url`` (None: SQLite), as the config there sees it."""
    config = config or state_dir.parent / "conf" / "config.toml"
    account = load(config, check_addresses=False).account_id if config.exists() else ""
    return open_store(Paths(config, state_dir, None), url, account)


def history_for(state_dir: Path, url: Optional[str], config: Optional[Path] = None) -> Ledger:
    return store_for(state_dir, url, config).ledger
