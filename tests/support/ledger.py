"""Open the ledger a test's psabill uses, whichever backend it is."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from psabill.ledger.history import History, Store, open_store
from psabill.config.paths import Paths


def store_for(state_dir: Path, url: Optional[str]) -> Store:
    """The store psabill opens for ``state_dir`` and ``url`` (None: SQLite)."""
    return open_store(Paths(state_dir.parent / "conf" / "config.toml", state_dir, None), url)


def history_for(state_dir: Path, url: Optional[str]) -> History:
    return store_for(state_dir, url).history
