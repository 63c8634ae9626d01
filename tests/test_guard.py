"""`psabill run --scheduled`: the guard that runs each occurrence exactly once."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Optional
from zoneinfo import ZoneInfo

import pytest
from cronsim import CronSim

from support.env import Env
from psabill.schedule.crontab import is_ours

UTC = timezone.utc
SAVED = "2026-11-26T12:00:00+00:00"


def history(env: Env) -> list:
    return json.loads(env.run("history", "--days", "100000", "--json").output)


class TestGuard:
    """Every guard rule, with the ledger in SQLite and in PostgreSQL."""

    @pytest.fixture(autouse=True)
    def _each_ledger(self, ledger_url: Optional[str]) -> None:
        self.ledger_url = ledger_url

    def test_nothing_due_prints_nothing_and_exits_0(self, env: Env) -> None:
        env.run("schedule", "set", "--weekly", "tue", "--hour", "9", "--timezone", "America/New_York", now=SAVED)
        env.make_ready()
        result = env.run("run", "--scheduled", now="2026-11-30T14:00:00Z")
        assert result.exit_code == 0
        assert result.output == ""
        assert not (env.state_dir / "state.db").exists()

    def test_a_due_occurrence_runs_once_and_a_second_firing_does_nothing(self, env: Env) -> None:
        env.run("schedule", "set", "--weekly", "tue", "--hour", "9", "--timezone", "America/New_York", now=SAVED)
        env.make_ready()
        first = env.run("run", "--scheduled", now="2026-12-01T14:00:00Z")
        second = env.run("run", "--scheduled", now="2026-12-01T14:00:30Z")
        assert first.exit_code == 0 and first.output == ""
        assert second.exit_code == 0 and second.output == ""
        runs = history(env)
        assert len(runs) == 1
        assert runs[0]["trigger"] == "scheduled"
        assert runs[0]["occurrence"] == "2026-12-01T14:00:00+00:00"
        assert runs[0]["status"] == "success"
        assert runs[0]["late_seconds"] is None

    def test_an_occurrence_before_the_saved_moment_never_runs(self, env: Env) -> None:
        # Saved at 09:30 New York on a Tuesday: that day's 09:00 occurrence is in the past.
        env.run("schedule", "set", "--weekly", "tue", "--hour", "9", "--timezone", "America/New_York",
                now="2026-12-01T14:30:00Z")
        env.make_ready()
        result = env.run("run", "--scheduled", now="2026-12-01T14:31:00Z")
        assert result.exit_code == 0
        assert history(env) == []

    def test_a_missed_occurrence_within_catch_up_runs_late_and_says_so(self, env: Env) -> None:
        env.run("schedule", "set", "--weekly", "tue", "--hour", "9", "--timezone", "America/New_York", now=SAVED)
        env.make_ready()
        env.run("run", "--scheduled", now="2026-12-01T20:00:00Z")  # host was down until 20:00 UTC
        runs = history(env)
        assert [r["occurrence"] for r in runs] == ["2026-12-01T14:00:00+00:00"]
        assert runs[0]["late_seconds"] == 6 * 3600

    def test_an_occurrence_older_than_catch_up_is_not_run_and_status_reports_it_missed(self, env: Env) -> None:
        env.run("schedule", "set", "--weekly", "tue", "--hour", "9", "--timezone", "America/New_York", now=SAVED)
        env.make_ready()
        result = env.run("run", "--scheduled", now="2026-12-02T15:00:00Z")  # 25 h late
        assert result.output == ""
        assert history(env) == []
        status = json.loads(env.run("status", "--json", now="2026-12-02T15:00:00Z").output)
        assert status["missed"] == ["2026-12-01T14:00:00+00:00"]

    def test_start_date_holds_back_every_earlier_occurrence(self, env: Env) -> None:
        env.run("schedule", "set", "--daily", "--hour", "6", "--timezone", "UTC", "--start", "2026-12-03", now=SAVED)
        env.make_ready()
        for day in ("2026-12-01", "2026-12-02", "2026-12-03"):
            env.run("run", "--scheduled", now=f"{day}T06:00:00Z")
        assert [r["occurrence"] for r in history(env)] == ["2026-12-03T06:00:00+00:00"]

    def test_a_disabled_schedule_never_runs(self, env: Env) -> None:
        env.run("schedule", "set", "--daily", "--hour", "6", "--timezone", "UTC", now=SAVED)
        env.make_ready()
        env.run("schedule", "disable", now=SAVED)
        env.run("run", "--scheduled", now="2026-11-27T06:00:00Z")
        assert history(env) == []

    def test_a_missing_config_under_cron_is_a_one_line_config_error(self, env: Env) -> None:
        result = env.run("run", "--scheduled", now=SAVED)
        assert result.exit_code == 3
        assert result.output.strip() == f"Error: no config at {env.config}: run 'psabill config init' to write one"

    def test_an_interrupted_run_is_marked_and_its_occurrence_runs_again(self, env: Env) -> None:
        from psabill.report import Run
        from support.ledger import history_for

        env.run("schedule", "set", "--daily", "--hour", "6", "--timezone", "UTC", now=SAVED)
        env.make_ready()
        occurrence = datetime(2026, 11, 27, 6, tzinfo=UTC)
        # What a run killed with SIGKILL leaves behind: a row still marked running.
        state = history_for(env.state_dir, self.ledger_url)
        state.start_run(Run(trigger="scheduled", started_at=occurrence, occurrence=occurrence))
        state.close()
        env.run("run", "--scheduled", now="2026-11-27T06:05:00Z")
        runs = history(env)
        assert [(r["status"], r["occurrence"]) for r in runs] == [
            ("success", "2026-11-27T06:00:00+00:00"),
            ("interrupted", "2026-11-27T06:00:00+00:00"),
        ]


def firings(lines: list, host: str, start: datetime, end: datetime) -> list:
    """Every instant Debian cron (as cronsim models it) starts one of ``lines``."""
    out = set()
    for line in lines:
        if line.startswith("@reboot"):
            continue
        expr = " ".join(line.split()[:5])
        for fired in CronSim(expr, start.astimezone(ZoneInfo(host))):
            if fired > end:
                break
            out.add(fired.astimezone(UTC))
    return sorted(out)


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, account, host",
    [
        (["--weekly", "tue", "--hour", "9"], "America/New_York", "UTC"),
        (["--monthly", "31", "--hour", "0"], "Asia/Tokyo", "America/Los_Angeles"),
        (["--monthly", "last", "--hour", "23"], "Australia/Lord_Howe", "Europe/London"),
        (["--daily", "--hour", "6"], "UTC", "America/New_York"),  # lands on the host's repeated hour
        (["--daily", "--hour", "2"], "Europe/Berlin", "America/Santiago"),
    ],
    ids=["weekly_ny_on_utc", "monthly_31_tokyo_on_la", "monthly_last_lord_howe_on_london",
         "daily_utc_on_ny_repeated_hour", "daily_gap_berlin_on_santiago"],
)
def test_simulated_cron_runs_every_occurrence_exactly_once(env: Env, args: list, account: str, host: str) -> None:
    """Invoke `run --scheduled` at every firing of the installed lines for a year."""
    env.host(host)
    env.run("schedule", "set", *args, "--timezone", account, now=SAVED)
    env.make_ready()
    lines = [line for line in env.crontab.read_text().splitlines() if is_ours(line, env.config)]
    start = datetime.fromisoformat(SAVED)
    end = start + timedelta(days=366)
    for fired in firings(lines, host, start, end):
        result = env.run("run", "--scheduled", now=fired.isoformat())
        assert result.exit_code == 0, result.output
    expected = json.loads(env.run("schedule", "next", "--count", "400", "--json", now=SAVED).output)
    expected_utc = [row["utc"] for row in expected if datetime.fromisoformat(row["utc"]) <= end]
    ran = sorted(r["occurrence"] for r in history(env))
    assert ran == expected_utc
    for run in history(env):
        late = run["late_seconds"] or 0
        assert late <= 3 * 3600
