"""How instants are shown in text: in the account zone, with the host's wall time when it reads differently.

JSON keeps ISO-8601 in every zone; these are for people.
"""

from datetime import datetime, tzinfo
from typing import Any, Optional


def _host_bracket(instant: datetime, zone: tzinfo, host: tzinfo, seconds: bool) -> str:
    here, there = instant.astimezone(zone), instant.astimezone(host)
    if (here.utcoffset(), here.tzname()) == (there.utcoffset(), there.tzname()):
        return ""
    return f" (host {there.strftime('%a %H:%M' + (':%S' if seconds else ''))} {there.tzname()})"


def occurrence(instant: Any, zone: tzinfo, host: tzinfo) -> str:
    """``Tue 2026-12-01 09:00 EST (host Tue 14:00 UTC)``: a scheduled time (``instant`` may be ISO text)."""
    moment = as_instant(instant)
    if moment is None:
        return str(instant)
    here = moment.astimezone(zone)
    return f"{here.strftime('%a %Y-%m-%d %H:%M')} {here.tzname()}" + _host_bracket(moment, zone, host, False)


def moment(instant: Any, zone: tzinfo, host: tzinfo) -> str:
    """``2026-12-01 09:00:07 -0500 (host Tue 14:00:07 UTC)``: when something happened, to the second."""
    value = as_instant(instant)
    if value is None:
        return "-" if instant is None else str(instant)
    return value.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S %z") + _host_bracket(value, zone, host, True)


def short(instant: Optional[datetime], zone: tzinfo) -> str:
    """``Tue 2026-12-01 09:00 EST``."""
    if instant is None:
        return "n/a"
    here = instant.astimezone(zone)
    return f"{here.strftime('%a %Y-%m-%d %H:%M')} {here.tzname()}"


def as_instant(value: Any) -> Optional[datetime]:
    if isinstance(value, datetime):
        return value
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None
