"""Usage rows: parse CSV or JSON bytes strictly into (customer, SKU, seats) rows.

The source is the one input that decides every write, so it is read strictly
and completely before the PSA is touched: any problem raises
:class:`~psabill.errors.AbortError` with one line naming the row and the value.

What real exporters write is accepted: a UTF-8 byte-order mark and CRLF line
endings (Excel, and psabill's own CSV attachment). Names are put in Unicode
NFC, so a name exported from a Mac (decomposed accents) is the same name as
the PSA's, and duplicates are found after that normalization and case-folding.
What would mislead is refused: UTF-16, bytes that are not UTF-8, control
characters in a name, a JSON object with a key given twice, a seat count that
is not a whole number. A CSV whose last row has no line end is read, but
:attr:`Usage.unterminated` says so: the guard holds such a run, because a file
cut mid-row can turn 25 seats into 2.
"""

import csv
import hashlib
import io
import json
import re
import unicodedata
from types import MappingProxyType
from typing import Any, Collection, Dict, Iterator, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from psabill.errors import AbortError

MAX_BYTES = 50 * 1024 * 1024
MAX_SEATS = 1_000_000_000
REQUIRED_COLUMNS = ("customer", "sku", "seats")
OPTIONAL_COLUMNS = ("psa_company",)

_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_SEATS = re.compile(r"([+-]?)0*([0-9]+)")
# Control characters in a name would reach the email and the terminal; refused at the source.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_BARE_CR = re.compile(r"\r(?!\n)")


class UsageRow(NamedTuple):
    customer: str
    sku: str
    seats: int
    psa_company: Optional[str] = None


class Usage(NamedTuple):
    """What a source read: its rows and what psabill knows about the bytes they came from."""

    rows: List[UsageRow]
    origin: str  # "usage source /path/usage.csv", for messages
    digest: str = ""  # sha-256 of the bytes (or of the API answers), stored with the plan
    unterminated: bool = False  # the last row had no line end: the input may have been cut
    note: str = ""  # what the reader wants `check` to say, e.g. "2,000 managed companies"
    # Another key the mapping file may pin a row's customer by: folded customer -> that key (LastPass: the
    # managed company's id). Never mutated.
    aliases: Mapping[str, str] = MappingProxyType({})
    requests: int = 0  # HTTP requests the reader sent (LastPass): a run's api_requests counts them too


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def normalized(text: str) -> str:
    """A name as psabill compares it: NFC, surrounding whitespace dropped."""
    return unicodedata.normalize("NFC", text).strip()


def folded(text: str) -> str:
    """A name as psabill matches it: NFC and case-folded."""
    return unicodedata.normalize("NFC", text).strip().casefold()


def parse(data: bytes, *, fmt: Optional[str], origin: str, skus: Optional[Collection[str]]) -> Usage:
    """Parse CSV or JSON bytes; ``fmt`` None sniffs the first non-blank byte; ``skus`` None accepts any SKU."""
    body = data[len(_BOM):] if data.startswith(_BOM) else data
    if fmt is None:
        fmt = "json" if body.lstrip(b" \t\r\n")[:1] in (b"[", b"{") else "csv"
    if fmt == "json":
        return Usage(parse_json(data, origin=origin, skus=skus), origin, digest(data))
    rows = parse_csv(data, origin=origin, skus=skus)
    unterminated = bool(body.strip(b" \t\r\n")) and not body.rstrip(b" \t").endswith(b"\n")
    return Usage(rows, origin, digest(data), unterminated=unterminated and bool(rows))


def decode_text(data: bytes, *, origin: str) -> str:
    """UTF-8 text (a leading byte-order mark dropped), or AbortError naming the byte."""
    if data.startswith(_UTF16_BOMS):
        raise AbortError(f"{origin} is UTF-16 encoded; save it as UTF-8")
    if data.startswith(_BOM):
        data = data[len(_BOM):]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise AbortError(
            f"{origin} line {line}: byte 0x{data[exc.start]:02x} is not UTF-8; save the file as UTF-8"
        ) from None


def parse_csv(data: bytes, *, origin: str, skus: Optional[Collection[str]]) -> List[UsageRow]:
    # Record by record: a row is checked as it is read, and only the rows are kept (20,000 customers'
    # records as dicts would cost the run more than its rows do).
    check = RowChecker(origin, skus, "line")
    return [check.row(line, record) for line, record in
            iter_csv_records(data, origin=origin, required=REQUIRED_COLUMNS, optional=OPTIONAL_COLUMNS)]


def read_csv_records(
    data: bytes, *, origin: str, required: Sequence[str], optional: Sequence[str] = ()
) -> List[Tuple[int, Dict[str, str]]]:
    """(line number, {column: value}) per non-blank record, known columns only.

    Shared with the mapping file reader so both refuse the same bad input the same way.
    """
    return list(iter_csv_records(data, origin=origin, required=required, optional=optional))


