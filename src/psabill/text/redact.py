"""What every text leaving the process passes through: secrets out, controls escaped.

Policy
======

*Scrub before anything else.* stderr, the log, the history, the email,
``--json`` and ``check`` output must never carry a credential or a piece of
one. A text is scrubbed on its **full length first** and only then escaped,
folded onto one line and cut: cutting first can slice a secret (or one of its
encoded forms) so that the remainder no longer matches and 19 of 20 characters
escape. :func:`one_line` is the one place that makes an outbound one-line text
and does it in that order.

*Secrets are registered where they are resolved.* :mod:`psabill.config.secrets`
registers every credential it resolves with the module registry
(:func:`register`), and the PSA clients register the values they build from
them (the ConnectWise Basic token), before any request is sent, so no text can
leave the process before the redactor knows the secret. Every output edge then
calls :func:`scrub` or :func:`one_line`, which share that one registry.

*Encoded forms count.* For each secret, :class:`Redactor` removes

* the raw value, and every per-character mix of its escapings: URL
  percent-encoding of the UTF-8 bytes (``quote``, ``quote_plus`` with ``+`` for
  a space, either hex case, and encoders that leave some characters bare), the
  JSON string escapes (``\\"``, ``\\\\``, ``\\/``, ``\\uXXXX`` in either case,
  surrogate pairs), Python's ``\\'`` and the usual HTML character references;
* its base64 (standard and URL-safe, padded or not) at **any byte alignment**
  inside a larger blob. For alignments 0, 1 and 2 the secret is encoded behind
  that many filler bytes and only the characters fully determined by the
  secret's own bits are kept (the "core"); a core found inside a run of
  base64-alphabet characters redacts the **whole run**. This catches the
  ConnectWise Basic token ``base64(company+public:private)``, SMTP ``AUTH
  PLAIN`` blobs ``base64(authzid\\0user\\0password)`` whatever the user name's
  length, and ``AUTH LOGIN``'s ``base64(password)``. A ``+`` or ``/`` of the
  blob may itself appear percent-encoded or JSON-escaped.

Every match becomes ``[redacted]``; overlapping or touching matches merge into
one marker. Values shorter than :data:`MIN_SECRET_CHARS` characters are not
registered: a three-character "secret" would shred ordinary words, numbers
and base64 everywhere it occurs, and is no secret worth the name (its base64
core would be two or three characters long and match nearly any blob).
Not covered: base64 wrapped across lines (MIME bodies), hex dumps, and
encodings nested twice (a percent-encoded percent-encoding).

*Controls are shown, not obeyed.* :func:`neutralize` escapes the characters a
terminal, log viewer or mail client would act on instead of show: Unicode
categories Cc (C0, DEL and the C1 controls such as ``\\x9b``), Cf (format
characters, including the bidirectional overrides and isolates U+202A-202E,
U+2066-2069, U+200E/F, and invisible characters such as U+200B and U+FEFF),
Cs (lone surrogates) and the line/paragraph separators Zl/Zp. They become
``\\x1b``, ``\\u202e`` or ``\\U000e0001`` (newline and carriage return as
``\\n`` and ``\\r``). A tab is kept (it moves the cursor but
can neither hide nor rewrite text), and so are the two joiners U+200C/U+200D
between non-ASCII characters and emoji tag sequences (a black flag followed by
tags and CANCEL TAG): emoji, accents and other scripts stay intact. The escaping
is for display and is not reversible (a literal backslash is left as it is).
"""

from __future__ import annotations

import binascii
import re
import threading
from typing import Iterable, List, Optional, Pattern, Tuple
from urllib.parse import unquote

REDACTED = "[redacted]"
MIN_SECRET_CHARS = 4
ELLIPSIS = "\u2026"

# -- scrubbing ------------------------------------------------------------

_HEX = "0123456789abcdef"
_RUN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_")
# A base64 run: the alphabet of both variants, '+' and '/' possibly percent-encoded
# or JSON-escaped, then up to two padding characters (possibly percent-encoded).
_RUN_TAIL = re.compile(r"(?:[A-Za-z0-9+/_\-]|%2[BbFf]|\\/)*(?:=|%3[Dd]){0,2}")
_HTML_NAMED = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&apos;"}


