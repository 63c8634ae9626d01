"""Build the configured PSA client from ``[psa]``.

The client modules (and httpx with them) are imported here, on demand, so
commands that never talk to a PSA (the cron "nothing due" path above all)
stay cheap.
"""

from __future__ import annotations

from typing import Any, Dict

from psabill.config import Config
from psabill.errors import ConfigError
from psabill.psa.base import PsaClient, PsaError
from psabill.secrets import resolve_secret


def make_client(cfg: Config, **options: Any) -> PsaClient:
    """A ConnectWise or Autotask client; ``options`` pass through (tests: backoff, zone_lookup)."""
    section: Dict[str, Any] = dict(cfg.section("psa"))
    kind = section.get("kind")
    if section.get("ca_file"):
        section["ca_file"] = str(cfg.resolve_relative(str(section["ca_file"])))
    try:
        if kind == "connectwise":
            from psabill.psa.connectwise import ConnectWiseClient

            return ConnectWiseClient(section, resolve_secret(cfg, "psa", "private_key") or "", **options)
        if kind == "autotask":
            from psabill.psa.autotask import AutotaskClient

            return AutotaskClient(section, resolve_secret(cfg, "psa", "secret") or "", **options)
    except PsaError as exc:
        # Raised before any request: a bad CA file or a plain-HTTP URL is a config problem.
        raise ConfigError(f"{cfg.path}: [psa] {exc}") from None
    if not kind:
        raise ConfigError(f"{cfg.path}: [psa] kind is not set (connectwise or autotask)")
    raise ConfigError(f"{cfg.path}: [psa] kind = {kind!r} is not supported")
