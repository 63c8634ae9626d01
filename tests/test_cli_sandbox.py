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


def _customer(line: str) -> "tuple[tuple[str, str, int], str]":
    """(identifier, name, quantity) and the product of a printed sample customer line."""
    found = re.match(r"#   (\S+) +'(.+?)': .*: (SEATS-\w+)(?: \(service \d+\))? = (\d+)$", line)
    assert found, line
    return (found.group(1), found.group(2), int(found.group(4))), found.group(3)


def _sku(product: str) -> str:
    return {"SEATS-STD": "LastPass", "SEATS-MFA": "LastPass+MFA"}[product]


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
        first, second = [_customer(line) for line in lines if re.match(r"#   [A-Z0-9]+ ", line)][:2]
        # Seat counts a few away from what the printed sample holds, as a real month's usage is (the
        # guard, on by default, would hold a source that looks broken).
        one, one_product = first
        two, two_product = second
        write_old(env.config.parent / "usage.csv", "customer,sku,seats\n"
                  f"{one[0]},{_sku(one_product)},{one[2] + 2}\n\"{two[1]}\",{_sku(two_product)},{two[2] + 1}\n"
                  "Nobody,LastPass,1\n")
        env.config.write_text(tomli_w.dumps({"source": {"kind": "csv", "path": "usage.csv"}, "products": products,
                                             "psa": {**section, "max_retries": 0}}))
        os.chmod(env.config, 0o600)
        result = env.run("run", "--yes", "--json")
        assert result.exit_code == 0, result.output
        items = {(i["customer"], i["outcome"]) for i in json.loads(result.output)["items"]}
        assert items == {(one[0], "updated"), (two[1], "updated"), ("Nobody", "unmapped")}
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


@pytest.mark.parametrize("kind", ["connectwise", "autotask"])
def test_with_source_lastpass_the_printed_sections_run_lastpass_to_the_psa_and_show_every_case(
        env: Env, kind: str) -> None:
    proc, lines = _start(env, "--psa", kind, "--source", "lastpass")
    try:
        start = lines.index("[psa]")
        end = next(i for i, line in enumerate(lines) if line.startswith("# Sample customers"))
        sections = tomllib.loads("\n".join(lines[start:end]))
        assert sections["source"]["kind"] == "lastpass"
        key_dir = os.path.dirname(sections["source"]["api_key_file"])
        assert stat.S_IMODE(os.stat(sections["source"]["api_key_file"]).st_mode) == 0o600
        env.config.parent.mkdir(parents=True)
        env.config.write_text(tomli_w.dumps({**sections, "psa": {**sections["psa"], "max_retries": 0}}))
        os.chmod(env.config, 0o600)
        result = env.run("run", "--yes", "--json")
        assert result.exit_code == 1, result.output  # partial: the book's failures are on purpose
        out = result.output
        outcomes = {i["outcome"] for i in json.loads(out[out.index("{"):out.rindex("}") + 1])["items"]}
        assert outcomes >= {"updated", "unchanged", "failed", "unmapped"}
        shown = [line for line in lines[lines.index("# What a run against them shows:") + 1:] if line.startswith("#   ")]
        assert len(shown) == 4
    finally:
        _stop(proc)
    assert not os.path.exists(key_dir), "the sandbox left its temp key dir behind"
