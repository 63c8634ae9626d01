"""Build the configured PSA client from the typed ``[psa]`` settings.

The client modules (and httpx with them) are imported here, on demand, so
commands that never talk to a PSA (the cron "nothing due" path above all)
stay cheap. This is the one place a client's construction error becomes a
config error.
"""

from __future__ import annotations

from datetime import date, tzinfo
from pathlib import Path
from typing import Any, Optional

from psabill.errors import ConfigError
from psabill.psa.base import PsaClient, PsaError
from psabill.config.secrets import resolve
from psabill.config.settings import PsaSettings


def make_client(psa: PsaSettings, config_path: Path, *, billing_date: Optional[date] = None,
                zone: Optional[tzinfo] = None, **options: Any) -> PsaClient:
    """A ConnectWise or Autotask client; ``options`` pass through (tests: backoff, zone_lookup).

    ``billing_date`` is the date on the account's calendar that lines must be
    billing on (None: the client's own idea of today); ``zone`` is the account's
    zone, in which Autotask states when its hourly allowance resets.
    """
    if not psa.kind:
        raise ConfigError(f"{config_path}: [psa] kind is not set (connectwise or autotask)")
    secret = resolve(psa.credential)
    try:
        if psa.kind == "connectwise":
            from psabill.psa.connectwise import ConnectWiseClient

            return ConnectWiseClient(psa, secret, billing_date=billing_date, **options)
        from psabill.psa.autotask import AutotaskClient

        return AutotaskClient(psa, secret, billing_date=billing_date, zone=zone, **options)
    except PsaError as exc:
        # Raised before any request: a bad CA file or a plain-HTTP URL is a config problem.
        raise ConfigError(f"{config_path}: [psa] {exc}") from None
