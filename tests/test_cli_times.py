"""Times in text output: the account zone, the host's wall time in brackets where it reads differently.

Weekly Tue 09:00 America/New_York; on 1 December 2026 New York is on EST (UTC-5).
JSON output keeps ISO-8601 in every zone and does not change.
"""

from __future__ import annotations

import json

import pytest

from support.env import Env

SAVED = "2026-11-26T12:00:00Z"
NY = ("schedule", "set", "--weekly", "tue", "--hour", "9", "--timezone", "America/New_York")


def _ran(env: Env) -> None:
    """A scheduled run of Tue 2026-12-01 09:00 EST that starts 7 seconds past the minute."""
    env.make_ready()
    assert env.run("run", "--scheduled", now="2026-12-01T14:00:07Z").exit_code == 0


class TestScheduleNext:
    def test_weekday_names_account_zone_and_the_host_in_brackets(self, env: Env) -> None:
        env.run(*NY, now=SAVED)
        lines = env.run("schedule", "next", "--count", "2", now=SAVED).output.splitlines()
        assert lines == ["Next runs (America/New_York; host UTC):",
                         "  Tue 2026-12-01 09:00 EST (host Tue 14:00 UTC)",
                         "  Tue 2026-12-08 09:00 EST (host Tue 14:00 UTC)"]

    def test_a_host_day_behind_shows_its_own_weekday(self, env: Env) -> None:
        env.host("America/Los_Angeles")
        env.run("schedule", "set", "--weekly", "tue", "--hour", "1", "--timezone", "Europe/Berlin", now=SAVED)
        line = env.run("schedule", "next", "--count", "1", now=SAVED).output.splitlines()[1]
        assert line == "  Tue 2026-12-01 01:00 CET (host Mon 16:00 PST)"

    def test_no_bracket_when_the_host_is_in_the_account_zone(self, env: Env) -> None:
        env.host("America/New_York")
        env.run(*NY, now=SAVED)
        lines = env.run("schedule", "next", "--count", "1", now=SAVED).output.splitlines()
        assert lines == ["Next runs (America/New_York):", "  Tue 2026-12-01 09:00 EST"]

    def test_schedule_set_says_the_next_run_the_same_way(self, env: Env) -> None:
        assert "Next run: Tue 2026-12-01 09:00 EST (host Tue 14:00 UTC)." in env.run(*NY, now=SAVED).output

    def test_json_is_unchanged(self, env: Env) -> None:
        env.run(*NY, now=SAVED)
        rows = json.loads(env.run("schedule", "next", "--count", "1", "--json", now=SAVED).output)
        assert rows == [{"account": "2026-12-01T09:00:00-05:00", "host": "2026-12-01T14:00:00+00:00",
                         "utc": "2026-12-01T14:00:00+00:00"}]


class TestHistory:
    def test_the_list_shows_whole_seconds_with_the_offset(self, env: Env) -> None:
        env.run(*NY, now=SAVED)
        _ran(env)
        lines = env.run("history", now="2026-12-01T15:00:00Z").output.splitlines()
        assert lines[0].split()[:3] == ["ID", "STARTED", "(America/New_York)"]
        assert lines[1].split()[:8] == ["1", "2026-12-01", "09:00:07", "-0500", "(host", "Tue", "14:00:07", "UTC)"]

    def test_show_gives_started_finished_and_occurrence_the_same_way(self, env: Env) -> None:
        env.run(*NY, now=SAVED)
        _ran(env)
        out = env.run("history", "show", "1", now="2026-12-01T15:00:00Z").output
        assert "started 2026-12-01 09:00:07 -0500 (host Tue 14:00:07 UTC)" in out
        assert "Occurrence: Tue 2026-12-01 09:00 EST (host Tue 14:00 UTC)" in out

    def test_json_is_unchanged(self, env: Env) -> None:
        env.run(*NY, now=SAVED)
        _ran(env)
        run = json.loads(env.run("history", "--json", now="2026-12-01T15:00:00Z").output)[0]
        assert run["started_at"] == "2026-12-01T14:00:07+00:00"
        assert run["occurrence"] == "2026-12-01T14:00:00+00:00"


class TestStatus:
    def test_next_and_last_run_in_the_account_zone_with_the_host_in_brackets(self, env: Env) -> None:
        env.run(*NY, now=SAVED)
        _ran(env)
        out = env.run("status", now="2026-12-01T15:00:00Z").output.splitlines()
        assert out[1].startswith("Tue 2026-12-08 09:00 EST ")
        assert "Tue 2026-12-01 09:00 EST " in out[1]
        assert "Next run:   Tue 2026-12-08 09:00 EST (host Tue 14:00 UTC)" in out
        last = next(line for line in out if line.startswith("Last run:"))
        assert last.startswith("Last run:   success (scheduled) at 2026-12-01 09:00:07 -0500 (host Tue 14:00:07 UTC)")

    @pytest.mark.parametrize("key", ["account", "host", "utc"])
    def test_json_is_unchanged(self, env: Env, key: str) -> None:
        env.run(*NY, now=SAVED)
        data = json.loads(env.run("status", "--json", now=SAVED).output)
        assert data["next_run"][key] == {"account": "2026-12-01T09:00:00-05:00", "host": "2026-12-01T14:00:00+00:00",
                                         "utc": "2026-12-01T14:00:00+00:00"}[key]
