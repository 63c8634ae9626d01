"""The admin's experience: typos get the fix, repeated options are refused, -q/-v anywhere,
colour only on a terminal, --json everywhere a result is printed, shell completion."""

from __future__ import annotations

import json

import pytest

from support.env import Env, last_line

NOW = "2026-11-26T12:00:00Z"
SET = ("schedule", "set")


def one_error_line(env: Env, *args: str, code: int = 2) -> str:
    before = env.snapshot()
    result = env.run(*args, now=NOW)
    assert result.exit_code == code, result.output
    assert len([line for line in result.output.splitlines() if line.strip()]) == 1, result.output
    assert env.snapshot() == before
    return last_line(result.output)


class TestTyposGetTheFix:
    @pytest.mark.parametrize("typed, meant", [("tues", "tue"), ("thurs", "thu"), ("wednsday", "wed"), ("Fryday", "fri")])
    def test_a_near_weekday(self, env: Env, typed: str, meant: str) -> None:
        line = one_error_line(env, *SET, "--weekly", typed, "--hour", "9", "--timezone", "UTC")
        assert line.endswith(f"(did you mean {meant}?)")

    @pytest.mark.parametrize("typed, hour", [("9am", 9), ("9pm", 21), ("12am", 0), ("12pm", 12), ("9 PM", 21)])
    def test_am_pm_hours_are_read_with_a_note(self, env: Env, typed: str, hour: int) -> None:
        result = env.run(*SET, "--daily", "--hour", typed, "--timezone", "UTC", now=NOW)
        assert result.exit_code == 0, result.output
        assert f"Read --hour {typed} as {hour} (hours are 0-23)." in result.output
        assert json.loads(env.run("schedule", "show", "--json").output)["hour"] == hour

    def test_13pm_is_refused(self, env: Env) -> None:
        assert one_error_line(env, *SET, "--daily", "--hour", "13pm").startswith("Error: hour '13pm' is not 0-23")

    def test_semicolons_between_addresses(self, env: Env) -> None:
        line = one_error_line(env, *SET, "--daily", "--hour", "9", "--timezone", "UTC", "--notify", "a@b.com;c@d.com")
        assert "separate addresses with commas" in line

    @pytest.mark.parametrize("typed", ["america/new_york", "America/New_york", "Amerca/New_York"])
    def test_a_zone_in_the_wrong_case_or_misspelt(self, env: Env, typed: str) -> None:
        line = one_error_line(env, *SET, "--daily", "--hour", "9", "--timezone", typed)
        assert line == f"Error: unknown time zone {typed!r}: did you mean America/New_York?"

    def test_a_zone_typo_in_the_config_file_gets_the_fix_too(self, env: Env) -> None:
        env.config.parent.mkdir(parents=True)
        env.config.write_text('[account]\ntimezone = "europe/london"\n')
        line = one_error_line(env, "status", code=3)
        assert line.endswith("unknown time zone (did you mean Europe/London?)")


class TestModesAndHour:
    @pytest.mark.parametrize("args, message", [
        (["--weekly", "tue", "--weekly", "wed", "--hour", "9"], "Error: --weekly given 2 times (tue, wed): give it once"),
        (["--monthly", "1", "--monthly", "15", "--hour", "9"], "Error: --monthly given 2 times (1, 15): give it once"),
        (["--daily", "--hour", "9", "--hour", "10"], "Error: --hour given 2 times (9, 10): give it once"),
        ([], "Error: give exactly one of --monthly DAY, --weekly WEEKDAY or --daily (the mode is missing)"),
        (["--daily"], "Error: --hour is missing: give the full hour 0-23 in the account time zone, e.g. --hour 9"),
    ], ids=["weekly-twice", "monthly-twice", "hour-twice", "bare", "no-hour"])
    def test_refused_in_one_line(self, env: Env, args: list, message: str) -> None:
        assert one_error_line(env, *SET, *args) == message
