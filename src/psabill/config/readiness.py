"""Is this config ready to run unattended? What is missing, and what cron will lack: checked in one place.

Pure: takes typed settings, returns one-line texts. ``run`` refuses a config
that is not ready (nothing is recorded); ``schedule set``, ``check`` and
``status`` show what is missing and warn about secrets read from variables
that cron's nearly empty environment will not have.
"""

from typing import List

from psabill.config.keys import SecretRef
from psabill.config.secrets import env_name_shown
from psabill.config.settings import Settings
from psabill.errors import ConfigError


def missing(settings: Settings) -> List[str]:
    """What must still be configured before a run can update anything ([] when ready)."""
    gaps = []
    if settings.psa is None:
        gaps.append("no [psa] configured")
    if not settings.source.kind:
        gaps.append("no [source] configured")
    elif settings.source.kind != "lastpass" and not settings.products:
        gaps.append("no [products] configured")
    return gaps


def require(settings: Settings) -> None:
    """Refuse a config that cannot update anything, naming what to add."""
    gaps = missing(settings)
    if gaps:
        raise ConfigError(f"not ready: {' and '.join(gaps)}: add "
                          + " and ".join(gap.split()[1] for gap in gaps) + f" to {settings.path} "
                          "(psabill config init --help)")


def secrets(settings: Settings) -> List[SecretRef]:
    """Every credential the config names (configured or not)."""
    refs = [settings.notify.smtp.password, settings.source.api_key]
    if settings.psa is not None:
        refs += [settings.psa.private_key, settings.psa.secret]
    return refs


def cron_env_warnings(settings: Settings) -> List[str]:
    """One warning per secret read from an environment variable: cron will not have it."""
    warnings = []
    for ref in secrets(settings):
        if ref.env is None:
            continue
        section = ref.where.rsplit(": ", 1)[-1]
        shown = env_name_shown(ref)
        named = f"{ref.key}_env = {ref.env!r}" if shown.startswith("$") else f"{ref.key}_env"
        warnings.append(
            f"{section} {named}: cron runs with an almost empty environment and "
            f"will not have {shown if shown.startswith('$') else 'that variable'}; use {ref.key}_file "
            "(a file readable only by you) instead"
        )
    return warnings
