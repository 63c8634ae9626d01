"""Where psabill's files are: the config, the state dir and the crontab target.

``--config`` / ``PSABILL_CONFIG``, ``--state-dir`` / ``PSABILL_STATE_DIR`` and
``PSABILL_CRONTAB`` (a file standing in for the user's crontab) point all of it
somewhere else; tests point everything into a temp dir. Every path is absolute.
"""


import os
from pathlib import Path
from typing import NamedTuple, Optional

ENV_CONFIG = "PSABILL_CONFIG"
ENV_STATE_DIR = "PSABILL_STATE_DIR"
ENV_CRONTAB = "PSABILL_CRONTAB"
DB_NAME = "state.db"
LOCK_NAME = "run.lock"
LOG_NAME = "psabill.log"
OUTBOX_NAME = "outbox"
SITE_NAME = "site"


def default_config() -> Path:
    """The per-user config file (platformdirs)."""
    import platformdirs  # only when neither --config nor PSABILL_CONFIG names the file

    return Path(platformdirs.user_config_dir("psabill")) / "config.toml"


def default_state_dir() -> Path:
    """The per-user state dir (platformdirs)."""
    import platformdirs  # only when neither --state-dir nor PSABILL_STATE_DIR names it

    return Path(platformdirs.user_state_dir("psabill"))


def _absolute(value: str) -> Path:
    return Path(os.path.abspath(Path(value).expanduser()))


def resolve_config(option: Optional[str] = None) -> Path:
    """``--config``, then ``PSABILL_CONFIG``, then the platformdirs user config dir."""
    chosen = option or os.environ.get(ENV_CONFIG)
    return _absolute(chosen) if chosen else default_config()


def resolve_state_dir(option: Optional[str] = None) -> Path:
    """``--state-dir``, then ``PSABILL_STATE_DIR``, then the platformdirs user state dir."""
    chosen = option or os.environ.get(ENV_STATE_DIR)
    return _absolute(chosen) if chosen else default_state_dir()


class Paths(NamedTuple):
    """Every path one invocation touches."""

    config: Path
    state_dir: Path
    crontab_file: Optional[Path]  # None: the invoking user's crontab via `crontab`

    @classmethod
    def resolve(cls, config_option: Optional[str] = None, state_dir_option: Optional[str] = None) -> "Paths":
        """Paths from the options and the environment."""
        crontab = os.environ.get(ENV_CRONTAB)
        return cls(resolve_config(config_option), resolve_state_dir(state_dir_option),
                   _absolute(crontab) if crontab else None)

    @property
    def db(self) -> Path:
        """The history database."""
        return self.state_dir / DB_NAME

    def lock_for(self, account: str) -> Path:
        """The run lock of one config (configs sharing a state dir never wait for each other)."""
        if not account:
            return self.state_dir / LOCK_NAME
        import hashlib  # only a run takes the lock

        return self.state_dir / f"run-{hashlib.sha256(account.encode('utf-8')).hexdigest()[:16]}.lock"

    @property
    def site(self) -> Path:
        """Where the history site goes when [history] site_dir is not set."""
        return self.state_dir / SITE_NAME

    @property
    def log(self) -> Path:
        """The log file."""
        return self.state_dir / LOG_NAME

    @property
    def outbox(self) -> Path:
        """Where the file transport writes when [notify.file] dir is not set."""
        return self.state_dir / OUTBOX_NAME
