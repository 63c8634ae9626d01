"""The admin's experience: typos get the fix, repeated options are refused, -q/-v anywhere,
colour only on a terminal, --json everywhere a result is printed, shell completion."""

from __future__ import annotations

import json

import pytest

import tomli_w

from support.env import Env, last_line, tomllib

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
    @pytest.mark.parametrize("typed, meant", [("wednsday", "wed"), ("Fryday", "fri"), ("tuseday", "tue")])
    def test_a_near_weekday(self, env: Env, typed: str, meant: str) -> None:
        line = one_error_line(env, *SET, "--weekly", typed, "--hour", "9", "--timezone", "UTC")
        assert line.endswith(f"(did you mean {meant}?)")

    @pytest.mark.parametrize("typed, day", [("Tues", "tue"), ("thurs", "thu")])
    def test_an_unambiguous_weekday_prefix_is_accepted(self, env: Env, typed: str, day: str) -> None:
        result = env.run(*SET, "--weekly", typed, "--hour", "9", "--timezone", "UTC", now=NOW)
        assert result.exit_code == 0, result.output
        assert json.loads(env.run("schedule", "show", "--json").output)["weekday"] == day

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

    @pytest.mark.parametrize("typed", ["Amerca/New_York", "America/New_Yrok"])
    def test_a_misspelt_zone(self, env: Env, typed: str) -> None:
        line = one_error_line(env, *SET, "--daily", "--hour", "9", "--timezone", typed)
        assert line == f"Error: unknown time zone {typed!r}: did you mean America/New_York?"

    @pytest.mark.parametrize("typed", ["america/new_york", "America/New_york", "australia/sydney"])
    def test_a_zone_in_the_wrong_case_is_the_one_zone_it_can_mean(self, env: Env, typed: str) -> None:
        result = env.run(*SET, "--daily", "--hour", "9", "--timezone", typed, now=NOW)
        assert result.exit_code == 0, result.output
        saved = json.loads(env.run("schedule", "show", "--json").output)["timezone"]
        assert saved.lower() == typed.lower() and saved != typed

    def test_a_zone_typo_in_the_config_file_gets_the_fix_too(self, env: Env) -> None:
        env.config.parent.mkdir(parents=True)
        # Intended change: a zone that differs only by case is accepted in the config; a misspelt one is not.
        env.config.write_text('[account]\ntimezone = "europe/london"\n')
        assert env.run("status", now=NOW).exit_code == 0
        env.config.write_text('[account]\ntimezone = "Europe/Londn"\n')
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


def _record_run(env: Env, *items: object) -> int:
    """A finished manual run in the state dir's history, holding ``items``."""
    from datetime import datetime, timezone

    from psabill.config.settings import load
    from psabill.ledger.history import Ledger
    from psabill.report import Run
    from psabill.run.perform import status_of

    env.state_dir.mkdir(parents=True, exist_ok=True)
    started = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)
    run = Run(trigger="manual", started_at=started)
    account = load(env.config, check_addresses=False).account_id  # the config's identity, as the CLI reads it
    with Ledger(env.state_dir / "state.db", account) as ledger:
        run_id = ledger.start_run(run)
        for seq, item in enumerate(items, 1):
            item.seq = seq  # type: ignore[attr-defined]
            run.items.append(item)  # type: ignore[arg-type]
        ledger.store_plan(run, started)
        run.finished_at = started
        run.status = status_of(run)
        ledger.finish_run(run, retry=False)
    return run_id