def _anycase(text: str) -> str:
    """A regex matching ``text`` with its ASCII letters in either case (for hex digits)."""
    out = []
    for ch in text:
        if ch.isascii() and ch.isalpha():
            out.append(f"[{ch.upper()}{ch.lower()}]")
        else:
            out.append(re.escape(ch))
    return "".join(out)


def _json_escape(ch: str) -> str:
    """The escape a JSON encoder with ``ensure_ascii`` writes for ``ch`` ('' if it writes it bare)."""
    special = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
    if ch in special:
        return special[ch]
    cp = ord(ch)
    if cp < 0x20 or cp > 0x7E:
        if cp > 0xFFFF:
            v = cp - 0x10000
            return f"\\u{0xD800 + (v >> 10):04x}\\u{0xDC00 + (v & 0x3FF):04x}"
        return f"\\u{cp:04x}"
    return ""


def _char_pattern(ch: str) -> str:
    """Every spelling of one secret character an outbound text may use."""
    forms: List[str] = [re.escape(ch)]
    raw = ch.encode("utf-8", "surrogatepass")
    forms.append("".join("%" + _anycase(f"{b:02X}") for b in raw))  # percent-encoding
    if ch == " ":
        forms.append(r"\+")  # quote_plus / form encoding
    escaped = _json_escape(ch)
    if escaped:
        forms.append(_anycase(escaped) if escaped.startswith("\\u") else re.escape(escaped))
    if ch == "/":
        forms.append(r"\\/")  # JSON may escape the solidus
    if ch == "'":
        forms.append(r"\\'")  # Python repr
    if ch in _HTML_NAMED:
        forms.append(re.escape(_HTML_NAMED[ch]))
        forms.append(f"&#0*{ord(ch)};")
        forms.append("&#[Xx]0*" + _anycase(f"{ord(ch):x}") + ";")
    unique = list(dict.fromkeys(forms))
    return unique[0] if len(unique) == 1 else "(?:" + "|".join(unique) + ")"


def _literal_pattern(secret: str) -> str:
    """The secret, each character in any of its spellings."""
    return "".join(_char_pattern(ch) for ch in secret)


