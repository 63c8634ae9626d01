"""Usage sources: where the real seat counts come from.

``[source] kind`` picks one of:

* ``csv``: a file (``path``, relative to the config file) with a header row
  naming ``customer``, ``sku`` and ``seats``, and optionally ``psa_company``.
  Other columns are ignored, so an exporter may add its own.
* ``json``: a file holding a list of objects with the same fields.
* ``command``: an argv list run without a shell, in the config file's
  directory, with a ``timeout`` (seconds, default 120). Its stdout is CSV or
  JSON per ``format``; without ``format`` a leading ``[`` or ``{`` means JSON.

The source is the one input that decides every write, so it is read strictly
and completely before the PSA is touched: any problem raises
:class:`~psabill.errors.AbortError` with one line naming the row and the value.
A UTF-8 byte-order mark, CRLF line endings and non-UTF-8 bytes are refused
rather than guessed at (spreadsheet exports are where they come from, and a
silently mangled customer name becomes an unmapped customer). Inputs are capped
at :data:`MAX_BYTES` so a runaway export cannot exhaust memory.

A source another user could have written is refused before it is read or run
(:func:`psabill.text.files.check_private`): the csv/json file, the command's
program when argv[0] is a path, and any file the command names (the script an
interpreter would run).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import threading
import time
from pathlib import Path
from typing import IO, Any, Callable, Collection, Dict, List, NamedTuple, Optional, Sequence, Tuple

from psabill.text import files as fsutil
from psabill.config.settings import SourceSettings
from psabill.errors import AbortError, ConfigError

MAX_BYTES = 50 * 1024 * 1024
MAX_SEATS = 1_000_000_000
REQUIRED_COLUMNS = ("customer", "sku", "seats")
OPTIONAL_COLUMNS = ("psa_company",)

_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_SEATS = re.compile(r"([+-]?)0*([0-9]+)")
# Control characters in a name would reach the email and the terminal verbatim.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class UsageRow(NamedTuple):
    customer: str
    sku: str
    seats: int
    psa_company: Optional[str] = None


def read(source: SourceSettings, skus: Collection[str], config_path: Path) -> List[UsageRow]:
    """Read the configured source; every row is valid, or AbortError is raised."""
    kind = source.kind
    if not kind:
        raise ConfigError(f"{config_path}: [source] kind is not set (csv, json or command)")
    if not skus:
        raise ConfigError(f"{config_path}: [products] is empty: map each SKU to a PSA product")
    if kind == "command":
        argv = list(source.command)
        if not argv:
            raise ConfigError(f"{config_path}: [source] kind = \"command\" needs command = [...]")
        check_command(argv, source.workdir)
        data = run_command(argv, cwd=source.workdir, timeout=source.timeout)
        origin = f"output of source command {_show_argv(argv)}"
        return parse(data, fmt=source.format, origin=origin, skus=skus)
    path = source.path
    if path is None:
        raise ConfigError(f"{config_path}: [source] kind = \"{kind}\" needs path = \"...\"")
    fsutil.check_private(path, "usage source", AbortError)
    return parse(read_capped(path, what="usage source"), fmt=kind, origin=f"usage source {path}", skus=skus)


def check_command(argv: Sequence[str], cwd: Path) -> None:
    """Refuse a source command whose program, or a file it names, another user could have written.

    argv[0] is checked when it is a path (a bare name is found on PATH, which is
    the admin's); every later argument that names an existing regular file
    (relative to ``cwd``) is checked too: that is the script ``sh export.sh`` or
    ``python3 export.py`` would run, and checking it costs one stat.
    """
    program = argv[0]
    if os.sep in program:
        fsutil.check_private(cwd / program, "source command", AbortError)
    for argument in argv[1:]:
        if not argument or argument.startswith("-") or "\0" in argument:
            continue
        candidate = cwd / argument
        try:
            regular = candidate.is_file()
        except (OSError, ValueError):
            continue
        if regular:
            fsutil.check_private(candidate, "file named by the source command", AbortError)


def read_capped(path: Path, *, what: str) -> bytes:
    """The file's bytes, refusing a missing file or one over :data:`MAX_BYTES`."""
    return fsutil.read_capped(path, MAX_BYTES, error=AbortError, what=what,
                              describe_limit=lambda limit: f"{limit // (1024 * 1024)} MB")


def parse(data: bytes, *, fmt: Optional[str], origin: str, skus: Collection[str]) -> List[UsageRow]:
    """Parse CSV or JSON bytes; ``fmt`` None sniffs the first non-blank byte."""
    if fmt is None:
        fmt = "json" if data.lstrip(b" \t\r\n")[:1] in (b"[", b"{") else "csv"
    if fmt == "json":
        return parse_json(data, origin=origin, skus=skus)
    return parse_csv(data, origin=origin, skus=skus)


def decode_text(data: bytes, *, origin: str, allow_crlf: bool = False) -> str:
    """UTF-8 text without BOM (and without CR unless ``allow_crlf``), or AbortError."""
    if data.startswith(_BOM):
        raise AbortError(f"{origin} has a UTF-8 byte-order mark; save without BOM")
    if data.startswith(_UTF16_BOMS):
        raise AbortError(f"{origin} is UTF-16 encoded; save it as UTF-8")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise AbortError(
            f"{origin} line {line}: byte 0x{data[exc.start]:02x} is not UTF-8; save the file as UTF-8"
        ) from None
    if not allow_crlf:
        cr = text.find("\r")
        if cr >= 0:
            line = text.count("\n", 0, cr) + 1
            if text.startswith("\n", cr + 1):
                raise AbortError(f"{origin} line {line} ends in CRLF; save with LF (Unix) line endings")
            raise AbortError(f"{origin} line {line} holds a carriage return; save with LF (Unix) line endings")
    return text


def parse_csv(data: bytes, *, origin: str, skus: Collection[str]) -> List[UsageRow]:
    rows = read_csv_records(data, origin=origin, required=REQUIRED_COLUMNS, optional=OPTIONAL_COLUMNS)
    check = _RowChecker(origin, skus, "line")
    return [check.row(line, record) for line, record in rows]


def read_csv_records(
    data: bytes, *, origin: str, required: Sequence[str], optional: Sequence[str] = ()
) -> List[Tuple[int, Dict[str, str]]]:
    """(line number, {column: value}) per non-blank record, known columns only.

    Shared with the mapping file reader so both refuse the same bad input the
    same way.
    """
    text = decode_text(data, origin=origin)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
        while header is not None and not any(cell.strip() for cell in header):
            header = next(reader, None)
        if header is None:
            raise AbortError(f"{origin} is empty; expected a header row {','.join(required)}")
        columns = [cell.strip().lower() for cell in header]
        index: Dict[str, int] = {}
        for position, name in enumerate(columns):
            if name in index and name in (*required, *optional):
                raise AbortError(f"{origin} line {reader.line_num}: column {name!r} appears twice in the header")
            index.setdefault(name, position)
        missing = [name for name in required if name not in index]
        if missing:
            raise AbortError(
                f"{origin} line {reader.line_num}: header lacks column(s) {', '.join(missing)}; "
                f"expected {','.join(required)}" + (f" (optional {','.join(optional)})" if optional else "")
            )
        wanted = [(name, index[name]) for name in (*required, *optional) if name in index]
        records: List[Tuple[int, Dict[str, str]]] = []
        for cells in reader:
            if not cells or (len(cells) == 1 and not cells[0].strip()):
                continue
            if len(cells) != len(columns):
                raise AbortError(
                    f"{origin} line {reader.line_num}: {len(cells)} field(s), but the header has {len(columns)}"
                )
            records.append((reader.line_num, {name: cells[pos] for name, pos in wanted}))
        return records
    except csv.Error as exc:
        raise AbortError(f"{origin} line {reader.line_num}: malformed CSV ({exc})") from None


def parse_json(data: bytes, *, origin: str, skus: Collection[str]) -> List[UsageRow]:
    # JSON whitespace may be CRLF without changing any value, so only the CSV
    # reader refuses it.
    text = decode_text(data, origin=origin, allow_crlf=True)
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AbortError(f"{origin} line {exc.lineno}: malformed JSON ({exc.msg})") from None
    except (ValueError, RecursionError) as exc:
        # Integers past Python's digit limit and absurd nesting land here.
        raise AbortError(f"{origin}: malformed JSON ({str(exc).splitlines()[0][:80]})") from None
    if not isinstance(document, list):
        raise AbortError(f"{origin}: expected a JSON list of {{customer, sku, seats}} objects")
    check = _RowChecker(origin, skus, "item")
    rows = []
    for number, item in enumerate(document, start=1):
        if not isinstance(item, dict):
            raise AbortError(f"{origin} item {number}: expected an object, got {_json_type(item)}")
        missing = [name for name in REQUIRED_COLUMNS if name not in item]
        if missing:
            raise AbortError(f"{origin} item {number}: missing field(s) {', '.join(missing)}")
        fields: Dict[str, Any] = {}
        for name in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS):
            value = item.get(name)
            if name == "seats" and isinstance(value, int) and not isinstance(value, bool):
                value = str(value)
            elif name == "psa_company" and value is None:
                value = ""
            elif not isinstance(value, str):
                raise AbortError(
                    f"{origin} item {number}: {name} must be "
                    f"{'an integer' if name == 'seats' else 'a string'}, got {_json_preview(value)}"
                )
            fields[name] = value
        rows.append(check.row(number, fields))
    return rows


