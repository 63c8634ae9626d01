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
from typing import Any, Dict, List, Optional

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from psabill import sources
from psabill.config.settings import Settings as Config
from support.env import read_source, settings_for
from psabill.errors import AbortError, ConfigError
from psabill.sources import UsageRow

PRODUCTS = {"LastPass": "LP-STD", "LastPass+MFA": "LP-MFA"}


def make_cfg(tmp_path: Path, source: Dict[str, Any], products: Optional[Dict[str, str]] = None) -> Config:
    data = {"source": source, "products": PRODUCTS if products is None else products}
    path = tmp_path / "conf" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    return settings_for(path, data)


def csv_cfg(tmp_path: Path, content: bytes, name: str = "usage.csv") -> Config:
    cfg = make_cfg(tmp_path, {"kind": "csv", "path": name})
    (cfg.path.parent / name).write_bytes(content)
    return cfg


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
        pytest.param(b"\xef\xbb\xbfcustomer,sku,seats\nAcme,LastPass,1\n",
                     "usage source FILE has a UTF-8 byte-order mark; save without BOM", id="bom"),
        pytest.param(b"customer,sku,seats\r\nAcme,LastPass,1\r\n",
                     "usage source FILE line 1 ends in CRLF; save with LF (Unix) line endings", id="crlf"),
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
                     "usage source FILE line 4: duplicate customer 'acme' with SKU 'LastPass' (first at line 2)",
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

    def test_a_missing_file_is_named(self, tmp_path: Path) -> None:
        cfg = make_cfg(tmp_path, {"kind": "csv", "path": "nope.csv"})
        with pytest.raises(AbortError, match=r"^usage source .*/conf/nope.csv not found$"):
            read_source(cfg)

    def test_a_file_over_the_cap_is_refused_without_reading_it_all(self, tmp_path: Path) -> None:
        cfg = make_cfg(tmp_path, {"kind": "csv", "path": "big.csv"})
        with open(cfg.path.parent / "big.csv", "wb") as handle:
            handle.truncate(sources.MAX_BYTES + 1)  # sparse: costs no disk
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
        with pytest.raises(ConfigError, match=r"\[source\] kind is not set"):
            read_source(make_cfg(tmp_path, {}))
        with pytest.raises(ConfigError, match=r"\[products\] is empty"):
            read_source(make_cfg(tmp_path, {"kind": "csv", "path": "x.csv"}, products={}))
        with pytest.raises(ConfigError, match=r"needs path"):
            read_source(make_cfg(tmp_path, {"kind": "csv"}))


class TestJson:
    def json_cfg(self, tmp_path: Path, document: Any) -> Config:
        cfg = make_cfg(tmp_path, {"kind": "json", "path": "usage.json"})
        raw = document if isinstance(document, bytes) else json.dumps(document).encode()
        (cfg.path.parent / "usage.json").write_bytes(raw)
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
        pytest.param(b"\xef\xbb\xbf[]", "has a UTF-8 byte-order mark; save without BOM", id="bom"),
    ])
    def test_it_refuses_bad_json_naming_the_item(self, tmp_path: Path, document: Any, expected: str) -> None:
        with pytest.raises(AbortError) as info:
            read_source(self.json_cfg(tmp_path, document))
        assert expected in info.value.message


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
        with pytest.raises(AbortError, match=r"^source command '/nonexistent/export-seats --all' not found$"):
            read_source(cfg)

    def test_runaway_output_is_capped(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(sources, "MAX_BYTES", 1024 * 1024)
        cfg = self.cmd_cfg(tmp_path, py("import sys\nwhile True: sys.stdout.write('x' * 65536)"), timeout=20)
        started = time.monotonic()
        with pytest.raises(AbortError, match=r"wrote over the 1 MB limit$"):
            read_source(cfg)
        assert time.monotonic() - started < 10

    def test_bad_output_is_reported_like_a_bad_file(self, tmp_path: Path) -> None:
        cfg = self.cmd_cfg(tmp_path, py("print('customer,sku,seats'); print('Acme,LastPass,-1')"))
        with pytest.raises(AbortError, match=r"^output of source command .* line 2: seats '-1' is negative$"):
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
            rows = sources.parse(data, fmt=None, origin="fuzz", skus=PRODUCTS)
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
