"""`psabill sandbox`: a PSA on loopback to point a config at, until Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
from typing import List

import pytest
import tomli_w

from support.env import Env, tomllib, write_old


def _start(env: Env, *args: str) -> "tuple[subprocess.Popen[str], List[str]]":
    environ = {**os.environ, "PSABILL_CONFIG": str(env.config), "PSABILL_STATE_DIR": str(env.state_dir)}
    proc = subprocess.Popen([sys.executable, "-m", "psabill", "sandbox", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=environ)
    lines: List[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        if line.startswith("# Then:"):
            break
    else:
        proc.kill()
        pytest.fail("the sandbox ended before printing its [psa] section: " + "\n".join(lines) + proc.stderr.read())
    return proc, lines


def _seats(lines: List[str], customer: str, product: str) -> int:
    """The quantity the sandbox printed for ``customer``'s ``product`` line."""
    line = next(line for line in lines if line.startswith(f"#   {customer} "))
    found = re.search(rf"{product}(?: \(service \d+\))? = (\d+)", line)
    assert found, line
    return int(found.group(1))


def _stop(proc: "subprocess.Popen[str]") -> str:
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert err == ""
    return out


@pytest.mark.parametrize("kind, products", [
    ("connectwise", {"LastPass": "SEATS-STD", "LastPass+MFA": "SEATS-MFA"}),
    ("autotask", {"LastPass": 501, "LastPass+MFA": "SEATS-MFA"}),
])
def test_a_config_with_the_printed_section_runs_against_the_sandbox(env: Env, kind: str, products: dict) -> None:
    env.config.parent.mkdir(parents=True)
    proc, lines = _start(env, "--psa", kind)
    try:
        start = lines.index("[psa]")
        end = lines.index("", start)
        section = tomllib.loads("\n".join(lines[start:end]))["psa"]
        key = section.get("private_key_file") or section["secret_file"]
        assert os.path.dirname(key) == str(env.config.parent)  # next to the config
        assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
        assert any(line.startswith("#   CUST00001 ") for line in lines)
        # Seat counts a few away from what the printed sample holds, as a real month's usage is (the
        # guard, on by default, would hold a source that looks broken).
        standard = _seats(lines, "CUST00001", "SEATS-STD")
        mfa = _seats(lines, "CUST00002", "SEATS-MFA")
        write_old(env.config.parent / "usage.csv", "customer,sku,seats\n"
                  f"CUST00001,LastPass,{standard + 2}\nCustomer 00002 Ltd,LastPass+MFA,{mfa + 1}\nNobody,LastPass,1\n")
        env.config.write_text(tomli_w.dumps({"source": {"kind": "csv", "path": "usage.csv"}, "products": products,
                                             "psa": {**section, "max_retries": 0}}))
        os.chmod(env.config, 0o600)
        result = env.run("run", "--yes", "--json")
        assert result.exit_code == 0, result.output
        items = {(i["customer"], i["outcome"]) for i in json.loads(result.output)["items"]}
        assert items == {("CUST00001", "updated"), ("Customer 00002 Ltd", "updated"), ("Nobody", "unmapped")}
        again = json.loads(env.run("run", "--yes", "--json").output)
        assert [i["outcome"] for i in again["items"]] == ["unchanged", "unchanged", "unmapped"]
    finally:
        out = _stop(proc)
    assert out.rstrip().endswith("Sandbox stopped.")


def test_without_a_config_dir_the_key_goes_to_a_temp_dir(env: Env) -> None:
    proc, lines = _start(env)
    try:
        key = next(line.split(" = ")[1].strip('"') for line in lines if line.startswith("private_key_file"))
        assert not env.config.parent.exists() and os.path.isfile(key)
        assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    finally:
        _stop(proc)


def test_a_busy_port_is_one_error_line(env: Env) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        result = env.run("sandbox", "--port", str(busy.getsockname()[1]))
    assert result.exit_code == 2
    assert result.output.startswith("Error: cannot listen on 127.0.0.1:") and len(result.output.splitlines()) == 1