class TestOutput:
    def test_history_show_never_prints_none(self, env: Env) -> None:
        from psabill.report import Item

        run_id = _record_run(env, Item(customer="CUST1", sku="LastPass", outcome="failed", new=42,
                                       message="no agreement"),
                             Item(customer="CUST2", sku="LastPass", outcome="updated", old=3, new=5))
        result = env.run("history", "show", str(run_id))
        assert result.exit_code == 0, result.output
        assert "None" not in result.output
        assert "CUST1 / LastPass n/a -> 42 no agreement" in result.output
        assert "CUST2 / LastPass 3 -> 5" in result.output

    def test_cron_show_says_when_nothing_is_installed(self, env: Env) -> None:
        result = env.run("cron", "show", now=NOW)
        assert result.exit_code == 0
        assert f"# nothing installed: {env.crontab} has no psabill lines" in result.output
        env.run(*SET, "--daily", "--hour", "6", "--timezone", "UTC", now=NOW)
        assert "nothing installed" not in env.run("cron", "show", now=NOW).output

    def test_a_dry_run_says_would_update(self, env: Env) -> None:
        from psabill.cli.render import run_text
        from psabill.report import Item, Run
        from psabill.run.perform import status_of
        from datetime import datetime, timezone
        import click
        from click.testing import CliRunner

        report = Run(trigger="dry-run", started_at=datetime(2026, 1, 1, tzinfo=timezone.utc), id=3)
        report.items.append(Item(customer="CUST1", sku="LastPass", outcome="planned", old=3, new=5))
        report.status = status_of(report)

        @click.command()
        def show() -> None:
            run_text(report)

        output = CliRunner().invoke(show).output
        assert "would update CUST1 / LastPass: 3 -> 5" in output
        assert "Nothing was written to the PSA (dry run)." in output


class TestQuietAndVerbose:
    def test_quiet_before_or_after_the_command_prints_nothing_on_success(self, env: Env) -> None:
        for args in (["-q", *SET], [*SET, "-q"], ["--quiet", *SET]):
            result = env.run(*args, "--daily", "--hour", "6", "--timezone", "UTC", now=NOW)
            assert result.exit_code == 0
            assert result.output == ""
        assert env.run("-q", "cron", "install", now=NOW).output == ""
        assert env.run("schedule", "disable", "-q").output == ""

    def test_quiet_still_prints_errors(self, env: Env) -> None:
        result = env.run("-q", *SET, "--daily", "--hour", "25", now=NOW)
        assert result.exit_code == 2
        assert last_line(result.output) == "Error: hour 25 is not 0-23 (full hours only)"

    def test_verbose_is_accepted_after_the_command(self, env: Env) -> None:
        # A ready config with an empty usage source: the run succeeds and -v echoes the log to stderr.
        env.make_ready()
        # The log is set up once per process and state dir: each variant gets its own state dir.
        variants = (["-v", "run", "--yes"], ["run", "--yes", "-v"], ["run", "-v", "--yes"], ["run", "--yes"])
        for n, args in enumerate(variants):
            result = env.run("--state-dir", str(env.tmp / f"state{n}"), *args)
            assert result.exit_code == 0, result.output
            assert ("started (manual)" in result.output) == ("-v" in args), args

    def test_verbose_and_quiet_together_are_refused(self, env: Env) -> None:
        assert env.run("-v", "-q", "status").exit_code == 2


class TestColour:
    def _status(self, env: Env, cron: bool = False, **extra: str) -> str:
        env.run(*SET, "--daily", "--hour", "6", "--timezone", "UTC", *([] if cron else ["--no-cron"]), now=NOW)
        result = env.run("status", now=NOW, env=extra)
        assert result.exit_code == 0, result.output
        return result.output

    def test_on_a_terminal_out_of_sync_is_red(self, env: Env) -> None:
        output = self._status(env, CLICOLOR_FORCE="1")
        assert "\x1b[31m" in output and "OUT OF SYNC" in output

    def test_in_sync_is_green(self, env: Env) -> None:
        output = self._status(env, cron=True, CLICOLOR_FORCE="1")
        assert "\x1b[32min sync\x1b[0m" in output

    def test_no_color_and_pipes_are_plain(self, env: Env) -> None:
        assert "\x1b[" not in self._status(env, CLICOLOR_FORCE="1", NO_COLOR="1")
        assert "\x1b[" not in self._status(env)

    def test_run_states(self) -> None:
        from psabill.cli.render import paint

        assert paint("failed", True) == "\x1b[31mfailed\x1b[0m"
        assert paint("aborted", True) == "\x1b[31maborted\x1b[0m"
        assert paint("success", True) == "\x1b[32msuccess\x1b[0m"
        assert paint("success", False) == "success"