class _RowChecker:
    """Validates one row at a time and remembers (customer, sku) pairs seen."""

    def __init__(self, origin: str, skus: Collection[str], unit: str) -> None:
        self.origin = origin
        self.skus = skus
        self.unit = unit
        self.seen: Dict[Tuple[str, str], int] = {}

    def fail(self, number: int, problem: str) -> AbortError:
        return AbortError(f"{self.origin} {self.unit} {number}: {problem}")

    def row(self, number: int, fields: Dict[str, str]) -> UsageRow:
        customer = fields["customer"].strip()
        sku = fields["sku"].strip()
        raw_seats = fields["seats"].strip()
        company = (fields.get("psa_company") or "").strip()
        if not customer:
            raise self.fail(number, "empty customer")
        for name, value in (("customer", customer), ("sku", sku), ("psa_company", company)):
            if _CONTROL.search(value):
                raise self.fail(number, f"{name} {_preview(value)} holds a control character")
        if sku not in self.skus:
            known = ", ".join(sorted(self.skus)[:10])
            raise self.fail(number, f"unknown SKU {_preview(sku)} (not a key of [products]: {known})")
        seats = self._seats(number, raw_seats)
        # Case-folded because name matching ignores case: "Acme" and "ACME"
        # would land on the same PSA line and one count would silently win.
        key = (customer.casefold(), sku)
        first = self.seen.get(key)
        if first is not None:
            raise self.fail(
                number, f"duplicate customer {_preview(customer)} with SKU {_preview(sku)} "
                f"(first at {self.unit} {first})"
            )
        self.seen[key] = number
        return UsageRow(customer, sku, seats, company or None)

    def _seats(self, number: int, raw: str) -> int:
        if not raw:
            raise self.fail(number, "empty seats")
        match = _SEATS.fullmatch(raw)
        if match is None:
            raise self.fail(number, f"seats {_preview(raw)} is not a whole number")
        sign, digits = match.groups()
        # Bounded before int(): a 5000-digit count would otherwise trip
        # Python's int-conversion limit with an unhelpful ValueError.
        value = int(digits) if len(digits) <= 10 else MAX_SEATS + 1
        if sign == "-" and value:
            raise self.fail(number, f"seats {_preview(raw)} is negative")
        if value > MAX_SEATS:
            raise self.fail(number, f"seats {_preview(raw)} is too large")
        return value


