"""Every ``--json`` output is versioned and documented (issue 24, point 9).

Each command below runs for real (the CLI against the ConnectWise sandbox on
loopback), and its JSON is checked: an object carries ``"schema": 1``, and every
top-level key it prints is named in its section of docs/json.md. One run renders
the same way in ``run --json``, ``history show --json`` and ``history --json``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, List, Optional, Set

import pytest

from psabill.sandbox.connectwise import Sandbox
from support.book import Book
from support.env import Env

DOC = (Path(__file__).parents[1] / "docs" / "json.md").read_text(encoding="utf-8")


def documented(heading: str, bullet: Optional[str] = None) -> Set[str]:
    """The backticked words of the docs/json.md section whose heading contains ``heading`` (or of its
    bullet starting with ``bullet``)."""
    sections = re.split(r"^## ", DOC, flags=re.MULTILINE)
    [section] = [s for s in sections if heading in s.splitlines()[0]]
    if bullet is not None:
        [section] = [line for line in section.splitlines() if line.startswith(f"- `{bullet}`")]
    rows = re.findall(r"^\| ([^|]+) \|", section, flags=re.MULTILINE)
    if rows:  # a table: the keys are its first column
        return {word for cell in rows for word in re.findall(r"`([a-z_]+)`", cell)}
    return set(re.findall(r"`([a-z_]+)`", section))


def parsed(output: str) -> Any:
    start = min(i for i in (output.find("{"), output.find("[")) if i >= 0)
    end = max(output.rfind("}"), output.rfind("]"))
    return json.loads(output[start:end + 1])


def check(data: Any, heading: str, bullet: Optional[str] = None) -> None:
    assert isinstance(data, dict), data
    assert data.get("schema") == 1, f"{heading}: no schema"
    undocumented = set(data) - documented(heading, bullet)
    assert not undocumented, f"{heading}{' ' + bullet if bullet else ''}: {sorted(undocumented)} not in docs/json.md"


RUN_KEYS = documented("A run")


@pytest.fixture
def book(env: Env) -> Any:
    with Sandbox() as sandbox:
        yield Book(env, sandbox, customers=6, seats=25)


def json_of(env: Env, *args: str, now: Optional[str] = None) -> Any:
    result = env.run(*args, "--json", now=now)
    assert "Traceback" not in result.output
    return parsed(result.output)


def test_every_json_output_is_versioned_and_its_keys_are_documented(env: Env, book: Book, tmp_path: Path) -> None:
    book.source({c: 26 for c in book.lines})
    schedule = json_of(env, "schedule", "set", "--weekly", "tue", "--hour", "9", "--timezone", "America/New_York",
                       now="2026-11-20T12:00:00Z")
    check(schedule, "schedule set")
    check(json_of(env, "schedule", "show"), "schedule show")
    upcoming = json_of(env, "schedule", "next", "--count", "2")
    assert isinstance(upcoming, list) and set(upcoming[0]) <= documented("schedule next")
    check(json_of(env, "schedule", "disable"), "schedule enable")
    check(json_of(env, "schedule", "enable"), "schedule enable")
    check(json_of(env, "cron", "show"), "cron show", "cron show")
    check(json_of(env, "cron", "install"), "cron show", "cron install")
    check(json_of(env, "config", "path"), "config init", "config path")
    check(json_of(env, "email", "test"), "email test", "email test")

    run = json_of(env, "run", "--yes")
    check(run, "A run")
    assert set(run) - {"schema"} <= RUN_KEYS and "items" in run
    shown = json_of(env, "history", "show", str(run["id"]))
    assert {k: v for k, v in shown.items() if k != "requests_per_second"} == \
        {k: v for k, v in run.items() if k != "requests_per_second"}  # one run renders the same everywhere
    history = json_of(env, "history")
    assert isinstance(history, list) and "schema" not in history[0] and "items" not in history[0]
    assert set(history[0]) <= RUN_KEYS
    assert [item["customer"] for item in run["items"]] == sorted(item["customer"] for item in run["items"])
    check(json_of(env, "email", "resend", str(run["id"])), "email test", "email resend")

    status = json_of(env, "status")
    check(status, "status --json")
    assert set(status["last_run"]) <= RUN_KEYS

    book.source({c: 0 for c in book.lines})  # everyone to 0: the guard holds the whole run
    held = json_of(env, "run", "--yes")
    assert held["status"] == "held"
    check(json_of(env, "reject", str(held["id"]), "--yes"), "approve RUN")
    held = json_of(env, "run", "--yes")
    approved = json_of(env, "approve", str(held["id"]), "--yes")
    check(approved, "approve RUN")
    assert approved["action"] == "approved" and {i["outcome"] for i in approved["items"]} == {"updated"}

    check(json_of(env, "check"), "check --json")
    shown_config = json_of(env, "config", "show")
    assert shown_config["schema"] == 1  # its other keys are the config's own tables
    check(json_of(env, "cron", "remove"), "cron show", "cron remove")

    other = tmp_path / "fresh" / "config.toml"
    init = json_of(env, "--config", str(other), "config", "init", "--from", "psabill@msp.example")
    check(init, "config init", "config init")


def test_the_demo_json_is_documented(tmp_path: Path, env: Env) -> None:
    demo = json_of(env, "demo", "--dir", str(tmp_path / "demo"))
    check(demo, "demo --json")
    assert set(demo["run"]) - {"quantities_written", "schema"} <= RUN_KEYS
    assert set(demo["files"]) <= documented("demo --json")


def test_the_documented_run_keys_are_what_a_run_prints(env: Env, book: Book) -> None:
    """The other direction for the shared model: no documented run key is stale."""
    book.source({c: 27 for c in book.lines})
    run = json_of(env, "run", "--yes")
    assert RUN_KEYS - {"schema"} - set(run) <= set(), sorted(RUN_KEYS - set(run))
    item_keys: List[str] = re.findall(r"`([a-z_]+)`", next(line for line in DOC.splitlines()
                                                            if line.startswith("| `items` |")))
    assert set(run["items"][0]) == set(item_keys) - {"items"}
