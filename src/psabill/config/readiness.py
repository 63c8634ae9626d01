"""Is this config ready to run unattended? What is missing, and what cron will lack.

Pure: takes typed settings, returns one-line texts. ``run`` refuses a config
that is not ready (nothing is recorded); ``schedule set``, ``check`` and
``status`` show what is missing and warn about secrets read from variables
that cron's nearly empty environment will not have.
"""

from __future__ import annotations

from typing import List

from psabill.config.settings import SecretRef, Settings


def missing(settings: Settings) -> List[str]:
    """What must still be configured before a run can update anything ([] when ready)."""
    gaps = []
    if settings.psa is None:
        gaps.append("no [psa] configured")
    if not settings.source.kind:
        gaps.append("no [source] configured")
    return gaps


def not_ready_text(settings: Settings) -> str:
    """The one line a refused run prints."""
    return (f"not ready: {' and '.join(missing(settings))}: add "
            + " and ".join(gap.split()[1] for gap in missing(settings))
            + f" to {settings.path}")


def cron_env_warnings(settings: Settings) -> List[str]:
    """One warning per secret read from an environment variable: cron will not have it."""
    refs: List[SecretRef] = [settings.notify.smtp.password]
    if settings.psa is not None:
        refs.append(settings.psa.credential)
    warnings = []
    for ref in refs:
        if ref.env is None:
            continue
        section = ref.where.rsplit(": ", 1)[-1]
        warnings.append(
            f"{section} {ref.key}_env = {ref.env!r}: cron runs with an almost empty environment and "
            f"will not have ${ref.env}; use {ref.key}_file (a file readable only by you) instead"
        )
    return warnings
