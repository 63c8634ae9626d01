"""The one clock, and the host's time zone.

Everything that needs "now" calls :func:`now`; the pure core takes it as an
argument instead. ``PSABILL_NOW`` (an ISO-8601 instant *with* an offset) pins
it for tests and drills. ``PSABILL_HOST_TZ`` pins the zone cron fires in.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from typing import Optional
from zoneinfo import ZoneInfo

from psabill.errors import ConfigError, UsageError


def parse_instant(value: str, what: str = "PSABILL_NOW") -> datetime:
    """Parse an ISO-8601 instant that carries an offset; naive times are refused."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"{what} {value!r} is not an ISO-8601 instant (example: 2026-03-08T09:00:00-05:00)"
        ) from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise UsageError(f"{what} {value!r} has no UTC offset (example: 2026-03-08T09:00:00-05:00)")
    if not 1971 <= parsed.year <= 2999:
        raise UsageError(f"{what} {value!r} is outside the years 1971-2999 psabill computes with")
    return parsed.astimezone(timezone.utc)


def now() -> datetime:
    """The current instant in UTC, or ``PSABILL_NOW`` when set."""
    pinned = os.environ.get("PSABILL_NOW")
    if pinned:
        return parse_instant(pinned)
    return datetime.now(timezone.utc)


def load_zone(name: str, what: str = "time zone") -> ZoneInfo:
    """A ZoneInfo for an IANA name, or a one-line error naming the value."""
    from zoneinfo import ZoneInfoNotFoundError

    if not name or name != name.strip() or name.startswith("/") or ".." in name:
        raise UsageError(f"unknown {what} {name!r}: use an IANA name such as America/New_York")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        guess = suggest_zone(name)
        raise UsageError(
            f"unknown {what} {name!r}: "
            + (f"did you mean {guess}?" if guess else "use an IANA name such as America/New_York")
        ) from None


def suggest_zone(name: str) -> Optional[str]:
    """The IANA zone ``name`` most likely meant: same name ignoring case, else a close match."""
    import difflib
    from zoneinfo import available_timezones

    zones = {zone.lower(): zone for zone in available_timezones()}
    key = name.strip().lower().replace(" ", "_")
    if key in zones:
        return zones[key]
    close = difflib.get_close_matches(key, list(zones), n=1, cutoff=0.9)
    return zones[close[0]] if close else None


def host_zone() -> ZoneInfo:
    """The zone the cron daemon fires in.

    ``PSABILL_HOST_TZ``, else ``TZ`` when it names an IANA zone, else the
    system zone (via tzlocal), else UTC.
    """
    pinned = os.environ.get("PSABILL_HOST_TZ")
    if pinned:
        try:
            return load_zone(pinned, "host time zone (PSABILL_HOST_TZ)")
        except UsageError as exc:
            raise ConfigError(exc.message) from None
    tz_env = os.environ.get("TZ", "").lstrip(":")
    if tz_env:
        try:
            return load_zone(tz_env)
        except UsageError:
            pass  # a POSIX TZ string like "EST5EDT,M3.2.0,M11.1.0": fall through to the system zone
    try:
        import tzlocal

        name = tzlocal.get_localzone_name()
    except Exception:  # tzlocal raises assorted errors on odd hosts; UTC is the safe default
        name = None
    if name:
        try:
            return load_zone(name)
        except UsageError:
            pass
    return ZoneInfo("UTC")
