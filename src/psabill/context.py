"""One place for every path and target psabill touches, overridable for tests.

``PSABILL_CONFIG``, ``PSABILL_STATE_DIR``, ``PSABILL_CRONTAB`` and
``PSABILL_HOST_TZ`` (plus ``--config``) point all of it somewhere else.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from psabill import config as config_mod
from psabill import state as state_mod

ENV_CRONTAB = "PSABILL_CRONTAB"


@dataclass(frozen=True)
class Context:
    config_path: Path
    state_dir: Path
    crontab_file: Optional[Path]  # None: the invoking user's crontab via `crontab`
    verbose: bool = False

    @classmethod
    def from_env(cls, config_option: Optional[str] = None, state_dir_option: Optional[str] = None,
                 verbose: bool = False) -> "Context":
        crontab = os.environ.get(ENV_CRONTAB)
        return cls(
            config_path=config_mod.resolve_path(config_option),
            state_dir=state_mod.resolve_dir(state_dir_option),
            crontab_file=Path(os.path.abspath(Path(crontab).expanduser())) if crontab else None,
            verbose=verbose,
        )

    def load_config(self, *, check_addresses: bool = True, must_exist: bool = False) -> config_mod.Config:
        return config_mod.load(self.config_path, check_addresses=check_addresses, must_exist=must_exist)

    def state(self) -> state_mod.State:
        return state_mod.State(self.state_dir)
