"""Dead-man's-switch pings (healthchecks.io, cronitor and the like) for ``[notify] ping_url``.

A real run requests ``<url>/start`` when it begins, ``<url>`` when it ends
well and ``<url>/fail`` when it fails, aborts or cannot deliver its report, so
the monitor alerts both on a bad run and on a run that never happened. A ping
is best effort: it is logged, never raised, and never changes the run's
outcome. httpx is imported here, on a real run only, never on the not-due path.
"""

from __future__ import annotations

import logging
from typing import Optional

import httpx

TIMEOUT = 10.0
SUFFIXES = {"start": "/start", "success": "", "fail": "/fail"}


def ping_target(url: str, event: str) -> str:
    """``https://hc-ping.com/uuid`` + ``start`` -> ``https://hc-ping.com/uuid/start`` (query kept)."""
    base, sep, query = url.partition("?")
    return base.rstrip("/") + SUFFIXES[event] + sep + query


def ping(url: Optional[str], event: str, logger: Optional[logging.Logger] = None) -> bool:
    """GET the ``event`` URL; True when the monitor answered 2xx. Never raises."""
    if not url:
        return False
    target = ping_target(url, event)
    try:
        response = httpx.get(target, timeout=TIMEOUT, follow_redirects=True)
        ok = 200 <= response.status_code < 300
        problem = None if ok else f"HTTP {response.status_code}"
    except Exception as exc:  # a monitor outage must never fail a billing run
        ok, problem = False, f"{type(exc).__name__}: {exc}"
    if logger is not None:
        if ok:
            logger.info("ping %s: ok", event)
        else:
            from psabill.text.redact import mask_url  # a failed ping names its URL, never a password in it

            logger.warning("ping %s to %s failed: %s", event, mask_url(target), problem)
    return ok
