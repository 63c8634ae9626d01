"""How the site writes times, numbers and outside text: the one place its pages escape anything.

Every text that came from outside (a customer, SKU, company, agreement, line,
message, fix, host, account name, even an outcome word read back from the
ledger) goes through :mod:`psabill.text.clean` first and is HTML-escaped
after, by :class:`Texts` for the rows the site writes itself and by Jinja's
autoescape for the values a template prints (which are cleaned strings, never
raw model fields: see :mod:`psabill.site.pages`). Times are shown in the
account's zone, with English month and day names whatever the locale.
"""

from __future__ import annotations

from datetime import datetime, timezone, tzinfo
from decimal import Decimal
from typing import Any, Dict, Optional

from markupsafe import escape

from psabill.text import clean

WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
MONTH_NAMES = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
               "October", "November", "December")
#: Words the site shows for a ledger value (an outcome, a status, a trigger) are cut here.
WORD_LIMIT = 40


def aware(moment: datetime) -> datetime:
    """``moment`` with a zone: a naive time is UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def local(moment: datetime, zone: tzinfo) -> datetime:
    return aware(moment).astimezone(zone)


def when(moment: Optional[datetime], zone: tzinfo) -> str:
    """``Tue 1 Dec 2026 09:00`` in ``zone``."""
    if moment is None:
        return ""
    t = local(moment, zone)
    return f"{WEEKDAYS[t.weekday()]} {t.day} {MONTHS[t.month - 1]} {t.year} {t.hour:02d}:{t.minute:02d}"


def when_seconds(moment: Optional[datetime], zone: tzinfo) -> str:
    """``Tue 1 Dec 2026 09:00:05`` in ``zone``."""
    if moment is None:
        return ""
    t = local(moment, zone)
    return when(moment, zone) + f":{t.second:02d}"


def day(moment: datetime, zone: tzinfo) -> str:
    """``1 Dec`` in ``zone``."""
    t = local(moment, zone)
    return f"{t.day} {MONTHS[t.month - 1]}"


def day_year(moment: datetime, zone: tzinfo) -> str:
    """``1 Dec 2026`` in ``zone``."""
    t = local(moment, zone)
    return f"{t.day} {MONTHS[t.month - 1]} {t.year}"


def short(moment: datetime, zone: tzinfo) -> str:
    """``1 Dec 09:00`` in ``zone``."""
    t = local(moment, zone)
    return f"{t.day} {MONTHS[t.month - 1]} {t.hour:02d}:{t.minute:02d}"


def zone_label(zone: tzinfo, moment: datetime) -> str:
    """The zone's IANA name when it has one (``America/New_York``), else its abbreviation at ``moment``."""
    key = getattr(zone, "key", None) or getattr(zone, "zone", None)
    if key:
        return str(key)
    return aware(moment).astimezone(zone).tzname() or "UTC"


def qty(value: Any) -> str:
    """A quantity: ``1,234``; a decimal one exactly (``2.5``); ``''`` for none."""
    if value is None:
        return ""
    if isinstance(value, Decimal):
        if value == value.to_integral_value():
            return f"{int(value):,}"
        return format(value.normalize(), "f")
    if isinstance(value, float):
        return f"{value:,.2f}".rstrip("0").rstrip(".")
    return f"{int(value):,}"


def delta(value: Any) -> str:
    """A change: ``+2``, ``-3``, ``0``; ``''`` for none."""
    if value is None:
        return ""
    if value > 0:
        return "+" + qty(value)
    if value < 0:
        return "-" + qty(-value)
    return "0"


def direction(value: Any) -> str:
    """The CSS class of a change: ``up``, ``down`` or ``flat``."""
    if value is None or value == 0:
        return "flat"
    return "up" if value > 0 else "down"


def number(value: Any) -> Any:
    """A quantity for the CSV: int as int, a decimal as a float (as ``--json`` has it)."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def word(value: Any) -> str:
    """A ledger word (outcome, status, trigger), cleaned: shown, never trusted."""
    return clean.clean(value, limit=WORD_LIMIT)


def css_word(value: Any) -> str:
    """A ledger word as a CSS class suffix: lower-case letters, digits and dashes only."""
    text = "".join(ch if ch.isascii() and ch.isalnum() else "-" for ch in str(value or "").lower())
    return text.strip("-")[:WORD_LIMIT] or "none"


def plural(count: int, one: str, many: str = "") -> str:
    return f"{count:,} {one if count == 1 else (many or one + 's')}"


class Texts:
    """Cleaned and HTML-escaped text for the rows the site writes itself, memoised for one build.

    A build shows the same names and messages thousands of times; cleaning each
    once keeps a year of runs fast. The memo lives as long as one build (a
    secret registered later is honoured by the next build).
    """

    def __init__(self) -> None:
        self._names: Dict[Any, str] = {}
        self._messages: Dict[Any, str] = {}
        self._words: Dict[Any, str] = {}

    def name(self, value: Any) -> str:
        """A customer, SKU, company, agreement or line, cleaned (``clean.name``) and escaped."""
        try:
            return self._names[value]
        except KeyError:
            out = self._names[value] = str(escape(clean.name(value)))
            return out
        except TypeError:  # unhashable: not a name the model has, but show it anyway
            return str(escape(clean.name(value)))

    def message(self, value: Any) -> str:
        """A message or fix, cleaned (``clean.message``: folded onto one line) and escaped."""
        try:
            return self._messages[value]
        except KeyError:
            out = self._messages[value] = str(escape(clean.message(value)))
            return out
        except TypeError:
            return str(escape(clean.message(value)))

    def word(self, value: Any) -> str:
        """A ledger word, cleaned and escaped."""
        try:
            return self._words[value]
        except KeyError:
            out = self._words[value] = str(escape(word(value)))
            return out
        except TypeError:
            return str(escape(word(value)))
