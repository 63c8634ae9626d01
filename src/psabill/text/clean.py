"""The one text cleaner: every text that leaves psabill is shown, never obeyed.

Names, SKUs and messages come from outside (a usage source, a PSA, LastPass)
and reach a terminal, the log, both parts of the email, the CSV attachment,
``history show --csv``, the history site and ``--json``. Each of those goes
through this module, so they all agree.

Policy, in the order it is applied:

1. **Secrets out.** Every registered secret, in any encoding
   (:mod:`psabill.text.redact`), becomes ``[redacted]``, on the full text
   before anything else can cut or fold it.
2. **Controls escaped.** Unicode categories Cc (C0, DEL and the C1 controls
   such as ``\\x9b``, the 8-bit CSI), Cf (format characters: the bidirectional
   overrides and isolates U+202A-202E and U+2066-2069, the marks U+200E/F,
   invisible U+200B and U+FEFF, tags), Cs (lone surrogates) and the separators
   Zl/Zp become visible escapes: ``\\x1b``, ``\\u202e``, ``\\U000e0001``, with
   ``\\n``, ``\\r`` and ``\\t`` for newline, carriage return and tab. An ANSI
   escape sequence therefore shows as ``\\x1b[31m``: inert. Joiners between
   letters or emoji (U+200C/U+200D) and emoji tag sequences are kept, so
   scripts and emoji stay intact. With ``fold``, runs of whitespace (newlines
   included) become one space first: that is for messages, where a line break
   carries no meaning; names keep every character, escaped.
3. **Cut.** With ``limit``, the result is cut to that many characters, an
   ellipsis included. The cut comes last, so it never leaves part of a secret.

:func:`cell` adds the spreadsheet rule: a text cell that a spreadsheet would
take for a formula (it starts with ``=``, ``+``, ``-`` or ``@``) gets a
leading ``'``; plain integers such as a ``-5`` change stay numbers.
:func:`json_text` is the JSON edge: RFC 8259 lets any character be written as
``\\uXXXX``, and the characters of rule 2 are, so a terminal that shows
``--json`` cannot be steered either.
"""

from __future__ import annotations

import json
import re
from typing import Any, Optional, Pattern

from psabill.text import redact

ELLIPSIS = "\u2026"

#: Names are cut to this many characters in the email and on the site's lists (the CSV keeps them whole).
NAME_LIMIT = 120
#: Messages (a PSA's error, a reason, which may quote a name) are cut to this many in the email (the CSV
#: and ``history show`` keep them whole).
MESSAGE_LIMIT = 300

# Cc, Cf, Cs, Zl and Zp as of Unicode 14 (tests/test_text.py checks this against the running
# Python), widened to the Egyptian format controls Unicode 15 adds (U+13439-1343F).
_CONTROL_RANGES = (
    "\x00-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e"
    "\u200b\u200e\u200f\u2028-\u202e\u2060-\u206f\ud800-\udfff\ufeff\ufff9-\ufffb"
    "\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
    "\U000e0001\U000e0020-\U000e007f"
)
_JOINERS = "\u200c\u200d"
_KEEP = (
    r"(?P<keep>\U0001F3F4[\U000E0020-\U000E007E]{1,32}\U000E007F"  # emoji tag sequence (subdivision flags)
    r"|(?<=[^\x00-\x9f])[" + _JOINERS + r"](?=[^\x00-\x9f]))"  # a joiner inside a word or emoji sequence
)
_ESCAPE: Pattern[str] = re.compile(_KEEP + f"|[{_CONTROL_RANGES}{_JOINERS}]")
_ANY_CONTROL: Pattern[str] = re.compile(f"[{_CONTROL_RANGES}{_JOINERS}]")
# What json.dumps leaves raw inside strings: everything above but C0 (which it escapes itself, and
# whose newline it uses for indentation).
_JSON_RAW: Pattern[str] = re.compile(f"[{_CONTROL_RANGES[len(chr(0) + '-' + chr(0x1f)):]}{_JOINERS}]")
_NAMED = {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}
FORMULA_STARTS = ("=", "+", "-", "@")
_INTEGER = re.compile(r"[+-]?[0-9]+\Z")


def _escape(match: "re.Match[str]") -> str:
    if match.group("keep") is not None:
        return match.group(0)
    cp = ord(match.group(0))
    if cp in _NAMED:
        return _NAMED[cp]
    if cp < 0x100:
        return f"\\x{cp:02x}"
    if cp < 0x10000:
        return f"\\u{cp:04x}"
    return f"\\U{cp:08x}"


def clean(value: Any, *, limit: Optional[int] = None, fold: bool = False, lines: bool = False) -> str:
    """``value`` as one inert line: secrets out, controls escaped, optionally folded and cut (see the policy).

    With ``lines`` (a traceback in the log), its newlines are kept and every line is cleaned."""
    text = redact.scrub("" if value is None else str(value))
    if fold:
        text = " ".join(text.split())
    if lines:
        text = "\n".join(_ESCAPE.sub(_escape, part) for part in text.split("\n"))
    else:
        text = _ESCAPE.sub(_escape, text)
    if fold:  # escaping can join pieces that spell a secret; scrub once more
        text = redact.scrub(text)
    return cut(text, limit)


def cut(text: str, limit: Optional[int]) -> str:
    """``text`` cut to ``limit`` characters, the ellipsis included."""
    if limit is None or len(text) <= limit:
        return text
    if limit <= 0:
        return ""
    return text[: limit - 1].rstrip() + ELLIPSIS


def name(value: Any) -> str:
    """A customer, SKU or company name for a list in the email or on the site: cleaned and cut at NAME_LIMIT."""
    return clean(value, limit=NAME_LIMIT)


def message(value: Any, limit: Optional[int] = None) -> str:
    """A message (a PSA's error text, a reason): cleaned and folded onto one line."""
    return clean(value, fold=True, limit=limit)


def brief(value: Any) -> str:
    """A message for a list in the email or on the site: cleaned, folded and cut at MESSAGE_LIMIT."""
    return clean(value, fold=True, limit=MESSAGE_LIMIT)


def cell(value: Any) -> Any:
    """One CSV cell: a number stays a number; text is cleaned (never cut) and never a spreadsheet formula."""
    if value is None:
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    text = clean(value)
    if text.startswith(FORMULA_STARTS) and not _INTEGER.match(text):
        text = "'" + text
    return text


def json_text(data: Any, *, indent: Optional[int] = 2) -> str:
    """``data`` as JSON whose strings show rule 2's characters as ``\\uXXXX`` and hold no registered secret."""
    text = json.dumps(data, indent=indent, ensure_ascii=False, default=str)
    text = _JSON_RAW.sub(lambda m: "".join(f"\\u{u:04x}" for u in _utf16(m.group(0))), text)
    return redact.scrub(text)


def _utf16(ch: str) -> list:
    cp = ord(ch)
    if cp < 0x10000:
        return [cp]
    v = cp - 0x10000
    return [0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF)]


def has_control(text: str) -> bool:
    """Whether ``text`` holds a character rule 2 escapes."""
    return _ANY_CONTROL.search(text) is not None
