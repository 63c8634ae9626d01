"""The leak checker: no secret, nor any 12-character piece of one, in anything psabill wrote.

Issue 23's rule: a secret never reaches an output, the log, the ledger, the
email or ``--json``, in any encoding. :class:`Leaks` knows the secrets and
every needle they make:

* the secret itself, and every 12-character piece of it (a secret of 12
  characters or fewer is one piece);
* each piece as it is, percent-encoded (``quote`` and ``quote_plus``, upper
  and lower hex) and base64-encoded (standard and URL-safe alphabets, at each
  of the three byte alignments, so a piece inside a larger blob such as a
  Basic token or an SMTP ``AUTH PLAIN`` is found too: only the base64
  characters fully determined by the piece's own bytes are searched).

It searches texts handed to it (stdout, stderr, ``--json``, which is also
decoded, so JSON escapes hide nothing) and the files under a directory: every
SQLite database row by row (and its raw bytes, WAL included), every ``.eml``
raw and with each MIME part and header decoded, and every other file as text.
It is written apart from :mod:`psabill.text.redact` on purpose: the checker
must not share the redactor's blind spots.
"""

from __future__ import annotations

import base64
import email
import email.header
import email.policy
import json
import re
import sqlite3
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple
from urllib.parse import quote, quote_plus

PIECE = 12


def pieces(secret: str, size: int = PIECE) -> List[str]:
    """The secret and every ``size``-character piece of it."""
    if len(secret) <= size:
        return [secret]
    return list(dict.fromkeys([secret] + [secret[i:i + size] for i in range(len(secret) - size + 1)]))


def _base64_cores(piece: str) -> List[str]:
    """The base64 characters fully determined by ``piece``'s bytes, at byte alignments 0, 1 and 2."""
    data = piece.encode("utf-8", "surrogatepass")
    cores = []
    for shift in range(3):
        blob = b"\0" * shift + data
        blob += b"\0" * (-len(blob) % 3)
        encoded = base64.b64encode(blob).decode("ascii")
        start = -(-8 * shift // 6)
        end = 8 * (shift + len(data)) // 6
        core = encoded[start:end]
        if len(core) >= 8:
            cores += [core, core.replace("+", "-").replace("/", "_")]
    return cores


def needles(secret: str) -> Dict[str, str]:
    """needle -> what it is (for the failure message)."""
    found: Dict[str, str] = {}
    for number, piece in enumerate(pieces(secret)):
        label = "the secret" if number == 0 else f"piece {piece!r}"
        for form, needle in (("plain", piece), ("percent", quote(piece, safe="")),
                             ("percent", quote_plus(piece, safe="")),
                             ("percent-lower", _lower_hex(quote(piece, safe="")))):
            found.setdefault(needle, f"{label} ({form})")
        for core in _base64_cores(piece):
            found.setdefault(core, f"{label} (base64)")
    return found


def _lower_hex(text: str) -> str:
    return re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), text)


class Leaks:
    """The secrets to look for; :meth:`found` lists every leak in a set of texts and files."""

    def __init__(self, *secrets: Any) -> None:
        self.secrets = [str(s) for s in secrets if s is not None and str(s)]
        self._needles: Dict[str, str] = {}
        for secret in self.secrets:
            for needle, what in needles(secret).items():
                self._needles.setdefault(needle, f"{what} of {secret[:3]}...")

    def in_text(self, where: str, text: str) -> List[str]:
        """Each leak in ``text`` as "where: what"."""
        hits = [f"{where}: {what}" for needle, what in self._needles.items() if needle in text]
        decoded = _json_strings(text)
        if decoded is not None:
            hits += [f"{where} (JSON decoded): {what}" for needle, what in self._needles.items() if needle in decoded]
        return hits

    def in_file(self, path: Path) -> List[str]:
        try:
            raw = path.read_bytes()
        except OSError:
            return []
        texts: List[Tuple[str, str]] = [(str(path), raw.decode("utf-8", "replace"))]
        if raw.startswith(b"SQLite format 3") and not path.name.endswith(("-wal", "-shm", "-journal")):
            texts.append((f"{path} (rows)", _sqlite_rows(path)))
        if path.suffix == ".eml":
            texts.append((f"{path} (decoded)", _email_text(raw)))
        hits: List[str] = []
        for where, text in texts:
            hits += self.in_text(where, text)
        return hits

    def found(self, *, outputs: Iterable[Tuple[str, str]] = (), roots: Sequence[Path] = (),
              skip: Sequence[Path] = ()) -> List[str]:
        """Leaks in ``outputs`` ((name, text) pairs) and in every file under ``roots``, but ``skip``
        (the config and the secret files, which hold the secret on purpose)."""
        if not self.secrets:
            return []
        hits: List[str] = []
        for name, text in outputs:
            hits += self.in_text(name, text or "")
        skipped = {Path(p).resolve() for p in skip}
        for root in roots:
            if not root.exists():
                continue
            for path in sorted(root.rglob("*")) if root.is_dir() else [root]:
                try:
                    regular = path.is_file() and not path.is_symlink()
                except OSError:
                    continue
                if regular and path.resolve() not in skipped:
                    hits += self.in_file(path)
        return hits


def assert_no_leak(*secrets: Any, outputs: Iterable[Tuple[str, str]] = (), roots: Sequence[Path] = (),
                   skip: Sequence[Path] = ()) -> None:
    hits = Leaks(*secrets).found(outputs=outputs, roots=roots, skip=skip)
    assert not hits, "secret leaked:\n" + "\n".join(hits[:20])


def outputs_of(name: str, result: Any) -> List[Tuple[str, str]]:
    """(name, text) for a CliRunner result or a CompletedProcess: stdout and stderr."""
    out: List[Tuple[str, str]] = []
    for stream in ("stdout", "stderr", "output"):
        try:
            text = getattr(result, stream)
        except (ValueError, AttributeError):  # click < 8.2 without a separate stderr
            continue
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        if text:
            out.append((f"{name} {stream}", text))
    return out


def _json_strings(text: str) -> Optional[str]:
    """Every string (keys included) of ``text`` if it is JSON, joined; else None."""
    stripped = text.strip()
    if not stripped.startswith(("{", "[")):
        return None
    try:
        data = json.loads(stripped)
    except ValueError:
        return None
    out: List[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                out.append(str(k))
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif value is not None:
            out.append(str(value))

    walk(data)
    return "\n".join(out)


def _sqlite_rows(path: Path) -> str:
    out: List[str] = []
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        return ""
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for row in conn.execute(f'SELECT * FROM "{table}"'):
                out.append(" | ".join("" if v is None else (v.decode("utf-8", "replace") if isinstance(v, bytes)
                                                            else str(v)) for v in row))
    except sqlite3.Error as exc:
        out.append(f"(unreadable: {exc})")
    finally:
        conn.close()
    return "\n".join(out)


def _email_text(raw: bytes) -> str:
    """The message's headers (RFC 2047 decoded) and every part's decoded payload."""
    message = email.message_from_bytes(raw, policy=email.policy.default)
    out: List[str] = []
    for part in message.walk():
        for name, value in part.items():
            out.append(f"{name}: {value}")
        if part.is_multipart():
            continue
        payload = part.get_payload(decode=True) or b""
        out.append(payload.decode("utf-8", "replace"))
    return "\n".join(out)
