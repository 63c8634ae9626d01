"""`psabill schedule ...` through the real CLI: outputs, saved config, crontab, bad input."""

from __future__ import annotations

import json
import os
import stat
import sys

import pytest

from support.env import Env, last_line
from psabill.schedule.crontab import config_id

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

NOW = "2026-11-26T12:00:00+00:00"


def saved(env: Env) -> dict:
    return tomllib.loads(env.config.read_text())


class TestScheduleSet:
    def test_it_saves_a_weekly_schedule_and_installs_the_example_expression(self, env: Env) -> None:
        result = env.run("schedule", "set", "--weekly", "tue", "--hour", "9", "--timezone", "America/New_York",
                         "--notify", "billing@msp.example, ops@msp.example", now=NOW)
        assert result.exit_code == 0, result.output
        assert "Saved: Every Tuesday at 09:00 (America/New_York)." in result.output
        data = saved(env)
        assert data["version"] == 1
        assert data["account"]["timezone"] == "America/New_York"
        assert data["schedule"]["mode"] == "weekly"
        assert data["schedule"]["weekday"] == "tue"
        assert data["schedule"]["hour"] == 9
        assert data["schedule"]["saved_at"].isoformat() == NOW
        assert data["notify"]["emails"] == ["billing@msp.example", "ops@msp.example"]
        lines = env.crontab.read_text().splitlines()
        assert lines[0].startswith("0 13,14 * * 2 ")
        assert "run --scheduled" in lines[0] and f"# psabill[{config_id(env.config)}]: " in lines[0]
        assert lines[1].startswith("@reboot ") and "run --scheduled" in lines[1]

    def test_the_config_is_created_with_mode_0600(self, env: Env) -> None:
        env.run("schedule", "set", "--daily", "--hour", "6", "--timezone", "UTC", now=NOW)
        assert stat.S_IMODE(os.stat(env.config).st_mode) == 0o600

    @pytest.mark.parametrize(
        "args, description",
        [
            (["--monthly", "1", "--hour", "0"], "On day 1 of every month at 00:00 (Europe/Berlin)"),
            (["--monthly", "last", "--hour", "23"], "On the last day of every month at 23:00 (Europe/Berlin)"),
            (["--daily", "--hour", "6"], "Every day at 06:00 (Europe/Berlin)"),
            (["--weekly", "Friday", "--hour", "17"], "Every Friday at 17:00 (Europe/Berlin)"),
            (["--weekly", "SUN", "--hour", "0"], "Every Sunday at 00:00 (Europe/Berlin)"),
        ],
        ids=["monthly_first", "monthly_last", "daily", "weekly_full_name", "weekly_upper_case"],
    )
    def test_it_accepts_every_mode(self, env: Env, args: list, description: str) -> None:
        result = env.run("schedule", "set", *args, "--timezone", "Europe/Berlin", now=NOW)
        assert result.exit_code == 0, result.output
        assert f"Saved: {description}." in result.output

    def test_it_says_when_the_day_clamps_in_short_months(self, env: Env) -> None:
        result = env.run("schedule", "set", "--monthly", "31", "--hour", "9", "--timezone", "UTC", now=NOW)
        assert result.exit_code == 0
        # Issue 24: said once, in the saved schedule's own sentence.
        assert result.output.count("shorter months") == 1, result.output
        assert "in shorter months, on the month's last day" in result.output

    def test_it_does_not_mention_clamping_for_day_28(self, env: Env) -> None:
        result = env.run("schedule", "set", "--monthly", "28", "--hour", "9", "--timezone", "UTC", now=NOW)
        assert "does not exist in every month" not in result.output

    def test_without_timezone_it_keeps_the_saved_zone(self, env: Env) -> None:
        env.run("schedule", "set", "--daily", "--hour", "6", "--timezone", "Asia/Tokyo", now=NOW)
        result = env.run("schedule", "set", "--weekly", "mon", "--hour", "7", now=NOW)
        assert "Every Monday at 07:00 (Asia/Tokyo)" in result.output
        assert "host's zone" not in result.output

    def test_without_any_zone_it_uses_the_host_zone_and_says_so(self, env: Env) -> None:
        env.host("Australia/Sydney")
        result = env.run("schedule", "set", "--daily", "--hour", "6", now=NOW)
        assert result.exit_code == 0
        assert "using the host's zone, Australia/Sydney" in result.output
        assert saved(env)["account"]["timezone"] == "Australia/Sydney"

    def test_no_cron_leaves_the_crontab_alone(self, env: Env) -> None:
        result = env.run("schedule", "set", "--daily", "--hour", "6", "--timezone", "UTC", "--no-cron", now=NOW)
        assert result.exit_code == 0
        assert not env.crontab.exists()
        assert env.config.exists()

    def test_rerunning_set_replaces_psabills_lines_in_place(self, env: Env) -> None:
        env.crontab.write_text("MAILTO=ops@msp.example\n# keep me\n*/5 * * * * /usr/bin/true\n")
        env.run("schedule", "set", "--daily", "--hour", "6", "--timezone", "UTC", now=NOW)
        env.crontab.write_text(env.crontab.read_text() + "15 3 * * * /usr/local/bin/backup  # after\n")
        env.run("schedule", "set", "--daily", "--hour", "7", "--timezone", "UTC", now=NOW)
        lines = env.crontab.read_text().splitlines()
        assert lines[:3] == ["MAILTO=ops@msp.example", "# keep me", "*/5 * * * * /usr/bin/true"]
        assert lines[3].startswith("0 7 * * * ")
        assert lines[4].startswith("@reboot ")
        assert lines[5].startswith("0 * * * * ")  # retries an aborted run within catch-up
        assert lines[6] == "15 3 * * * /usr/local/bin/backup  # after"
        assert len(lines) == 7

    def test_it_keeps_sections_it_does_not_own(self, env: Env) -> None:
        env.config.parent.mkdir(parents=True)
        env.config.write_text('[psa]\nkind = "connectwise"\nurl = "https://api-na.myconnectwise.net"\n\n'
                              '[products]\n"LastPass+MFA" = "LP-MFA"\n')
        os.chmod(env.config, 0o600)
        env.run("schedule", "set", "--daily", "--hour", "6", "--timezone", "UTC", now=NOW)
        data = saved(env)
        assert data["psa"] == {"kind": "connectwise", "url": "https://api-na.myconnectwise.net"}
        assert data["products"] == {"LastPass+MFA": "LP-MFA"}


