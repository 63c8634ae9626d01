"""What the cron path and `status` import (issue 6).

Cron starts ``psabill run --scheduled`` every time the expression matches, and
almost every time nothing is due: that path must stay a cheap start-up. Each
case runs ``psabill.cli:main`` (through ``runpy``, as ``python -m psabill``
does) in a fresh interpreter and inspects ``sys.modules`` afterwards, so a
heavy import anywhere on the path -- even one added deep inside a helper --
fails here. benchmarks/run.py measures the time; this only guards the imports.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import List, Sequence, Tuple

import pytest

from support.env import Env

SAVED = "2025-01-01T00:00:00Z"
RAN = "2025-01-07T14:00:30Z"  # the Tuesday 09:00 New York occurrence (14:00 UTC), run by cron
WITHIN_CATCH_UP = "2025-01-08T00:00:00Z"  # not due: it ran; the guard must ask the state db
MID_WEEK = "2025-01-10T12:00:00Z"  # not due: the last occurrence is past catch-up

HEAVY = ("httpx", "jinja2")  # the PSA clients and the email report
# Never on the not-due path: python-crontab (only cron install/sync needs it),
# email-validator (only a due run checks addresses), the run machinery and
# logging (set up only once a run starts), and Click itself: psabill.entry
# answers a not-due firing before the CLI is imported.
OTHER_COMMANDS = tuple(f"psabill.cli.{name}" for name in
                       ("check", "cron", "demo", "email", "history", "schedule", "status"))
NOT_DUE_FORBIDDEN = HEAVY + OTHER_COMMANDS + ("click", "psabill.cli",
    "crontab", "email_validator", "logging", "psabill.schedule.crontab", "psabill.schedule.cronplan", "psabill.run.engine",
    "psabill.run.mapping", "psabill.run.perform", "psabill.notify", "psabill.text.log",
    "psabill.sandbox", "psabill.ledger.lock", "tomlkit",
    # The registries psabill.psa and psabill.sources are dependency-free and may be imported
    # (their package __init__ only); any PSA client or source reader may not.
    "psabill.psa.", "psabill.sources.",
    # Class-building and number machinery the path has no use for: building frozen
    # dataclasses (and importing inspect for them) cost more than the path's own
    # work, so its records are NamedTuples; Decimal is for quantities, which only a
    # run reads; the report classes are a run's.
    "dataclasses", "inspect", "decimal", "psabill.report")

PROBE = textwrap.dedent("""
    import runpy, sys
    out, argv = sys.argv[1], sys.argv[2:]
    sys.argv = ["psabill", *argv]
    code = 0
    try:
        runpy.run_module("psabill", run_name="__main__", alter_sys=True)  # psabill/__main__.py -> cli.main()
    except SystemExit as exc:
        code = exc.code
    modules = sorted(sys.modules)
    import json
    with open(out, "w") as fh:
        json.dump({"code": code, "modules": modules}, fh)
