"""Usage sources: CSV, JSON and command, and every way they can be wrong.

A bad source must abort the run before any PSA write with one line naming the
row and the value, so most tests pin the exact message.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
import threading
from typing import Any, Dict, List, Optional

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from psabill.config import readiness
from psabill.config.settings import Settings as Config
from psabill.errors import AbortError, ConfigError
from psabill.sources import command as source_command
from psabill.sources import files as source_files
from psabill.sources import rows as sources
from psabill.sources.rows import UsageRow
from psabill.sources import reader
from psabill.sources.rows import Usage
from support.env import read_source, settings_for

PRODUCTS = {"LastPass": "LP-STD", "LastPass+MFA": "LP-MFA"}


def make_cfg(tmp_path: Path, source: Dict[str, Any], products: Optional[Dict[str, str]] = None) -> Config:
    data = {"source": source, "products": PRODUCTS if products is None else products}
    path = tmp_path / "conf" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    return settings_for(path, data)


def write_old_bytes(path: Path, content: bytes) -> None:
    """Write a source as an exporter that finished a while ago left it (no 2 s settle wait)."""
    path.write_bytes(content)
    os.chmod(path, 0o600)
    os.utime(path, (1_000_000_000, 1_000_000_000))


def csv_cfg(tmp_path: Path, content: bytes, name: str = "usage.csv") -> Config:
    cfg = make_cfg(tmp_path, {"kind": "csv", "path": name})
    write_old_bytes(cfg.path.parent / name, content)
    return cfg


def reader_of(settings: Config) -> Usage:
    """The whole Usage a run reads (rows and what is known about the bytes)."""
    return reader(settings.source.kind)(settings.source, set(settings.product_map), settings.path)


def abort_message(tmp_path: Path, content: bytes) -> str:
    cfg = csv_cfg(tmp_path, content)
    with pytest.raises(AbortError) as info:
        read_source(cfg)
    message = info.value.message
    assert "\n" not in message
    return message.replace(str(cfg.path.parent / "usage.csv"), "FILE")


class TestCsv:
    def test_it_reads_rows_with_and_without_psa_company(self, tmp_path: Path) -> None:
        cfg = csv_cfg(tmp_path, b"customer,sku,seats,psa_company\nAcme,LastPass,12,ACME\n"
                                b"Globex,LastPass+MFA,0,\n")
        assert read_source(cfg) == [UsageRow("Acme", "LastPass", 12, "ACME"),
                                     UsageRow("Globex", "LastPass+MFA", 0, None)]

    def test_it_ignores_extra_columns_header_case_blank_lines_and_padding(self, tmp_path: Path) -> None:
        cfg = csv_cfg(tmp_path, b"Notes, SKU ,Customer,SEATS\nx, LastPass , Acme Inc ,  007 \n\n,LastPass,Globex,+3\n")
        assert read_source(cfg) == [UsageRow("Acme Inc", "LastPass", 7), UsageRow("Globex", "LastPass", 3)]

    def test_a_quoted_field_may_hold_a_comma(self, tmp_path: Path) -> None:
        cfg = csv_cfg(tmp_path, b'customer,sku,seats\n"Smith, Jones & Co",LastPass,4\n')
        assert read_source(cfg) == [UsageRow("Smith, Jones & Co", "LastPass", 4)]

    def test_the_path_is_relative_to_the_config_file(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        cfg = csv_cfg(tmp_path, b"customer,sku,seats\nAcme,LastPass,1\n", name="data.csv")
        monkeypatch.chdir(tmp_path)  # not the config dir
        assert len(read_source(cfg)) == 1

    def test_a_header_only_file_has_no_rows(self, tmp_path: Path) -> None:
        assert read_source(csv_cfg(tmp_path, b"customer,sku,seats\n")) == []

    @pytest.mark.parametrize("content, expected", [
        pytest.param(b"customer,sku,seats\nAcme,LastPass,1\nGlobex\rX,LastPass,2\n",
                     "usage source FILE line 3 holds a carriage return; save with LF (Unix) line endings",
                     id="bare-cr"),
        pytest.param(b"customer,sku,seats\nAcme,LastPass,1\nCaf\xe9,LastPass,2\n",
                     "usage source FILE line 3: byte 0xe9 is not UTF-8; save the file as UTF-8", id="latin-1"),
        pytest.param(b"\xff\xfec\x00u\x00", "usage source FILE is UTF-16 encoded; save it as UTF-8", id="utf-16"),
        pytest.param(b"customer,sku,seats\nAcme,LastPass,-3\n",
                     "usage source FILE line 2: seats '-3' is negative", id="negative"),
        pytest.param(b"customer,sku,seats\nAcme,LastPass,3.5\n",
                     "usage source FILE line 2: seats '3.5' is not a whole number", id="fraction"),
        pytest.param(b"customer,sku,seats\nAcme,LastPass,ten\n",
                     "usage source FILE line 2: seats 'ten' is not a whole number", id="word"),
        pytest.param("customer,sku,seats\nAcme,LastPass,\u0663\n".encode(),
                     "usage source FILE line 2: seats '\u0663' is not a whole number", id="arabic-digit"),
        pytest.param(b"customer,sku,seats\nAcme,LastPass,\n", "usage source FILE line 2: empty seats", id="empty"),
        pytest.param(b"customer,sku,seats\nAcme,LastPass,99999999999\n",
                     "usage source FILE line 2: seats '99999999999' is too large", id="huge"),
        pytest.param(b"customer,sku,seats\nAcme,LastPass,1\nB,LastPass,2\nacme,LastPass,3\n",
                     "usage source FILE line 4: duplicate customer 'acme' with SKU 'LastPass' (first at line 2; "
                     "names are compared ignoring case and accents' encoding)",
                     id="duplicate"),
        pytest.param(b"customer,sku,seats\nAcme,Dashlane,1\n",
                     "usage source FILE line 2: unknown SKU 'Dashlane' (not a key of [products]: "
                     "LastPass, LastPass+MFA)", id="unknown-sku"),
        pytest.param(b"customer,seats\nAcme,1\n",
                     "usage source FILE line 1: header lacks column(s) sku; expected customer,sku,seats "
                     "(optional psa_company)", id="missing-column"),
        pytest.param(b"customer,sku,seats\n  ,LastPass,1\n", "usage source FILE line 2: empty customer",
                     id="empty-customer"),
        pytest.param(b"customer,sku,seats\nAcme,LastPass\n",
                     "usage source FILE line 2: 2 field(s), but the header has 3", id="short-row"),
        pytest.param(b"customer,sku,seats\n\"Acme,LastPass,1\n",
                     "usage source FILE line 2: malformed CSV (unexpected end of data)", id="open-quote"),
        pytest.param(b"customer,sku,seats\nAc\x01me,LastPass,1\n",
                     "usage source FILE line 2: customer 'Ac\\x01me' holds a control character", id="control"),
        pytest.param(b"", "usage source FILE is empty; expected a header row customer,sku,seats", id="empty-file"),
        pytest.param(b"customer,sku,seats,SKU\n", "usage source FILE line 1: column 'sku' appears twice in the header",
                     id="twice"),
    ])
    def test_it_refuses_bad_input_naming_the_line_and_value(self, tmp_path: Path, content: bytes,
                                                            expected: str) -> None:
        assert abort_message(tmp_path, content) == expected

    @pytest.mark.parametrize("content", [
        pytest.param(b"\xef\xbb\xbfcustomer,sku,seats\nAcme,LastPass,1\n", id="bom"),
        pytest.param(b"customer,sku,seats\r\nAcme,LastPass,1\r\n", id="crlf"),
        pytest.param(b"\xef\xbb\xbfcustomer,sku,seats\r\nAcme,LastPass,1\r\n", id="excel"),
    ])
    def test_a_byte_order_mark_and_crlf_line_endings_are_accepted(self, tmp_path: Path, content: bytes) -> None:
        # What Excel's "CSV UTF-8" writes: read as if it were plain LF UTF-8, nothing of the BOM in a name.
        assert read_source(csv_cfg(tmp_path, content)) == [UsageRow("Acme", "LastPass", 1)]

    def test_names_are_nfc_normalized(self, tmp_path: Path) -> None:
        decomposed = "Zu\u0308rich AG"  # as a Mac exports it
        cfg = csv_cfg(tmp_path, f"customer,sku,seats,psa_company\n{decomposed},LastPass,2,Mu\u0308ller\n".encode())
        assert read_source(cfg) == [UsageRow("Z\u00fcrich AG", "LastPass", 2, "M\u00fcller")]

    def test_duplicates_are_found_after_normalization(self, tmp_path: Path) -> None:
        content = "customer,sku,seats\nZ\u00fcrich AG,LastPass,2\nZU\u0308RICH AG,LastPass,3\n".encode()
        assert abort_message(tmp_path, content) == (
            "usage source FILE line 3: duplicate customer 'Z\u00dcRICH AG' with SKU 'LastPass' (first at line 2; "
            "names are compared ignoring case and accents' encoding)")

    def test_a_last_row_without_a_line_end_is_read_but_flagged(self, tmp_path: Path) -> None:
        cfg = csv_cfg(tmp_path, b"customer,sku,seats\nAcme,LastPass,25\nGlobex,LastPass,2")
        usage = reader_of(cfg)
        assert usage.rows[-1] == UsageRow("Globex", "LastPass", 2) and usage.unterminated
        assert not reader_of(csv_cfg(tmp_path, b"customer,sku,seats\nAcme,LastPass,25\r\n")).unterminated

    def test_a_fifo_is_refused_at_once(self, tmp_path: Path) -> None:
        cfg = make_cfg(tmp_path, {"kind": "csv", "path": "usage.csv"})
        os.mkfifo(cfg.path.parent / "usage.csv", 0o600)  # fresh: no writer, and modified just now
        outcome: List[BaseException] = []

        def attempt() -> None:
            try:
                read_source(cfg)
            except BaseException as exc:  # noqa: BLE001 - handed to the test thread
                outcome.append(exc)

        started = time.monotonic()
        worker = threading.Thread(target=attempt, daemon=True)
        worker.start()
        worker.join(5)
        assert not worker.is_alive(), "reading a FIFO source blocked"
        assert time.monotonic() - started < 1.0  # neither opened for a writer nor waited on to settle
        assert len(outcome) == 1 and isinstance(outcome[0], AbortError)
        assert outcome[0].message == (f"usage source {cfg.path.parent / 'usage.csv'} is a FIFO (named pipe), "
                                      "not a regular file: point it at a file")

    def test_a_file_still_being_written_is_waited_for(self, tmp_path: Path) -> None:
        path = tmp_path / "usage.csv"
        path.write_bytes(b"customer,sku,seats\nAcme,LastPass,2")  # modified just now: the exporter is at it
        slept: List[float] = []

        def exporter_finishes(seconds: float) -> None:
            slept.append(seconds)
            with open(path, "ab") as handle:
                handle.write(b"5\nGlobex,LastPass,3\n")

        data = source_files.read_settled(path, "usage source", sleep=exporter_finishes)
        assert data == b"customer,sku,seats\nAcme,LastPass,25\nGlobex,LastPass,3\n"  # never the cut "2"
        assert len(slept) == 1 and 0 < slept[0] <= source_files.SETTLE

    def test_a_file_whose_size_changes_while_it_is_read_is_read_again(self, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
        path = tmp_path / "usage.csv"
        write_old_bytes(path, b"customer,sku,seats\nAcme,LastPass,2")
        reads: List[bytes] = []
        real_read = source_files.read_regular

        def exporter_writes_during_the_read(*args: Any, **kwargs: Any) -> Any:
            data = real_read(*args, **kwargs)
            reads.append(data)
            if len(reads) == 1:
                with open(path, "ab") as handle:
                    handle.write(b"5\nGlobex,LastPass,3\n")
            return data

        monkeypatch.setattr(source_files, "read_regular", exporter_writes_during_the_read)
        slept: List[float] = []
        data = source_files.read_settled(path, "usage source", sleep=slept.append)
        assert data == b"customer,sku,seats\nAcme,LastPass,25\nGlobex,LastPass,3\n"
        assert reads[0] == b"customer,sku,seats\nAcme,LastPass,2" and len(reads) == 2
        assert slept and slept[0] == source_files.SETTLE and all(0 < s <= source_files.SETTLE for s in slept)

    def test_a_file_that_keeps_changing_is_refused(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        path = tmp_path / "usage.csv"
        write_old_bytes(path, b"customer,sku,seats\n")
        real_read = source_files.read_regular
        reads: List[bytes] = []

        def exporter_never_stops(*args: Any, **kwargs: Any) -> Any:
            reads.append(real_read(*args, **kwargs))
            with open(path, "ab") as handle:
                handle.write(b"Acme,LastPass,1\n" if len(reads) == 1 else b"x")
            return reads[-1]

        monkeypatch.setattr(source_files, "read_regular", exporter_never_stops)
        slept: List[float] = []
        with pytest.raises(AbortError) as info:
            source_files.read_settled(path, "usage source", sleep=slept.append, attempts=3)
        assert info.value.message == (f"usage source {path} kept changing while it was read (3 tries): it is still "
                                      "being written; a later firing within catch-up tries again")
        assert len(reads) == 3

    def test_a_missing_file_is_named(self, tmp_path: Path) -> None:
        cfg = make_cfg(tmp_path, {"kind": "csv", "path": "nope.csv"})
        with pytest.raises(AbortError, match=r"^usage source .*/conf/nope.csv not found$"):
            read_source(cfg)

    def test_a_file_over_the_cap_is_refused_without_reading_it_all(self, tmp_path: Path) -> None:
        cfg = make_cfg(tmp_path, {"kind": "csv", "path": "big.csv"})
        with open(cfg.path.parent / "big.csv", "wb") as handle:
            handle.truncate(sources.MAX_BYTES + 1)  # sparse: costs no disk
        os.utime(cfg.path.parent / "big.csv", (1_000_000_000, 1_000_000_000))
        with pytest.raises(AbortError, match=r"big.csv is over the 50 MB limit$"):
            read_source(cfg)

    def test_a_huge_file_parses_in_bounded_time(self, tmp_path: Path) -> None:
        lines = ["customer,sku,seats"] + [f"Customer {n},{'LastPass' if n % 2 else 'LastPass+MFA'},{n % 500}"
                                          for n in range(200_000)]
        cfg = csv_cfg(tmp_path, ("\n".join(lines) + "\n").encode())
        started = time.monotonic()
        rows = read_source(cfg)
        assert time.monotonic() - started < 10
        assert len(rows) == 200_000
        assert rows[-1] == UsageRow("Customer 199999", "LastPass", 199_999 % 500)

    def test_config_gaps_are_config_errors(self, tmp_path: Path) -> None:
        # A config without a source or products is refused before anything is read (readiness.require).
        with pytest.raises(ConfigError, match=r"no \[source\] configured"):
            readiness.require(make_cfg(tmp_path, {}))
        with pytest.raises(ConfigError, match=r"no \[products\] configured"):
            readiness.require(make_cfg(tmp_path, {"kind": "csv", "path": "x.csv"}, products={}))
        with pytest.raises(ConfigError, match=r"needs path"):
            read_source(make_cfg(tmp_path, {"kind": "csv"}))


class TestJson:
    def json_cfg(self, tmp_path: Path, document: Any) -> Config:
        cfg = make_cfg(tmp_path, {"kind": "json", "path": "usage.json"})
        raw = document if isinstance(document, bytes) else json.dumps(document).encode()
        write_old_bytes(cfg.path.parent / "usage.json", raw)
        return cfg

    def test_it_reads_a_list_of_objects(self, tmp_path: Path) -> None:
        cfg = self.json_cfg(tmp_path, [{"customer": "Acme", "sku": "LastPass", "seats": 5},
                                       {"customer": "Globex", "sku": "LastPass", "seats": "6",
                                        "psa_company": "GLOBEX", "note": "ignored"}])
        assert read_source(cfg) == [UsageRow("Acme", "LastPass", 5), UsageRow("Globex", "LastPass", 6, "GLOBEX")]

    def test_crlf_whitespace_is_harmless_in_json(self, tmp_path: Path) -> None:
        cfg = self.json_cfg(tmp_path, b'[\r\n {"customer": "Acme", "sku": "LastPass", "seats": 1}\r\n]\r\n')
        assert read_source(cfg) == [UsageRow("Acme", "LastPass", 1)]

    @pytest.mark.parametrize("document, expected", [
        pytest.param({"customer": "Acme"}, "expected a JSON list of {customer, sku, seats} objects", id="object"),
        pytest.param([["Acme"]], "item 1: expected an object, got a list", id="not-object"),
        pytest.param([{"customer": "Acme", "sku": "LastPass"}], "item 1: missing field(s) seats", id="missing"),
        pytest.param([{"customer": "A", "sku": "LastPass", "seats": 1.5}],
                     "item 1: seats must be an integer, got '1.5'", id="float"),
        pytest.param([{"customer": "A", "sku": "LastPass", "seats": True}],
                     "item 1: seats must be an integer, got 'true'", id="bool"),
        pytest.param([{"customer": "A", "sku": "LastPass", "seats": 1}, {"customer": "B", "sku": "LastPass",
                                                                         "seats": -2}],
                     "item 2: seats '-2' is negative", id="negative"),
        pytest.param(b'[{"customer": "A",', "line 1: malformed JSON (Expecting property name enclosed in double "
                                             "quotes)", id="truncated"),
        pytest.param(b"[" * 100_000, "malformed JSON", id="deep"),
        pytest.param(b'[{"customer": "A", "sku": "LastPass", "seats": 1, "seats": 100}]',
                     "key 'seats' is given twice in one object; give it once", id="duplicate-key"),
        pytest.param(b'[{"customer": "A", "sku": "LastPass", "seats": 1, "x": {"n": 1, "n": 2}}]',
                     "key 'n' is given twice in one object; give it once", id="duplicate-nested-key"),
    ])
    def test_it_refuses_bad_json_naming_the_item(self, tmp_path: Path, document: Any, expected: str) -> None:
        with pytest.raises(AbortError) as info:
            read_source(self.json_cfg(tmp_path, document))
        assert expected in info.value.message

    def test_a_byte_order_mark_is_accepted(self, tmp_path: Path) -> None:
        cfg = self.json_cfg(tmp_path, b'\xef\xbb\xbf[{"customer": "Acme", "sku": "LastPass", "seats": 1}]')
        assert read_source(cfg) == [UsageRow("Acme", "LastPass", 1)]

    def test_a_duplicate_key_is_refused_naming_the_key(self, tmp_path: Path) -> None:
        cfg = self.json_cfg(tmp_path, b'[{"customer": "Acme", "sku": "LastPass", "seats": 10, "seats": 1}]')
        with pytest.raises(AbortError) as info:
            read_source(cfg)
        assert info.value.message == (f"usage source {cfg.path.parent / 'usage.json'}: key 'seats' is given twice "
                                      "in one object; give it once")

    def test_json_names_are_nfc_normalized_and_deduplicated(self, tmp_path: Path) -> None:
        cfg = self.json_cfg(tmp_path, [{"customer": "Cafe\u0301", "sku": "LastPass", "seats": 1}])
        assert read_source(cfg) == [UsageRow("Caf\u00e9", "LastPass", 1)]
        cfg = self.json_cfg(tmp_path, [{"customer": "Caf\u00e9", "sku": "LastPass", "seats": 1},
                                       {"customer": "CAFE\u0301", "sku": "LastPass", "seats": 2}])
        with pytest.raises(AbortError, match=r"item 2: duplicate customer 'CAF\u00c9' with SKU 'LastPass' "
                                             r"\(first at item 1;"):
            read_source(cfg)


def py(code: str) -> List[str]:
    return [sys.executable, "-c", code]


class TestCommand:
    def cmd_cfg(self, tmp_path: Path, argv: List[str], **extra: Any) -> Config:
        return make_cfg(tmp_path, {"kind": "command", "command": argv, **extra})

    def test_csv_output_is_sniffed(self, tmp_path: Path) -> None:
        cfg = self.cmd_cfg(tmp_path, py("print('customer,sku,seats'); print('Acme,LastPass,3')"))
        assert read_source(cfg) == [UsageRow("Acme", "LastPass", 3)]

    def test_json_output_is_sniffed(self, tmp_path: Path) -> None:
        cfg = self.cmd_cfg(tmp_path, py("import json; print(json.dumps([dict(customer='A', sku='LastPass', seats=2)]))"))
        assert read_source(cfg) == [UsageRow("A", "LastPass", 2)]

    def test_format_overrides_the_sniff(self, tmp_path: Path) -> None:
        cfg = self.cmd_cfg(tmp_path, py("print('[')"), format="csv")
        with pytest.raises(AbortError, match=r"header lacks column\(s\) customer, sku, seats"):
            read_source(cfg)

    def test_it_runs_in_the_config_directory_without_a_shell(self, tmp_path: Path) -> None:
        cfg = self.cmd_cfg(tmp_path, py("import os,sys; print('customer,sku,seats'); "
                                        "print(os.path.basename(os.getcwd()) + ',LastPass,' + str(len(sys.argv)))")
                           + ["$HOME;", "|"])
        assert read_source(cfg) == [UsageRow("conf", "LastPass", 3)]

    def test_a_failing_command_names_its_status_and_first_stderr_line(self, tmp_path: Path) -> None:
        cfg = self.cmd_cfg(tmp_path, py("import sys; sys.stderr.write('\\n  login failed: token expired\\nmore\\n');"
                                        " sys.exit(3)"))
        with pytest.raises(AbortError) as info:
            read_source(cfg)
        assert info.value.message.endswith("exited with status 3: 'login failed: token expired'")

    def test_a_hanging_command_times_out(self, tmp_path: Path) -> None:
        cfg = self.cmd_cfg(tmp_path, py("import time; time.sleep(30)"), timeout=0.5)
        started = time.monotonic()
        with pytest.raises(AbortError, match=r"timed out after 0.5 s$"):
            read_source(cfg)
        assert time.monotonic() - started < 5

    def test_a_background_child_holding_stdout_cannot_hang_the_run(self, tmp_path: Path) -> None:
        code = ("import subprocess, sys; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)']);"
                " print('customer,sku,seats')")
        cfg = self.cmd_cfg(tmp_path, py(code), timeout=1)
        started = time.monotonic()
        with pytest.raises(AbortError, match=r"timed out after 1 s$"):
            read_source(cfg)
        assert time.monotonic() - started < 6

    def test_a_missing_command_is_named(self, tmp_path: Path) -> None:
        cfg = self.cmd_cfg(tmp_path, ["/nonexistent/export-seats", "--all"])
        # The program is checked (owner and mode) before it runs, so a missing one is named by its path.
        with pytest.raises(AbortError, match=r"^source command '/nonexistent/export-seats' not found"):
            read_source(cfg)

    def test_runaway_output_is_capped(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(source_command, "MAX_BYTES", 1024 * 1024)
        # One line: config strings refuse line breaks.
        cfg = self.cmd_cfg(tmp_path, py("import sys; [sys.stdout.write('x' * 65536) for _ in iter(int, 1)]"),
                           timeout=20)
        started = time.monotonic()
        with pytest.raises(AbortError, match=r"wrote over the 1 MB limit$"):
            read_source(cfg)
        assert time.monotonic() - started < 10

    def test_bad_output_is_reported_like_a_bad_file(self, tmp_path: Path) -> None:
        cfg = self.cmd_cfg(tmp_path, py("print('customer,sku,seats'); print('Acme,LastPass,-1')"))
        with pytest.raises(AbortError, match=r"^output of source command .* line 2: seats '-1' is negative$"):
            read_source(cfg)


    def test_a_right_trailer_is_accepted_and_not_a_row(self, tmp_path: Path) -> None:
        cfg = self.cmd_cfg(tmp_path, py("print('customer,sku,seats'); print('Acme,LastPass,3'); "
                                        "print('Globex,LastPass,4'); print('# rows: 2')"), trailer=True)
        assert read_source(cfg) == [UsageRow("Acme", "LastPass", 3), UsageRow("Globex", "LastPass", 4)]
        cfg = self.cmd_cfg(tmp_path, py("import json; print(json.dumps([dict(customer='A', sku='LastPass', "
                                        "seats=2)])); print('# rows: 1')"), trailer=True)
        assert read_source(cfg) == [UsageRow("A", "LastPass", 2)]

    def test_a_missing_trailer_is_refused(self, tmp_path: Path) -> None:
        cfg = self.cmd_cfg(tmp_path, py("print('customer,sku,seats'); print('Acme,LastPass,3')"), trailer=True)
        with pytest.raises(AbortError, match=r"^output of source command .* does not end with its '# rows: N' "
                                             r"trailer \(\[source\] trailer = true\): the export looks cut; "
                                             r"nothing was written$"):
            read_source(cfg)

    def test_a_wrong_trailer_is_refused(self, tmp_path: Path) -> None:
        cfg = self.cmd_cfg(tmp_path, py("print('customer,sku,seats'); print('Acme,LastPass,3'); print('# rows: 2')"),
                           trailer=True)
        with pytest.raises(AbortError, match=r"^output of source command .* has 1 rows but its trailer says 2: "
                                             r"the export looks cut; nothing was written$"):
            read_source(cfg)

    def test_without_trailer_set_a_trailer_line_is_just_bad_data(self, tmp_path: Path) -> None:
        cfg = self.cmd_cfg(tmp_path, py("print('customer,sku,seats'); print('Acme,LastPass,3'); print('# rows: 1')"))
        with pytest.raises(AbortError, match=r"line 3: 1 field\(s\), but the header has 3$"):
            read_source(cfg)


class TestFuzz:
    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.binary(max_size=400))
    def test_arbitrary_bytes_give_rows_or_a_one_line_abort(self, data: bytes) -> None:
        self.check(b"customer,sku,seats\n" + data)
        self.check(data)

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.lists(st.sampled_from(["Acme", "LastPass", "LastPass+MFA", "3", "-1", "", " ", '"', ",",
                                              "\n", "\r", "x\x00", "0", "\u00e9", "\ufeff", "psa_company"]),
                             max_size=5), max_size=8))
    def test_csv_shaped_noise_gives_rows_or_a_one_line_abort(self, cells: List[List[str]]) -> None:
        body = "\n".join(",".join(row) for row in cells)
        self.check(("customer,sku,seats\n" + body).encode())

    @staticmethod
    def check(data: bytes) -> None:
        try:
            rows = sources.parse(data, fmt=None, origin="fuzz", skus=PRODUCTS).rows
        except AbortError as exc:
            assert exc.message and "\n" not in exc.message and "\r" not in exc.message
            return
        for row in rows:
            assert isinstance(row.seats, int) and 0 <= row.seats <= sources.MAX_SEATS
            assert row.customer and row.customer == row.customer.strip()
            assert row.sku in PRODUCTS


def test_reading_a_source_does_not_import_httpx() -> None:
    code = "import sys, psabill.sources, psabill.run.engine, psabill.run.mapping; print('httpx' in sys.modules)"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "False"
