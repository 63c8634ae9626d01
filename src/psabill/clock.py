"""The one clock, and the host's time zone.

Everything that needs "now" calls :func:`now`; the pure core takes it as an
argument instead. ``PSABILL_NOW`` (an ISO-8601 instant *with* an offset) pins
it for tests and drills. ``PSABILL_HOST_TZ`` pins the zone cron fires in.
"""

from __future__ import annotations

import os
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional, Tuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

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


def resolve_zone_name(name: str) -> Tuple[str, Optional[str]]:
    """(the IANA name ``name`` means, None) or (``name``, the problem in words).

    An exact name is taken as it is; one that differs only in case from exactly
    one zone (``Australia/sydney``) is taken as that zone.
    """
    try:
        load_zone(name)
        return name, None
    except UsageError:
        pass
    from zoneinfo import available_timezones  # scans tzdata: only a name that is not exact gets here

    folded = [zone for zone in available_timezones() if zone.lower() == name.strip().lower()]
    if len(folded) == 1:
        return folded[0], None
    guess = suggest_zone(name)
    return name, f"unknown time zone ({'did you mean ' + guess + '?' if guess else 'use an IANA name such as America/New_York'})"


def suggest_zone(name: str) -> Optional[str]:
    """The IANA zone ``name`` most likely meant: same name ignoring case, else a close match."""
    # only a zone name that does not resolve gets here: difflib and the tzdata scan are not on the cron path
    import difflib
    from zoneinfo import available_timezones

    zones = {zone.lower(): zone for zone in available_timezones()}
    key = name.strip().lower().replace(" ", "_")
    if key in zones:
        return zones[key]
    close = difflib.get_close_matches(key, list(zones), n=1, cutoff=0.9)
    return zones[close[0]] if close else None


# Legacy names that are one fixed offset all year, and the place a user most likely meant.
_FIXED = {"EST": "America/New_York", "MST": "America/Denver (or America/Phoenix, which keeps no daylight saving)",
          "HST": "Pacific/Honolulu"}
_UTC_NAMES = {"UTC", "Etc/UTC", "UCT", "Etc/UCT", "GMT", "Etc/GMT", "Etc/GMT0", "Etc/GMT+0", "Etc/GMT-0",
              "GMT0", "GMT+0", "GMT-0", "Greenwich", "Etc/Greenwich", "Universal", "Etc/Universal", "Zulu",
              "Etc/Zulu"}


def fixed_offset_problem(name: str) -> Optional[str]:
    """Why ``name`` will not do as an account zone (a fixed offset with no daylight saving), or None."""
    if name in _UTC_NAMES:
        return None
    etc = re.fullmatch(r"(?:Etc/)?GMT([+-]\d{1,2})", name)
    if name not in _FIXED and not etc:
        return None
    offset = ZoneInfo(name).utcoffset(datetime(2026, 1, 1))
    assert offset is not None
    hours = offset.total_seconds() / 3600
    shown = f"UTC{'+' if hours >= 0 else '-'}{abs(hours):g}"
    use = _FIXED.get(name, "the IANA name of the place, such as America/New_York")
    return f"{name} is a fixed {shown} offset with no daylight saving: use {use}"


def load_account_zone(name: str, what: str = "account time zone") -> ZoneInfo:
    """Like :func:`load_zone`, but refuses fixed-offset names (UTC is fine)."""
    zone = load_zone(name, what)
    problem = fixed_offset_problem(name)
    if problem:
        raise UsageError(problem)
    return zone


LOCALTIME = Path("/etc/localtime")
TIMEZONE_FILE = Path("/etc/timezone")


def system_zone_name() -> Optional[str]:
    """The system zone, as the cron daemon sees it: never the invoking shell's ``TZ``.

    The ``/etc/localtime`` symlink target, else ``/etc/timezone``, else None
    (the caller then takes UTC). A host whose ``/etc/localtime`` is a copy
    rather than a link and has no ``/etc/timezone`` says so by setting
    ``PSABILL_HOST_TZ``; ``status`` shows the zone psabill assumed.
    """
    try:  # one level only: the name the admin chose, even when tzdata links it on (US/Eastern)
        target = os.readlink(LOCALTIME)
        target = os.path.normpath(os.path.join(os.path.dirname(LOCALTIME), target))
    except OSError:
        target = ""
    if "/zoneinfo/" in target:
        name = target.split("/zoneinfo/", 1)[1]
        if name.startswith(("posix/", "right/")):
            name = name.split("/", 1)[1]
        if _valid(name):
            return name
    try:
        name = TIMEZONE_FILE.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        name = ""
    if name and _valid(name):
        return name
    return None


def _valid(name: str) -> bool:
    try:
        load_zone(name)
    except UsageError:
        return False
    return True


def host_zone() -> ZoneInfo:
    """The zone the cron daemon fires in.

    ``PSABILL_HOST_TZ``, else the system zone (:func:`system_zone_name`), else
    UTC. The shell's ``TZ`` is never used: cron does not run in that shell.
    """
    pinned = os.environ.get("PSABILL_HOST_TZ")
    if pinned:
        try:
            return load_zone(pinned, "host time zone (PSABILL_HOST_TZ)")
        except UsageError as exc:
            raise ConfigError(exc.message) from None
    name = system_zone_name()
    return ZoneInfo(name) if name else ZoneInfo("UTC")


def shell_tz_differs(host: ZoneInfo) -> Optional[str]:
    """The shell's ``TZ`` when it is set and is not the zone cron fires in (``host``), else None."""
    tz_env = os.environ.get("TZ", "").lstrip(":")
    if not tz_env or tz_env == str(host):
        return None
    return tz_env