def run_command(argv: Sequence[str], *, cwd: Path, timeout: float) -> bytes:
    """The command's stdout (capped), or AbortError naming status, timeout or first stderr line."""
    shown = _show_argv(argv)
    try:
        proc = subprocess.Popen(
            list(argv),
            cwd=str(cwd),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            # Its own process group, so a timeout kills the helpers it spawned
            # too and nothing keeps our pipes open.
            start_new_session=True,
        )
    except FileNotFoundError:
        raise AbortError(f"source command {shown} not found") from None
    except PermissionError:
        raise AbortError(f"source command {shown} is not executable") from None
    except OSError as exc:
        raise AbortError(f"cannot start source command {shown}: {exc.strerror}") from None
    assert proc.stdout is not None and proc.stderr is not None
    deadline = time.monotonic() + timeout
    out = _Drain(proc.stdout, MAX_BYTES + 1, on_full=lambda: _kill(proc))
    err = _Drain(proc.stderr, 64 * 1024)
    try:
        proc.wait(timeout=timeout)
        # A background child that inherited stdout can hold the pipe open after
        # the command itself exits; its output is only complete at EOF.
        out.join(max(0.0, deadline - time.monotonic()))
        timed_out = out.alive()
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        if proc.returncode is None or out.alive():
            _kill(proc)
        proc.wait()
        out.join(5)
        err.join(5)
    if timed_out:
        raise AbortError(f"source command {shown} timed out after {timeout:g} s")
    if out.full:
        raise AbortError(f"source command {shown} wrote over the {MAX_BYTES // (1024 * 1024)} MB limit")
    if proc.returncode != 0:
        first = next((line.strip() for line in err.data().decode("utf-8", "replace").splitlines()
                      if line.strip()), "")
        status = (f"was killed by signal {-proc.returncode}" if proc.returncode < 0
                  else f"exited with status {proc.returncode}")
        raise AbortError(f"source command {shown} {status}" + (f": {_preview(first)}" if first else ""))
    return out.data()