class TestBadInput:
    """Each bad input: exit code, one exact error line naming the value, nothing changed."""

    @pytest.mark.parametrize(
        "args, code, message",
        [
            (["--daily", "--hour", "24"], 2, "Error: hour 24 is not 0-23 (full hours only)"),
            (["--daily", "--hour", "9:30"], 2, "Error: hour '9:30': full hours only (0-23)"),
            (["--daily", "--hour", "-1"], 2, "Error: hour '-1' is not 0-23"),
            (["--monthly", "0", "--hour", "9"], 2, "Error: --monthly: day 0 is not 1-31 or 'last'"),
            (["--monthly", "32", "--hour", "9"], 2, "Error: --monthly: day 32 is not 1-31 or 'last'"),
            (["--weekly", "tuseday", "--hour", "9"], 2,
             "Error: unknown weekday 'tuseday': use mon..sun or a full name such as Tuesday"),
            (["--daily", "--hour", "9", "--timezone", "Mars/Olympus"], 2,
             "Error: unknown time zone 'Mars/Olympus': use an IANA name such as America/New_York"),
            (["--daily", "--weekly", "mon", "--hour", "9"], 2,
             "Error: give exactly one of --monthly DAY, --weekly WEEKDAY or --daily (got --weekly and --daily)"),
            (["--hour", "9"], 2, "Error: give exactly one of --monthly DAY, --weekly WEEKDAY or --daily"),
            (["--daily", "--hour", "9", "--notify", "billing@@msp"], 2, "Error: address 'billing@@msp' is not valid"),
            (["--daily", "--hour", "9", "--notify", " , "], 2, "Error: address list ' , ' is empty: give at least one address"),
            (["--daily", "--hour", "9", "--start", "2026-02-30"], 2, "Error: --start '2026-02-30' is not a date (YYYY-MM-DD)"),
            (["--daily", "--hour", "9", "--catch-up", "1h"], 2,
             "Error: --catch-up '1h': must be at least 3h (an occurrence can run up to 3 hours late)"),
        ],
        ids=["hour_24", "hour_9_30", "hour_negative", "day_0", "day_32", "unknown_weekday", "unknown_zone",
             "two_modes", "no_mode", "bad_address", "empty_address_list", "bad_start", "short_catch_up"],
    )
    def test_it_refuses_and_changes_nothing(self, env: Env, args: list, code: int, message: str) -> None:
        env.run("schedule", "set", "--weekly", "tue", "--hour", "9", "--timezone", "America/New_York", now=NOW)
        before = env.snapshot()
        result = env.run("schedule", "set", *args, now=NOW)
        assert result.exit_code == code, result.output
        assert last_line(result.output).startswith(message)
        assert len([line for line in result.output.splitlines() if line.strip()]) == 1
        assert "Traceback" not in result.output
        assert env.snapshot() == before

    def test_malformed_toml_is_a_config_error_with_the_line_number(self, env: Env) -> None:
        env.config.parent.mkdir(parents=True)
        env.config.write_text('[schedule]\nmode = "weekly"\nhour = \n')
        before = env.snapshot()
        result = env.run("schedule", "set", "--daily", "--hour", "6", "--timezone", "UTC", now=NOW)
        assert result.exit_code == 3
        assert last_line(result.output).startswith(f"Error: {env.config}: malformed TOML:")
        assert "line 3" in result.output
        assert env.snapshot() == before

    def test_an_unwritable_crontab_leaves_config_and_crontab_unchanged(self, env: Env) -> None:
        env.run("schedule", "set", "--weekly", "tue", "--hour", "9", "--timezone", "UTC", now=NOW)
        before = env.snapshot()
        blocker = env.tmp / "not-a-dir"
        blocker.write_text("")
        result = env.run("schedule", "set", "--daily", "--hour", "6", now=NOW,
                         env={"PSABILL_CRONTAB": str(blocker / "crontab")})
        assert result.exit_code == 6
        assert last_line(result.output).startswith(f"Error: cannot read crontab file {blocker / 'crontab'}")
        assert env.snapshot() == before

    def test_a_malformed_psabill_now_is_refused(self, env: Env) -> None:
        result = env.run("schedule", "set", "--daily", "--hour", "6", "--timezone", "UTC", now="yesterday")
        assert result.exit_code == 2
        assert last_line(result.output) == (
            "Error: PSABILL_NOW 'yesterday' is not an ISO-8601 instant (example: 2026-03-08T09:00:00-05:00)"
        )

    def test_psabill_now_without_an_offset_is_refused(self, env: Env) -> None:
        result = env.run("schedule", "set", "--daily", "--hour", "6", "--timezone", "UTC", now="2026-03-08T09:00:00")
        assert result.exit_code == 2
        assert "has no UTC offset" in last_line(result.output)