def iter_csv_records(
    data: bytes, *, origin: str, required: Sequence[str], optional: Sequence[str] = ()
) -> Iterator[Tuple[int, Dict[str, str]]]:
    """:func:`read_csv_records`, one record at a time (the header is checked before the first)."""
    text = decode_text(data, origin=origin)
    stray = _BARE_CR.search(text)
    if stray is not None:  # CRLF is a line end; a lone CR would split a row where no line ends
        line = text.count("\n", 0, stray.start()) + 1
        raise AbortError(f"{origin} line {line} holds a carriage return; save with LF (Unix) line endings")
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
        for cells in reader:
            if not cells or (len(cells) == 1 and not cells[0].strip()):
                continue
            if len(cells) != len(columns):
                raise AbortError(
                    f"{origin} line {reader.line_num}: {len(cells)} field(s), but the header has {len(columns)}"
                )
            yield reader.line_num, {name: cells[pos] for name, pos in wanted}
    except csv.Error as exc:
        raise AbortError(f"{origin} line {reader.line_num}: malformed CSV ({exc})") from None


def _unique_keys(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
    seen: Dict[str, Any] = {}
    for name, value in pairs:
        if name in seen:
            raise _DuplicateKey(name)
        seen[name] = value
    return seen


class _DuplicateKey(Exception):
    pass


def load_json(text: str, origin: str) -> Any:
    """JSON with every object's keys unique; AbortError naming the line, or the key given twice."""
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except _DuplicateKey as exc:
        raise AbortError(f"{origin}: key {exc.args[0]!r} is given twice in one object; give it once") from None
    except json.JSONDecodeError as exc:
        raise AbortError(f"{origin} line {exc.lineno}: malformed JSON ({exc.msg})") from None
    except RecursionError:  # arrays or objects nested thousands deep: the decoder recurses once per level
        raise AbortError(f"{origin}: malformed JSON (nested too deeply to be usage rows)") from None
    except ValueError as exc:  # integers past Python's digit limit
        raise AbortError(f"{origin}: malformed JSON ({str(exc).splitlines()[0][:80] or 'not JSON'})") from None


def parse_json(data: bytes, *, origin: str, skus: Optional[Collection[str]]) -> List[UsageRow]:
    document = load_json(decode_text(data, origin=origin), origin)
    if not isinstance(document, list):
        raise AbortError(f"{origin}: expected a JSON list of {{customer, sku, seats}} objects")
    check = RowChecker(origin, skus, "item")
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


class RowChecker:
    """Validates one row at a time and remembers the (customer, SKU) pairs seen, normalized."""

    def __init__(self, origin: str, skus: Optional[Collection[str]], unit: str) -> None:
        self.origin = origin
        self.skus = skus
        self.unit = unit
        self.seen: Dict[Tuple[str, str], int] = {}

    def fail(self, number: int, problem: str) -> AbortError:
        return AbortError(f"{self.origin} {self.unit} {number}: {problem}")

    def row(self, number: int, fields: Dict[str, str]) -> UsageRow:
        customer = normalized(fields["customer"])
        sku = normalized(fields["sku"])
        raw_seats = fields["seats"].strip()
        company = normalized(fields.get("psa_company") or "")
        if not customer:
            raise self.fail(number, "empty customer")
        for name, value in (("customer", customer), ("sku", sku), ("psa_company", company)):
            if _CONTROL.search(value):
                raise self.fail(number, f"{name} {preview(value)} holds a control character")
        if self.skus is not None and sku not in self.skus:
            known = ", ".join(sorted(self.skus)[:10])
            raise self.fail(number, f"unknown SKU {preview(sku)} (not a key of [products]: {known})")
        seats = self._seats(number, raw_seats)
        # Normalized and case-folded because name matching is: "Acme" and "ACME" (or "Zürich" in
        # composed and decomposed form) would land on the same PSA line and one count would silently win.
        key = (folded(customer), sku)
        first = self.seen.get(key)
        if first is not None:
            raise self.fail(
                number, f"duplicate customer {preview(customer)} with SKU {preview(sku)} "
                f"(first at {self.unit} {first}; names are compared ignoring case and accents' encoding)"
            )
        self.seen[key] = number
        return UsageRow(customer, sku, seats, company or None)

    def _seats(self, number: int, raw: str) -> int:
        if not raw:
            raise self.fail(number, "empty seats")
        match = _SEATS.fullmatch(raw)
        if match is None:
            raise self.fail(number, f"seats {preview(raw)} is not a whole number")
        sign, digits = match.groups()
        # Bounded before int(): a 5000-digit count would otherwise trip
        # Python's int-conversion limit with an unhelpful ValueError.
        value = int(digits) if len(digits) <= 10 else MAX_SEATS + 1
        if sign == "-" and value:
            raise self.fail(number, f"seats {preview(raw)} is negative")
        if value > MAX_SEATS:
            raise self.fail(number, f"seats {preview(raw)} is too large")
        return value


def preview(value: str) -> str:
    return repr(value if len(value) <= 60 else value[:57] + "...")


def _json_preview(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return _json_type(value)
    return preview(json.dumps(value))


def _json_type(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            int: "a number", float: "a number", type(None): "null"}.get(type(value), "a value")