def _b64_cores(secret: str) -> List[str]:
    """For alignments 0-2: the base64 characters fully determined by the secret's bytes."""
    data = secret.encode("utf-8", "surrogatepass")
    cores = []
    for shift in range(3):
        blob = b"\0" * shift + data
        blob += b"\0" * (-len(blob) % 3)
        encoded = binascii.b2a_base64(blob, newline=False).decode("ascii")
        start = -(-8 * shift // 6)  # ceil: the first character with no filler bits
        end = 8 * (shift + len(data)) // 6  # floor: the last character with no following bits
        core = encoded[start:end]
        if len(core) >= MIN_SECRET_CHARS:
            cores.append(core)
    return cores


def _core_pattern(core: str) -> str:
    """A standard-base64 core, also in the URL-safe alphabet and with '+' or '/' escaped."""
    out = []
    for ch in core:
        if ch == "+":
            out.append(r"(?:\+|-|%2[Bb])")
        elif ch == "/":
            out.append(r"(?:/|_|%2[Ff]|\\/)")
        else:
            out.append(ch)
    return "".join(out)


def _run_start(text: str, index: int) -> int:
    """Where the base64 run containing ``text[index]`` begins."""
    i = index
    while i > 0:
        if i >= 3 and text[i - 3] == "%" and text[i - 2] == "2" and text[i - 1] in "BbFf":
            i -= 3
        elif i >= 2 and text[i - 2] == "\\" and text[i - 1] == "/":
            i -= 2
        elif text[i - 1] in _RUN_CHARS:
            i -= 1
        else:
            break
    return i


_State = Tuple[Optional[Pattern[str]], Tuple[Tuple[Pattern[str], bool], ...]]


class Redactor:
    """Replaces registered secrets, and their encoded forms, with ``[redacted]``."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._secrets: List[str] = []
        self._state: _State = (None, ())
        self.add(*secrets)

    @property
    def secrets(self) -> Tuple[str, ...]:
        """The secrets this redactor removes (the accepted ones)."""
        return tuple(self._secrets)

    def add(self, *secrets: str) -> None:
        """Register more secrets; values shorter than MIN_SECRET_CHARS are ignored."""
        with self._lock:
            fresh = [s for s in dict.fromkeys(secrets) if isinstance(s, str)
                     and len(s) >= MIN_SECRET_CHARS and s not in self._secrets]
            if not fresh:
                return
            self._secrets.extend(fresh)
            self._state = self._compile(self._secrets)

    def clear(self) -> None:
        """Forget every secret."""
        with self._lock:
            self._secrets = []
            self._state = (None, ())

    @staticmethod
    def _compile(secrets: List[str]) -> _State:
        parts: List[Tuple[int, str, bool]] = []
        for secret in secrets:
            parts.append((len(secret), _literal_pattern(secret), False))
            for core in dict.fromkeys(_b64_cores(secret)):
                parts.append((len(core), _core_pattern(core), True))
        parts.sort(key=lambda p: -p[0])
        each = tuple((re.compile(source), is_b64) for _, source, is_b64 in parts)
        combined = re.compile("|".join(f"(?:{source})" for _, source, _ in parts))
        return combined, each

    def scrub(self, text: str) -> str:
        """``text`` with every secret and encoded form of one replaced by [redacted]."""
        combined, each = self._state
        if combined is None or not text:
            return text
        spans: List[Tuple[int, int]] = []
        run: Tuple[int, int] = (-1, -1)
        pos = 0
        search = combined.search
        while True:
            hit = search(text, pos)
            if hit is None:
                break
            at = hit.start()
            # The alternation names the first alternative that matches here; another may
            # match at the same place and reach further, so try them all at this spot.
            for pattern, is_b64 in each:
                m = pattern.match(text, at)
                if m is None:
                    continue
                start, end = m.span()
                if is_b64:
                    if not run[0] <= start < run[1]:
                        tail = _RUN_TAIL.match(text, end)  # all optional: always matches
                        run_end = tail.end() if tail is not None else end
                        run = (_run_start(text, start), run_end)
                    start, end = run
                if end > start:
                    spans.append((start, end))
            pos = at + 1
        if not spans:
            return text
        spans.sort()
        out: List[str] = []
        last = 0
        cur_start, cur_end = spans[0]
        for start, end in spans[1:]:
            if start <= cur_end:
                cur_end = max(cur_end, end)
                continue
            out.append(text[last:cur_start])
            out.append(REDACTED)
            last = cur_end
            cur_start, cur_end = start, end
        out.append(text[last:cur_start])
        out.append(REDACTED)
        out.append(text[cur_end:])
        return "".join(out)


_registry = Redactor()


def register(*secrets: str) -> None:
    """Add secrets to the process-wide redactor every output edge shares."""
    _registry.add(*(s for s in secrets if s))


def scrub(text: str) -> str:
    """``text`` scrubbed of every registered secret and its encoded forms."""
    return _registry.scrub(text)


def clear() -> None:
    """Forget every registered secret (for tests)."""
    _registry.clear()


def registry() -> Redactor:
    """The process-wide redactor."""
    return _registry


# -- URLs ----------------------------------------------------------------------------

_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/?#@\s:]*):(?P<password>[^/?#@\s]*)@")
_PASSWORD_PARAM = re.compile(r"(?P<key>(?:^|[?&;])password=)(?P<value>[^&#\s]*)", re.IGNORECASE)


def url_passwords(url: str) -> List[str]:
    """The passwords a URL carries: its userinfo password, and ``password=`` query values, raw and decoded."""
    found: List[str] = []
    for match in _USERINFO.finditer(url):
        found.append(match.group("password"))
    query = url.split("?", 1)[1] if "?" in url else ""
    for match in _PASSWORD_PARAM.finditer("?" + query if query else ""):
        found.append(match.group("value"))
    out: List[str] = []
    for value in found:
        for form in (value, unquote(value, errors="replace")):
            if form and form not in out:
                out.append(form)
    return out


def register_url(url: str) -> None:
    """Register every password ``url`` carries, so no output can show it."""
    register(*url_passwords(url))


def mask_url(text: str) -> str:
    """``text`` with every URL's userinfo password and ``password=`` value shown as ``***``.

    Works on any text, however malformed the URL (a bad %-escape included): it
    never decodes what it masks.
    """
    text = _USERINFO.sub(lambda m: f"{m.group('scheme')}{m.group('user')}:***@", text)
    return _PASSWORD_PARAM.sub(lambda m: f"{m.group('key')}***", text)