class _Drain:
    """Reads a pipe on a thread so neither pipe can fill up and stall the child."""

    def __init__(self, pipe: IO[bytes], limit: int, on_full: Optional[Callable[[], None]] = None) -> None:
        self.pipe = pipe
        self.limit = limit
        self.on_full = on_full
        self.chunks: List[bytes] = []
        self.size = 0
        self.full = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while True:
                chunk = self.pipe.read1(65536)  # type: ignore[attr-defined]
                if not chunk:
                    return
                if self.size < self.limit:
                    self.chunks.append(chunk[: self.limit - self.size])
                    self.size += len(self.chunks[-1])
                    if self.size >= self.limit and self.on_full is not None:
                        self.full = True
                        self.on_full()
                        return
        except (OSError, ValueError):
            return
        finally:
            try:
                self.pipe.close()
            except OSError:
                pass

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)

    def alive(self) -> bool:
        return self.thread.is_alive()

    def data(self) -> bytes:
        return b"".join(self.chunks)


def _kill(proc: "subprocess.Popen[bytes]") -> None:
    try:
        os.killpg(proc.pid, 9)
    except (ProcessLookupError, PermissionError):
        try:
            proc.kill()
        except ProcessLookupError:
            pass


def _show_argv(argv: Sequence[str]) -> str:
    return repr(" ".join(argv)[:120])


def _preview(value: str) -> str:
    return repr(value if len(value) <= 60 else value[:57] + "...")


def _json_preview(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return _json_type(value)
    return _preview(json.dumps(value))


def _json_type(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            int: "a number", float: "a number", type(None): "null"}.get(type(value), "a value")