""")


def modules_after(env: Env, args: Sequence[str], now: str) -> Tuple[int, str, List[str]]:
    """Run ``psabill ARGS`` in a fresh interpreter; its exit code, stdout and sys.modules."""
    out = env.tmp / "modules.json"
    child_env = dict(os.environ, PSABILL_NOW=now)
    proc = subprocess.run([sys.executable, "-c", PROBE, str(out), *args], env=child_env,
                          capture_output=True, text=True, timeout=120)
    assert out.exists(), proc.stderr
    data = json.loads(out.read_text())
    return data["code"], proc.stdout, data["modules"]


def offending(modules: Sequence[str], forbidden: Sequence[str]) -> List[str]:
    """``forbidden`` names modules and their submodules; one ending in "." names only the submodules."""
    return sorted(m for m in modules
                  if any(m.startswith(f) if f.endswith(".") else (m == f or m.startswith(f + ".")) for f in forbidden))


@pytest.fixture
def scheduled(env: Env) -> Env:
    """A weekly schedule, one past scheduled run in the state db, and a crontab file."""
    assert env.run("schedule", "set", "--weekly", "tue", "--hour", "9", "--timezone", "America/New_York",
                   "--no-cron", now=SAVED).exit_code == 0
    env.make_ready()
    assert env.run("run", "--scheduled", now=RAN).exit_code == 0
    assert env.run("cron", "install", now=WITHIN_CATCH_UP).exit_code == 0
    assert (env.state_dir / "state.db").is_file()
    assert env.crontab.is_file()
    return env


@pytest.mark.parametrize("now", [WITHIN_CATCH_UP, MID_WEEK], ids=["ran-within-catch-up", "mid-week"])
def test_the_not_due_cron_path_imports_no_psa_client_template_engine_or_python_crontab(
        scheduled: Env, now: str) -> None:
    code, stdout, modules = modules_after(scheduled, ["run", "--scheduled"], now)
    assert (code, stdout) in ((0, ""), (None, "")), "the not-due path must be silent and exit 0"
    assert "psabill.run.guard" in modules and "psabill.schedule.rules" in modules  # the probe really ran the guard
    assert offending(modules, NOT_DUE_FORBIDDEN) == []


def test_status_json_imports_neither_httpx_nor_jinja2(scheduled: Env) -> None:
    code, stdout, modules = modules_after(scheduled, ["status", "--json"], WITHIN_CATCH_UP)
    assert code in (0, None)
    assert json.loads(stdout)["cron"]["in_sync"] is True  # read the crontab file, not `crontab -l`
    assert offending(modules, HEAVY) == []


def test_the_probe_does_see_heavy_imports(tmp_path: Path) -> None:
    """The check is not vacuous: importing httpx shows up in what the probe reports."""
    out = tmp_path / "m.json"
    probe = PROBE.replace('runpy.run_module("psabill", run_name="__main__", alter_sys=True)', "import httpx")
    subprocess.run([sys.executable, "-c", probe, str(out)], check=True, timeout=120)
    assert "httpx" in offending(json.loads(out.read_text())["modules"], HEAVY)


def test_a_due_firing_still_goes_through_the_cli(scheduled: Env) -> None:
    """The fast path only ever answers "nothing due"; a due occurrence runs through Click."""
    code, _, modules = modules_after(scheduled, ["run", "--scheduled"], "2025-01-14T14:00:30Z")
    assert "psabill.cli.run" in modules, code


@pytest.mark.parametrize("argv", [["run", "--scheduled", "-v"], ["-v", "run", "--scheduled"],
                                  ["--config", "--state-dir", "run", "--scheduled"], ["run"]])
def test_any_other_command_line_goes_to_the_cli(argv: List[str]) -> None:
    from psabill.entry import cron_paths

    assert cron_paths(argv) is None


COUNT_PARSES = PROBE.replace(
    "import runpy, sys\n",
    "import runpy, sys\n"
    "import psabill.config.settings as _settings\n"
    "_parse, _parses = _settings.parse_document, []\n"
    "_settings.parse_document = lambda raw, path: (_parses.append(path), _parse(raw, path))[1]\n",
).replace('json.dump({"code": code, "modules": modules}, fh)',
          'json.dump({"code": code, "modules": modules, "parses": len(_parses)}, fh)')


@pytest.mark.parametrize("now", ["2025-01-14T14:00:30Z", WITHIN_CATCH_UP], ids=["due", "not-due"])
def test_a_scheduled_firing_parses_its_config_once(scheduled: Env, now: str) -> None:
    """The fast path and then the CLI both load the config on a due firing; the TOML is parsed once."""
    out = scheduled.tmp / "parses.json"
    proc = subprocess.run([sys.executable, "-c", COUNT_PARSES, str(out), "run", "--scheduled"],
                          env=dict(os.environ, PSABILL_NOW=now), capture_output=True, text=True, timeout=120)
    data = json.loads(out.read_text())
    assert data["code"] in (0, None), proc.stderr
    assert ("psabill.cli.run" in data["modules"]) == (now != WITHIN_CATCH_UP)  # the due firing really ran
    assert data["parses"] == 1