class TestShowNextEnableDisable:
    def test_next_lists_account_host_and_utc_times(self, env: Env) -> None:
        env.host("Europe/London")
        env.run("schedule", "set", "--weekly", "tue", "--hour", "9", "--timezone", "America/New_York", now=NOW)
        result = env.run("schedule", "next", "--count", "3", "--json", now=NOW)
        rows = json.loads(result.output)
        assert rows == [
            {"account": "2026-12-01T09:00:00-05:00", "host": "2026-12-01T14:00:00+00:00", "utc": "2026-12-01T14:00:00+00:00"},
            {"account": "2026-12-08T09:00:00-05:00", "host": "2026-12-08T14:00:00+00:00", "utc": "2026-12-08T14:00:00+00:00"},
            {"account": "2026-12-15T09:00:00-05:00", "host": "2026-12-15T14:00:00+00:00", "utc": "2026-12-15T14:00:00+00:00"},
        ]

    def test_next_crosses_the_spring_forward_gap_at_the_shifted_time(self, env: Env) -> None:
        # America/New_York springs forward 2027-03-14 02:00 -> 03:00.
        env.run("schedule", "set", "--daily", "--hour", "2", "--timezone", "America/New_York", now="2027-03-12T12:00:00Z")
        rows = json.loads(env.run("schedule", "next", "--count", "3", "--json", now="2027-03-12T12:00:00Z").output)
        assert [row["account"] for row in rows] == [
            "2027-03-13T02:00:00-05:00", "2027-03-14T03:00:00-04:00", "2027-03-15T02:00:00-04:00",
        ]

    def test_show_json_has_the_fields(self, env: Env) -> None:
        env.run("schedule", "set", "--monthly", "last", "--hour", "23", "--timezone", "UTC", "--start", "2027-01-01", now=NOW)
        data = json.loads(env.run("schedule", "show", "--json", now=NOW).output)
        assert data["mode"] == "monthly" and data["day"] == "last" and data["hour"] == 23
        assert data["start"] == "2027-01-01"
        assert data["enabled"] is True
        assert data["schema"] == 1  # every --json object carries it

    def test_disable_removes_the_cron_entry_and_keeps_the_settings(self, env: Env) -> None:
        env.crontab.write_text("# mine\n")
        env.run("schedule", "set", "--daily", "--hour", "6", "--timezone", "UTC", now=NOW)
        result = env.run("schedule", "disable", now=NOW)
        assert result.exit_code == 0
        assert env.crontab.read_text() == "# mine\n"
        assert saved(env)["schedule"]["enabled"] is False
        assert saved(env)["schedule"]["hour"] == 6
        env.run("schedule", "enable", now=NOW)
        assert env.crontab.read_text().splitlines()[1].startswith("0 6 * * * ")

    def test_next_without_a_schedule_is_a_config_error(self, env: Env) -> None:
        result = env.run("schedule", "next")
        assert result.exit_code == 3
        assert last_line(result.output) == f"Error: no schedule saved in {env.config}: run 'psabill schedule set' first"