class TestJson:
    def test_status_carries_the_version(self, env: Env) -> None:
        from psabill import __version__

        assert json.loads(env.run("status", "--json", now=NOW).output)["version"] == __version__

    def test_schedule_enable_disable_and_cron_install(self, env: Env) -> None:
        env.run(*SET, "--daily", "--hour", "6", "--timezone", "UTC", now=NOW)
        off = json.loads(env.run("schedule", "disable", "--json", now=NOW).output)
        assert off == {"schema": 1, "enabled": False, "config": str(env.config), "cron": {"lines": []}}
        on = json.loads(env.run("schedule", "enable", "--json", now=NOW).output)
        assert on["enabled"] is True and len(on["cron"]["lines"]) == 3
        installed = json.loads(env.run("cron", "install", "--json", now=NOW).output)
        assert installed["installed"] is True and installed["lines"] == on["cron"]["lines"]

    def test_email_test_and_resend(self, env: Env) -> None:
        from psabill.report import Item

        env.run(*SET, "--daily", "--hour", "6", "--timezone", "UTC", "--notify", "billing@msp.example", now=NOW)
        data = tomllib.loads(env.config.read_text())
        data["notify"].update({"transport": "file", "file": {"dir": "outbox"}})
        env.config.write_text(tomli_w.dumps(data))
        sent = json.loads(env.run("email", "test", "--json", now=NOW).output)
        assert sent["sent"] is True and sent["to"] == ["billing@msp.example"]
        run_id = _record_run(env, Item(customer="CUST2", sku="LastPass", outcome="updated", old=3, new=5))
        resent = json.loads(env.run("email", "resend", str(run_id), "--json", now=NOW).output)
        assert resent["run"] == run_id and resent["email"]["status"] == "sent"

    def test_demo(self, env: Env) -> None:
        result = env.run("demo", "--dir", str(env.tmp / "demo"), "--json")
        data = json.loads(result.stdout)  # the JSON is stdout; warnings go to stderr
        assert data["schema"] == 1
        assert data["run"]["status"] in ("success", "partial")
        assert data["files"]["config"] == str(env.tmp / "demo" / "config.toml")


class TestCompletion:
    def complete(self, env: Env, words: str) -> list:
        from click.shell_completion import ShellComplete

        from psabill.cli import cli

        *args, incomplete = words.split(" ")
        return [item.value for item in ShellComplete(cli, {}, "psabill", "_PSABILL_COMPLETE")
                .get_completions(args, incomplete)]

    def test_zones_and_weekdays(self, env: Env) -> None:
        assert "America/New_York" in self.complete(env, "schedule set --timezone america/new")
        assert self.complete(env, "schedule set --weekly t") == ["tue", "thu"]

    def test_run_ids_from_the_history(self, env: Env) -> None:
        assert self.complete(env, "history show ") == []  # no history yet: nothing, and no db created
        assert not (env.state_dir / "state.db").exists()
        first, second = _record_run(env), _record_run(env)
        assert self.complete(env, "history show ") == [str(second), str(first)]
        assert self.complete(env, "email resend ") == [str(second), str(first)]


class TestNeutralisedText:
    def test_control_characters_from_outside_reach_the_terminal_escaped(self, env: Env) -> None:
        """A name carrying a terminal escape or a bidi override is shown as text, never interpreted."""
        env.make_ready()
        (env.config.parent / "usage.csv").write_text("customer,sku,seats\n\x1b[2J\u202eEvil Corp,LastPass,3\n")
        result = env.run("run", "--dry-run")
        assert result.exit_code == 4
        assert "\x1b" not in result.output and "\u202e" not in result.output
        assert "\\x1b[2J" in result.output and "\\u202e" in result.output


class TestRunIds:
    @pytest.mark.parametrize("args", [["history", "show"], ["email", "resend"], ["email", "preview"]])
    @pytest.mark.parametrize("run_id", ["99999999999999999999", "0", "-1"])
    def test_a_run_id_the_history_cannot_hold_is_a_usage_error_not_a_crash(
            self, env: Env, args: list, run_id: str) -> None:
        env.make_ready()
        env.run("run", "--dry-run")  # a history exists, so the id reaches the lookup
        result = env.run(*args, "--", run_id)
        assert result.exit_code == 2
        assert last_line(result.output).startswith("Error: Invalid value for ") and run_id in result.output


def test_cron_remove_json_lists_the_lines_it_removed(env: Env) -> None:
    import json

    assert env.run("schedule", "set", "--daily", "--hour", "6", "--timezone", "UTC").exit_code == 0
    result = env.run("cron", "remove", "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["config"] == str(env.config) and len(data["removed"]) == 3
    assert json.loads(env.run("cron", "remove", "--json").stdout)["removed"] == []
