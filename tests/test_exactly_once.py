"""Exactly once on a real admin's host: the rules of the issue, one test each (named after the rule)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, List

import pytest
import tomli_w

from support.env import Env
from psabill import clock
from psabill import crontab as cron
from psabill.history import History
from psabill.report import RunReport

UTC = timezone.utc
SAVED = "2026-11-26T12:00:00Z"
DUE = "2026-11-27T06:00:00Z"  # the daily 06:00 UTC occurrence after SAVED


def daily(env: Env, *extra: str, config: Any = None) -> Any:
    args = ["--config", str(config)] if config else []
    return env.run(*args, "schedule", "set", "--daily", "--hour", "6", "--timezone", "UTC", *extra, now=SAVED)


def runs(env: Env) -> List[dict]:
    return json.loads(env.run("history", "--days", "100000", "--json").output)


def edit_config(env: Env, **sections: Any) -> None:
    import sys

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    data = tomllib.loads(env.config.read_text())
    for name, section in sections.items():
        data[name] = {**data.get(name, {}), **section}
    env.config.write_text(tomli_w.dumps(data))
    os.chmod(env.config, 0o600)


def cron_to_sh(line: str) -> str:
    command = line.split(None, 5)[5] if not line.startswith("@") else line.split(None, 1)[1]
    return command.replace("\\%", "%")


# -- 1. Pruning never erases what the guard needs ----------------------------------------


def _record(history: History, started: datetime, occurrence: Any = None) -> None:
    report = RunReport(trigger="scheduled" if occurrence else "manual", started_at=started, occurrence=occurrence,
                       status="success")
    history.start_run(report)
    report.finished_at = started
    history.finish_run(report)


def test_pruning_measures_the_retention_window_from_the_newest_record_never_from_an_earlier_now(tmp_path: Path) -> None:
    day = datetime(2026, 6, 1, 6, tzinfo=UTC)
    with History(tmp_path / "state.db") as history:
        for n in range(10):
            _record(history, day + timedelta(days=n), occurrence=day + timedelta(days=n))
        # Retention 3 days from the newest record (day 9): days 6..9 stay, whatever "now" is.
        assert history.prune(timedelta(days=3), timedelta(hours=27)) == 6
        kept = sorted(r.occurrence for r in history.runs())
    assert kept == [(day + timedelta(days=n)).isoformat() for n in range(6, 10)]


def test_pruning_never_erases_a_run_the_guard_could_still_need(tmp_path: Path) -> None:
    newest = datetime(2026, 6, 10, 6, tzinfo=UTC)
    with History(tmp_path / "state.db") as history:
        _record(history, newest - timedelta(hours=20), occurrence=newest - timedelta(hours=20))
        _record(history, newest, occurrence=newest)
        # A retention of 1 h would drop the run from 20 h ago; the guard may need 24h + 3h.
        assert history.prune(timedelta(hours=1), timedelta(hours=27)) == 0
        assert history.occurrence_done(newest - timedelta(hours=20))


def test_a_retention_shorter_than_catch_up_plus_3h_is_refused_at_load(env: Env) -> None:
    daily(env, "--catch-up", "2d")
    edit_config(env, history={"retention_days": 2})
    result = env.run("status")
    assert result.exit_code == 3
    assert result.output.strip() == (f"Error: {env.config}: history.retention_days = 2: must cover [schedule] "
                                     "catch_up (2d) + 3h, so at least 3")
    edit_config(env, history={"retention_days": 3})
    assert env.run("status").exit_code == 0
