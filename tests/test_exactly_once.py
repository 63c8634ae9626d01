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

from support.env import Env, edit_config, write_old
from support.ledger import history_for
from psabill import clock
from psabill.schedule import crontab as cron
from psabill.ledger.history import Ledger
from psabill.report import Run
from psabill.run.perform import Job

UTC = timezone.utc
SAVED = "2026-11-26T12:00:00Z"
DUE = "2026-11-27T06:00:00Z"  # the daily 06:00 UTC occurrence after SAVED


def daily(env: Env, *extra: str, config: Any = None) -> Any:
    args = ["--config", str(config)] if config else []
    return env.run(*args, "schedule", "set", "--daily", "--hour", "6", "--timezone", "UTC", *extra, now=SAVED)


def runs(env: Env) -> List[dict]:
    return json.loads(env.run("history", "--days", "100000", "--json").output)




REAL_PLAN = Job.plan


def before_the_plan(env: Env, action: Any) -> None:
    """Each run calls ``action()`` where it would read the source and the PSA, then plans as usual.

    ``action`` raising (a PSA that is down) or signalling (Ctrl-C, SIGTERM) stops the run there."""
    def plan(self: Job, *, unattended: bool) -> Any:
        action()
        return REAL_PLAN(self, unattended=unattended)

    env.monkeypatch.setattr(Job, "plan", plan)


def planning_as_usual(env: Env) -> None:
    env.monkeypatch.setattr(Job, "plan", REAL_PLAN)


def lock_file(env: Env, config: Any = None) -> Path:
    """The run lock of the config at ``config`` (default: the env's)."""
    from psabill.config.paths import Paths
    from psabill.config.settings import load

    config = config or env.config
    return Paths(config, env.state_dir, None).lock_for(load(config, check_addresses=False).account_id)


def cron_to_sh(line: str) -> str:
    command = line.split(None, 5)[5] if not line.startswith("@") else line.split(None, 1)[1]
    return command.replace("\\%", "%")


# -- 1. Pruning never erases what the guard needs ----------------------------------------


def _record(history: Ledger, started: datetime, occurrence: Any = None) -> None:
    report = Run(trigger="scheduled" if occurrence else "manual", started_at=started, occurrence=occurrence,
                 status="success")
    history.start_run(report)
    report.finished_at = started
    history.finish_run(report, retry=False)


def test_pruning_measures_the_retention_window_from_the_newest_record_never_from_an_earlier_now(tmp_path: Path) -> None:
    day = datetime(2026, 6, 1, 6, tzinfo=UTC)
    with Ledger(tmp_path / "state.db") as history:
        for n in range(10):
            _record(history, day + timedelta(days=n), occurrence=day + timedelta(days=n))
        # Retention 3 days from the newest record (day 9): days 6..9 stay, whatever "now" is.
        assert history.prune(timedelta(days=3), timedelta(hours=27)) == 6
        kept = sorted(r.occurrence for r in history.runs())
    assert kept == [day + timedelta(days=n) for n in range(6, 10)]


def test_pruning_never_erases_a_run_the_guard_could_still_need(tmp_path: Path) -> None:
    newest = datetime(2026, 6, 10, 6, tzinfo=UTC)
    with Ledger(tmp_path / "state.db") as history:
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


# -- 8. Cron's zone, not the shell's --------------------------------------------------------


def test_the_host_zone_is_the_system_zone_never_the_shells_tz(env: Env, tmp_path: Path) -> None:
    localtime = tmp_path / "localtime"
    localtime.symlink_to("/usr/share/zoneinfo/Europe/Berlin")
    env.monkeypatch.setattr(clock, "LOCALTIME", localtime)
    env.monkeypatch.setattr(clock, "TIMEZONE_FILE", tmp_path / "no-timezone")
    env.monkeypatch.delenv("PSABILL_HOST_TZ")
    env.monkeypatch.setenv("TZ", "Asia/Tokyo")
    assert str(clock.host_zone()) == "Europe/Berlin"
    localtime.unlink()
    (tmp_path / "timezone").write_text("America/Chicago\n")
    env.monkeypatch.setattr(clock, "TIMEZONE_FILE", tmp_path / "timezone")
    assert str(clock.host_zone()) == "America/Chicago"
    env.monkeypatch.setenv("PSABILL_HOST_TZ", "Australia/Sydney")
    assert str(clock.host_zone()) == "Australia/Sydney"


def test_schedule_set_says_which_zone_it_used_when_the_shells_tz_differs(env: Env) -> None:
    result = env.run("schedule", "set", "--daily", "--hour", "6", "--timezone", "UTC", now=SAVED,
                     env={"TZ": "Asia/Tokyo"})
    assert result.exit_code == 0, result.output
    assert ("Cron fires in the system zone UTC, not in your shell's TZ=Asia/Tokyo: "
            "the crontab entry was planned for UTC.") in result.output
    quiet = env.run("schedule", "set", "--daily", "--hour", "6", "--timezone", "UTC", now=SAVED, env={"TZ": "UTC"})
    assert "Cron fires" not in quiet.output


# -- 9. One state dir -------------------------------------------------------------------------


def test_the_installed_command_under_crons_empty_environment_writes_the_history_status_shows(
        env: Env, sandbox: Any) -> None:
    env.monkeypatch.delenv("PSABILL_STATE_DIR")
    env.monkeypatch.setenv("XDG_STATE_HOME", str(env.tmp / "xdg-state"))  # the admin's shell only
    assert daily(env).exit_code == 0
    write_old(env.config.parent / "usage.csv", "customer,sku,seats,psa_company\nCUST00001,LastPass,21,\n")
    env.config.parent.joinpath("cw-key").write_text(sandbox.private_key)
    os.chmod(env.config.parent / "cw-key", 0o600)
    edit_config(env, source={"kind": "csv", "path": "usage.csv"}, products={"LastPass": "SEATS-STD"},
                psa={**sandbox.config_section(), "private_key_file": "cw-key", "max_retries": 0})
    line = next(x for x in env.crontab.read_text().splitlines() if not x.startswith("@"))
    home = env.tmp / "cron-home"
    home.mkdir()
    # What cron does: an empty environment, HOME and a minimal PATH, /bin/sh -c LINE.
    # (PSABILL_NOW only pins the clock to the due occurrence.)
    proc = subprocess.run(["env", "-i", f"HOME={home}", "PATH=/usr/bin:/bin", f"PSABILL_NOW={DUE}",
                           "/bin/sh", "-c", cron_to_sh(line)], capture_output=True, text=True, timeout=120)
    assert proc.returncode in (0, 1), proc.stderr
    status = json.loads(env.run("status", "--json", now=DUE).output)
    assert status["state_dir"] == str(env.tmp / "xdg-state" / "psabill")
    assert status["last_run"]["occurrence"] == "2026-11-27T06:00:00+00:00"
    assert not (home / ".local").exists()


# -- 10. Lines are owned by config ------------------------------------------------------------

ADMIN = "MAILTO=ops@msp.example\n0 3 * * * /usr/local/bin/backup  # psabill: keep this, it is mine\n"


def test_schedule_set_cron_install_and_disable_touch_only_their_own_configs_lines(env: Env) -> None:
    other = env.tmp / "other" / "config.toml"
    env.crontab.write_text(ADMIN)
    assert daily(env).exit_code == 0
    assert daily(env, config=other).exit_code == 0
    text = env.crontab.read_text()
    assert text.startswith(ADMIN)
    mine = [x for x in text.splitlines() if cron.is_ours(x, env.config)]
    theirs = [x for x in text.splitlines() if cron.is_ours(x, other)]
    assert len(mine) == 3 and len(theirs) == 3 and not set(mine) & set(theirs)
    assert f"# psabill[{cron.config_id(env.config)}]: billing update for {env.config} " in mine[0]
    assert env.run("schedule", "disable", now=SAVED).exit_code == 0
    assert env.crontab.read_text() == ADMIN + "".join(f"{x}\n" for x in theirs)
    assert env.run("schedule", "enable", now=SAVED).exit_code == 0
    assert env.run("cron", "install", now=SAVED).exit_code == 0
    assert env.run("--config", str(other), "schedule", "disable", now=SAVED).exit_code == 0
    assert env.crontab.read_text() == ADMIN + "".join(f"{x}\n" for x in mine)


def test_an_old_format_line_of_the_same_config_is_migrated_and_another_configs_is_kept(env: Env) -> None:
    assert daily(env, "--no-cron").exit_code == 0
    exe = "/usr/bin/psabill"
    old = (f"0 6 * * * {exe} --config {env.config} --state-dir {env.state_dir} run --scheduled "
           f"# {cron.LEGACY_SCHEDULE_TAG}\n@reboot {exe} --config {env.config} --state-dir {env.state_dir} "
           f"run --scheduled # {cron.LEGACY_REBOOT_TAG}\n")
    foreign = (f"0 7 * * * {exe} --config /srv/other.toml --state-dir /srv/state run --scheduled "
               f"# {cron.LEGACY_SCHEDULE_TAG}\n")
    env.crontab.write_text(ADMIN + old + foreign)
    assert not json.loads(env.run("status", "--json", now=SAVED).output)["cron"]["in_sync"]
    assert env.run("cron", "install", now=SAVED).exit_code == 0
    lines = env.crontab.read_text().splitlines(keepends=True)
    assert "".join(lines[:2]) == ADMIN
    assert all(cron.marker(env.config) in x for x in lines[2:5])
    assert lines[5:] == [foreign]


# -- 11. A mistyped --config changes nothing -----------------------------------------------------


def test_cron_install_with_a_config_that_does_not_exist_is_refused_and_changes_nothing(env: Env) -> None:
    assert daily(env).exit_code == 0
    before = env.snapshot()
    typo = env.tmp / "conf" / "confg.toml"
    result = env.run("--config", str(typo), "cron", "install", now=SAVED)
    assert result.exit_code == 3
    assert result.output.strip() == f"Error: no config at {typo}: run 'psabill config init' to write one"
    assert env.snapshot() == before and not typo.exists()


# -- 12. psabill cron remove ----------------------------------------------------------------------


def test_cron_remove_removes_this_configs_lines(env: Env) -> None:
    other = env.tmp / "other" / "config.toml"
    env.crontab.write_text(ADMIN)
    daily(env)
    daily(env, config=other)
    theirs = [x for x in env.crontab.read_text().splitlines() if cron.is_ours(x, other)]
    config_before = env.config.read_bytes()
    result = env.run("cron", "remove", now=SAVED)
    assert result.exit_code == 0 and f"Removed 3 crontab line(s) for {env.config}." in result.output
    assert env.crontab.read_text() == ADMIN + "".join(f"{x}\n" for x in theirs)
    assert env.config.read_bytes() == config_before
    again = env.run("cron", "remove", now=SAVED)
    assert again.exit_code == 0 and "nothing removed" in again.output


# -- 13. Cron's empty environment --------------------------------------------------------------------


def test_a_secret_from_a_variable_cron_will_not_have_is_warned_about_with_file_recommended(env: Env) -> None:
    env.make_ready()
    edit_config(env, psa={"private_key_env": "CW_PRIVATE_KEY"})
    doc = env.config.read_text().replace('private_key_file = "psa-key"\n', "")
    env.config.write_text(doc)
    warning = ("[psa] private_key_env = 'CW_PRIVATE_KEY': cron runs with an almost empty environment and will "
               "not have $CW_PRIVATE_KEY; use private_key_file (a file readable only by you) instead")
    assert f"Warning: {warning}" in daily(env).output
    assert warning in env.run("status").output
    assert json.loads(env.run("status", "--json").output)["warnings"] == [warning]
    assert f"Warning: {warning}" in env.run("check").output


# -- 15. Not configured is not success --------------------------------------------------------------------


def test_a_run_without_psa_or_source_exits_3_names_what_to_configure_and_records_nothing(env: Env) -> None:
    assert daily(env).exit_code == 0
    for args in (("run", "--scheduled"), ("run", "--yes"), ("run", "--dry-run")):
        result = env.run(*args, now=DUE)
        assert result.exit_code == 3, args
        assert result.output.strip() == (f"Error: not ready: no [psa] configured and no [source] configured: "
                                         f"add [psa] and [source] to {env.config} (psabill config init --help)")
    assert not (env.state_dir / "state.db").exists()


def test_schedule_set_and_status_say_what_is_still_missing(env: Env) -> None:
    out = daily(env).output
    assert f"Not ready: no [psa] configured: scheduled runs will fail until it is added to {env.config}" in out
    assert "Not ready: no [source] configured" in out
    assert "Not ready:  no [psa] configured" in env.run("status", now=SAVED).output
    assert json.loads(env.run("status", "--json", now=SAVED).output)["not_ready"] == [
        "no [psa] configured", "no [source] configured"]
    env.make_ready()
    assert "Not ready" not in env.run("status", now=SAVED).output


# -- 16. Fixed-offset zone names ----------------------------------------------------------------------------


@pytest.mark.parametrize("name, message", [
    ("EST", "EST is a fixed UTC-5 offset with no daylight saving: use America/New_York"),
    ("Etc/GMT+5", "Etc/GMT+5 is a fixed UTC-5 offset with no daylight saving: use the IANA name of the place, "
                  "such as America/New_York"),
    ("HST", "HST is a fixed UTC-10 offset with no daylight saving: use Pacific/Honolulu"),
])
def test_a_fixed_offset_zone_name_is_refused_as_the_account_zone_with_the_iana_name_to_use(
        env: Env, name: str, message: str) -> None:
    result = env.run("schedule", "set", "--daily", "--hour", "6", "--timezone", name, now=SAVED)
    assert result.exit_code == 2
    assert result.output.strip() == f"Error: {message}"
    assert not env.config.exists()
    assert daily(env).exit_code == 0  # UTC is fine
    edit_config(env, account={"timezone": name})
    loaded = env.run("status")
    assert loaded.exit_code == 3
    assert loaded.output.strip() == f"Error: {env.config}: account.timezone = {name!r}: {message}"


# -- 18. Ctrl-C, SIGTERM and "no" ----------------------------------------------------------------------------


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 143)],
                         ids=["SIGINT", "SIGTERM", "SIGHUP"])
def test_sigint_or_sigterm_during_a_run_is_recorded_as_interrupted_and_exits_130_or_143(
        env: Env, signum: int, code: int) -> None:
    daily(env)
    env.make_ready()

    before_the_plan(env, lambda: os.kill(os.getpid(), signum))
    result = env.run("run", "--scheduled", now=DUE)
    assert result.exit_code == code
    name = signal.Signals(signum).name
    assert f"Error: interrupted by {name} before it finished" in result.output
    assert [(r["status"], r["occurrence"]) for r in runs(env)] == [("interrupted", "2026-11-27T06:00:00+00:00")]
    planning_as_usual(env)
    assert env.run("run", "--scheduled", now="2026-11-27T06:10:00Z").exit_code == 0  # it runs again
    assert [r["status"] for r in runs(env)] == ["success", "interrupted"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_DFL


def test_answering_no_at_the_confirmation_prompt_writes_nothing_and_exits_0_with_cancelled(env: Env) -> None:
    daily(env)
    sandbox = env.make_ready()
    write_old(env.config.parent / "usage.csv", "customer,sku,seats\nCUST00001,LastPass,12\n")  # a change to ask about
    env.monkeypatch.setattr("psabill.cli.run.interactive", lambda: True)
    before = env.snapshot()
    result = env.run("run", input="n\n", now=DUE)
    assert result.exit_code == 0
    assert "would update CUST00001 / LastPass: 10 -> 12" in result.output
    assert "cancelled: nothing was changed" in result.output
    assert env.snapshot() == before
    assert sandbox.patches() == []
    assert runs(env) == []  # the plan it showed is discarded


# -- 19. A dry run is history, not the last run ----------------------------------------------------------------


def test_a_dry_run_is_in_the_history_as_dry_run_but_status_shows_the_last_real_run(env: Env) -> None:
    daily(env)
    env.make_ready()
    assert env.run("run", "--scheduled", now=DUE).exit_code == 0
    assert env.run("run", "--dry-run", now="2026-11-27T08:00:00Z").exit_code == 0
    assert [r["trigger"] for r in runs(env)] == ["dry-run", "scheduled"]
    data = json.loads(env.run("status", "--json", now="2026-11-27T09:00:00Z").output)
    assert data["last_run"]["trigger"] == "scheduled"
    assert data["last_run"]["occurrence"] == "2026-11-27T06:00:00+00:00"


# -- 3. Re-saving unchanged occurrences keeps saved_at --------------------------------------------------------


def test_resaving_a_schedule_whose_occurrences_did_not_change_keeps_saved_at_so_the_pending_occurrence_runs(
        env: Env) -> None:
    daily(env)
    env.make_ready()
    saved_at = json.loads(env.run("status", "--json", now=SAVED).output)["schedule"]["saved_at"]
    # 06:30: the 06:00 occurrence is pending (the host was down); only the addresses change.
    assert env.run("schedule", "set", "--daily", "--hour", "6", "--timezone", "UTC", "--notify", "ops@msp.example",
                   "--catch-up", "12h", now="2026-11-27T06:30:00Z").exit_code == 0
    assert json.loads(env.run("status", "--json", now=SAVED).output)["schedule"]["saved_at"] == saved_at
    assert env.run("run", "--scheduled", now="2026-11-27T06:45:00Z").exit_code == 0
    assert [r["occurrence"] for r in runs(env)] == ["2026-11-27T06:00:00+00:00"]
    # A change of hour is a new schedule: a new saved moment.
    env.run("schedule", "set", "--daily", "--hour", "7", "--timezone", "UTC", now="2026-11-27T06:50:00Z")
    assert json.loads(env.run("status", "--json", now=SAVED).output)["schedule"]["saved_at"] == (
        "2026-11-27T06:50:00+00:00")


# -- 4. Nothing that fell due while disabled runs after enable --------------------------------------------------


def test_an_occurrence_that_fell_due_while_the_schedule_was_disabled_never_runs_late_after_enable(env: Env) -> None:
    daily(env)
    env.make_ready()
    env.run("schedule", "disable", now="2026-11-27T05:00:00Z")
    assert env.run("schedule", "enable", now="2026-11-27T07:00:00Z").exit_code == 0  # 06:00 fell due while off
    assert env.run("run", "--scheduled", now="2026-11-27T07:05:00Z").exit_code == 0
    assert runs(env) == []
    status = json.loads(env.run("status", "--json", now="2026-11-28T12:00:00Z").output)
    assert status["schedule"]["enabled_at"] == "2026-11-27T07:00:00+00:00"
    assert status["missed"] == []
    assert env.run("run", "--scheduled", now="2026-11-28T06:00:00Z").exit_code == 0
    assert [r["occurrence"] for r in runs(env)] == ["2026-11-28T06:00:00+00:00"]


# -- 2. An aborted run is retried -------------------------------------------------------------------------------


def test_an_aborted_run_is_retried_at_later_firings_within_catch_up_and_then_listed_as_missed_with_its_reason(
        env: Env) -> None:
    from psabill.errors import AbortError

    daily(env, "--catch-up", "3h", "--notify", "ops@msp.example")
    env.make_ready()
    lines = env.crontab.read_text().splitlines()
    assert len(lines) == 3 and lines[0].startswith("0 6 * * * ") and lines[1].startswith("@reboot ")
    assert lines[2].startswith("0 * * * * ") and "retry after an aborted run" in lines[2]

    def down() -> None:
        raise AbortError("PSA https://psa.invalid is unreachable; nothing was written: connection refused")

    before_the_plan(env, down)
    first = env.run("run", "--scheduled", now=DUE)
    assert first.exit_code != 0 and "unreachable" in first.output
    status = json.loads(env.run("status", "--json", now="2026-11-27T06:05:00Z").output)
    assert status["retrying"]["occurrence"] == "2026-11-27T06:00:00+00:00"
    assert status["retrying"]["attempts"] == 1
    assert status["retrying"]["next_attempt"]["utc"] == "2026-11-27T07:00:00+00:00"
    assert "unreachable" in status["retrying"]["last_reason"]
    assert status["missed"] == [] and status["missed_details"] == []
    text = env.run("status", now="2026-11-27T06:05:00Z").output
    assert "retrying: 0 item(s), next attempt at Fri 2026-11-27 07:00 UTC" in text
    # Not-due firings in between stay silent and cheap; the hourly firings retry.
    assert env.run("run", "--scheduled", now="2026-11-27T07:00:00Z").exit_code != 0
    assert env.run("run", "--scheduled", now="2026-11-27T08:00:00Z").exit_code != 0
    assert env.run("run", "--scheduled", now="2026-11-27T09:00:00Z").exit_code != 0
    assert env.run("run", "--scheduled", now="2026-11-27T10:00:00Z").exit_code == 0  # past catch_up: nothing
    assert [(r["status"], r["occurrence"]) for r in runs(env)] == [("aborted", "2026-11-27T06:00:00+00:00")] * 4
    # One report per occurrence's story: the first failure, then quiet retries, then the last attempt within
    # catch-up (nothing tries it after that) reports again.
    assert len(list((env.tmp / "outbox").glob("*.eml"))) == 2
    assert [r["email"]["status"] for r in runs(env)] == ["sent", "skipped", "skipped", "sent"]
    later = json.loads(env.run("status", "--json", now="2026-11-27T10:00:00Z").output)
    assert later["retrying"] is None
    assert later["missed"] == ["2026-11-27T06:00:00+00:00"]
    assert later["missed_details"] == [{"occurrence": "2026-11-27T06:00:00+00:00", "attempts": 4,
                                        "reason": status["retrying"]["last_reason"]}]
    assert "Missed:     Fri 2026-11-27 06:00 UTC (PSA https://psa.invalid is unreachable" in env.run(
        "status", now="2026-11-27T10:00:00Z").output
    # The next day the PSA is down for one firing only: the retry an hour later runs it, once.
    assert env.run("run", "--scheduled", now="2026-11-28T06:00:00Z").exit_code != 0
    planning_as_usual(env)
    assert env.run("run", "--scheduled", now="2026-11-28T07:00:00Z").exit_code == 0
    assert env.run("run", "--scheduled", now="2026-11-28T08:00:00Z").exit_code == 0
    assert [r["status"] for r in runs(env) if r["occurrence"].startswith("2026-11-28")] == ["success", "aborted"]
    done = json.loads(env.run("status", "--json", now="2026-11-29T05:00:00Z").output)
    assert done["missed"] == ["2026-11-27T06:00:00+00:00"] and done["retrying"] is None


# -- 17. The lock has a deadline ---------------------------------------------------------------------------------


def test_the_results_email_has_an_overall_deadline_so_a_dribbling_smtp_server_never_holds_the_run_lock_past_it(
        env: Env) -> None:
    import socket
    import threading
    import time

    from psabill.ledger.lock import run_lock

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    stop = threading.Event()

    def dribble() -> None:  # a greeting that never ends: one byte every second
        conn, _ = server.accept()
        with conn:
            for byte in iter(lambda: b"2", None):
                if stop.wait(1.0):
                    return
                try:
                    conn.sendall(byte)
                except OSError:
                    return

    thread = threading.Thread(target=dribble, daemon=True)
    thread.start()
    daily(env, "--notify", "ops@msp.example")
    env.make_ready()
    edit_config(env, notify={"transport": "smtp", "smtp": {"host": "127.0.0.1", "port": port,
                                                            "security": "none", "timeout": 3}})
    recorded: List[str] = []
    real_report = __import__("psabill.notify", fromlist=["report_run"]).report_run

    def report_run(settings: Any, paths: Any, report: Any, history: Any, **kwargs: Any) -> Any:
        recorded.append(history.run(report.id).status)  # the run is finished in the ledger first
        return real_report(settings, paths, report, history, **kwargs)

    env.monkeypatch.setattr("psabill.notify.report_run", report_run)
    try:
        started = time.monotonic()
        result = env.run("run", "--scheduled", now=DUE)
        took = time.monotonic() - started
    finally:
        stop.set()
        server.close()
    assert recorded == ["success"]
    assert took < 3 + 2.5, took  # per-read timeouts alone would wait forever
    assert result.exit_code != 0
    assert "did not finish within 3s in all" in result.output
    with run_lock(lock_file(env), 0):  # free at once
        pass
    assert [(r["status"], r["email"]["status"]) for r in runs(env)] == [("success", "failed")]


# -- 14. Edits keep the admin's bytes -------------------------------------------------------------------------------

HAND_WRITTEN = """\
# Billing for Acme MSP -- edited by hand; keep these notes.
version = 1

[account]
timezone = "UTC"   # where the billing day starts
name = "Acme MSP"

[schedule]
# managed by 'psabill schedule set'
mode = "daily"
hour = 6
enabled = true
saved_at = 2026-11-26T12:00:00Z
catch_up = "24h"  # a day

[psa]
kind      = "connectwise"          # aligned by hand
url       = "https://psa.invalid"
company   = "msp"
public_key = 'pub'
private_key_file = "psa-key"
client_id = "client"

[source]
kind = "csv"
path = "usage.csv"

[products]
LastPass = "SEATS-STD"   # the only SKU we bill

[notify]
emails = [
    "billing@msp.example",  # finance
]
transport = "file"
file = { dir = "outbox" }
"""


def test_schedule_set_enable_and_disable_keep_every_comment_key_order_and_formatting_outside_the_keys_they_change(
        env: Env) -> None:
    env.config.parent.mkdir(parents=True)
    env.config.write_text(HAND_WRITTEN)
    os.chmod(env.config, 0o600)
    assert env.run("schedule", "disable", now=SAVED).exit_code == 0
    assert env.config.read_text() == HAND_WRITTEN.replace("enabled = true", "enabled = false")
    assert env.run("schedule", "enable", now="2026-11-26T13:00:00Z").exit_code == 0
    assert env.config.read_text() == HAND_WRITTEN.replace(
        'catch_up = "24h"  # a day\n', 'catch_up = "24h"  # a day\nenabled_at = 2026-11-26T13:00:00Z\n')
    result = env.run("schedule", "set", "--daily", "--hour", "7", "--timezone", "UTC", now="2026-11-26T14:00:00Z")
    assert result.exit_code == 0, result.output
    assert env.config.read_text() == HAND_WRITTEN.replace("hour = 6", "hour = 7").replace(
        "saved_at = 2026-11-26T12:00:00Z", "saved_at = 2026-11-26T14:00:00Z")
    assert json.loads(env.run("status", "--json", now=SAVED).output)["cron"]["in_sync"]


def test_schedule_set_writes_through_a_symlinked_config_to_its_target(env: Env) -> None:
    target = env.tmp / "etc" / "psabill.toml"
    target.parent.mkdir()
    target.write_text(HAND_WRITTEN)
    os.chmod(target, 0o600)
    env.config.parent.mkdir(parents=True)
    env.config.symlink_to(target)
    assert env.run("schedule", "set", "--daily", "--hour", "7", "--timezone", "UTC", now=SAVED).exit_code == 0
    assert env.config.is_symlink() and env.config.resolve() == target
    assert "hour = 7" in target.read_text() and "# the only SKU we bill" in target.read_text()
    assert env.run("schedule", "disable", now=SAVED).exit_code == 0
    assert env.config.is_symlink() and "enabled = false" in target.read_text()


def test_two_concurrent_schedule_sets_leave_config_and_crontab_in_agreement(env: Env) -> None:
    import sys

    from psabill.config.paths import Paths
    from psabill.config.settings import load

    daily(env)
    env.make_ready()
    child_env = {**os.environ, "PSABILL_NOW": SAVED}
    paths = Paths.resolve(str(env.config), str(env.state_dir))
    for round_ in range(20):
        days = ("mon", "tue") if round_ % 2 else ("wed", "thu")
        procs = [subprocess.Popen([sys.executable, "-m", "psabill", "schedule", "set", "--weekly", day, "--hour",
                                   "9", "--timezone", "UTC"], env=child_env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT) for day in days]
        outputs = [p.communicate(timeout=60)[0] for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outputs
        settings = load(env.config)
        installed = cron.Crontab(env.crontab, env.config).lines()
        expected = cron.desired_lines(paths, settings, datetime(2026, 11, 26, 12, tzinfo=UTC), UTC)
        assert installed == expected, (round_, settings.schedule.weekday, installed)


# -- Acceptance: concurrency, a full disk, a simulated year ----------------------------------------------------------


def test_three_guards_started_together_on_a_fresh_state_dir_give_exactly_one_run_and_all_exit_0(env: Env) -> None:
    import sys

    daily(env)
    env.make_ready()
    for round_ in range(8):
        state = env.tmp / f"state-{round_}"
        child_env = {**os.environ, "PSABILL_NOW": DUE, "PSABILL_STATE_DIR": str(state)}
        procs = [subprocess.Popen([sys.executable, "-m", "psabill", "run", "--scheduled"], env=child_env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for _ in range(3)]
        outputs = [p.communicate(timeout=120)[0] for p in procs]
        assert [p.returncode for p in procs] == [0, 0, 0], outputs
        with history_for(state, None, env.config) as history:
            assert [(r.status, r.occurrence) for r in history.runs()] == [
                ("success", datetime(2026, 11, 27, 6, tzinfo=UTC))], round_


def test_a_full_disk_at_the_first_run_then_freed_gives_a_working_history(env: Env) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs for the state dir needs root")
    daily(env)
    env.make_ready()
    env.state_dir.mkdir(mode=0o700)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(env.state_dir)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        message = f"cannot mount a tmpfs for the full-disk test: {mounted.stderr.strip()}"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    try:
        filler = env.state_dir / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
        try:  # fill it to the last byte
            for size in (4096, 512, 1):
                try:
                    while True:
                        os.write(fd, b"\0" * size)
                except OSError:
                    pass
        finally:
            os.close(fd)
        full = env.run("run", "--scheduled", now=DUE)
        assert full.exit_code != 0
        assert "Traceback" not in full.output and len(full.output.strip().splitlines()) == 1, full.output
        filler.unlink()
        freed = env.run("run", "--scheduled", now="2026-11-27T06:10:00Z")
        assert freed.exit_code == 0, freed.output
        assert [(r["status"], r["occurrence"]) for r in runs(env) if r["status"] != "interrupted"] == [
            ("success", "2026-11-27T06:00:00+00:00")]
        assert env.run("run", "--scheduled", now="2026-11-27T07:00:00Z").exit_code == 0
        assert len([r for r in runs(env) if r["status"] == "success"]) == 1
        assert env.run("status", "--json", now="2026-11-27T07:00:00Z").exit_code == 0
    finally:
        subprocess.run(["umount", "--lazy", str(env.state_dir)], check=True)  # the in-process log may hold a file


YEAR_ZONES = [("America/New_York", "UTC"), ("UTC", "Europe/Berlin"), ("Australia/Sydney", "America/Los_Angeles"),
              ("Europe/London", "America/New_York"), ("Asia/Kolkata", "Europe/London")]
YEAR_MODES = [("--daily",), ("--weekly", "sun"), ("--monthly", "last")]


@pytest.mark.slow
@pytest.mark.parametrize("account, host", YEAR_ZONES, ids=[f"{a}-on-{h}" for a, h in YEAR_ZONES])
def test_a_simulated_year_of_firings_runs_every_occurrence_exactly_once(
        env: Env, account: str, host: str) -> None:
    """Cron's firings for a year (each occurrence's firing, late as Debian cron makes it on a repeated
    host hour, and the hourly retry firings after it) through the real guard and a real History,
    across a clock jump of two years and back, a PSA outage, a re-save after a missed firing and a
    disable/enable over an occurrence."""
    import itertools
    from zoneinfo import ZoneInfo

    from psabill.schedule import cronplan

    from psabill.errors import AbortError
    from psabill.config.paths import Paths
    from psabill.run.guard import run_scheduled
    from psabill.config.settings import load

    env.host(host)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    end = datetime(2027, 1, 1, tzinfo=UTC)
    outage = {"on": False}

    def refresh() -> None:
        if outage["on"]:
            raise AbortError("PSA https://psa.invalid is unreachable; nothing was written")

    before_the_plan(env, refresh)
    for mode in YEAR_MODES:
        config = env.tmp / mode[0].strip("-") / "config.toml"
        paths = Paths.resolve(str(config), str(config.parent / "state"))
        args = ["--config", str(config), "--state-dir", str(paths.state_dir), "schedule", "set", *mode,
                "--hour", "2", "--timezone", account, "--catch-up", "6h"]
        assert env.run(*args, now=start.isoformat()).exit_code == 0
        env.config = config
        env.make_ready()
        settings = load(config)
        schedule = settings.when
        assert schedule is not None
        plan = cronplan.plan(schedule, ZoneInfo(host), start)
        late = {x.occurrence: x.fires_at for x in plan.late}
        occurrences = list(itertools.takewhile(lambda o: o < end, schedule.occurrences(start)))
        n = len(occurrences)
        jump, down, resave, off = n // 5, 2 * n // 5, 3 * n // 5, 4 * n // 5

        def fire(at: datetime) -> None:
            run_scheduled(paths, lambda: at)  # an aborted run returns its outcome; nothing raises

        for index, occurrence in enumerate(occurrences):
            first = late.get(occurrence, occurrence)
            assert plan.matches(first.astimezone(ZoneInfo(host)))  # the installed line fires here
            if index == off:
                env.run(*args[:4], "schedule", "disable", now=(occurrence - timedelta(hours=1)).isoformat())
            if index == jump:
                fire(first + timedelta(days=730))  # the clock reads two years ahead for one firing
            elif index == down:
                outage["on"] = True
                fire(first)
                outage["on"] = False
            elif index == resave:
                env.run(*args, now=(first + timedelta(minutes=30)).isoformat())  # missed firing, then re-saved
            elif index != off:
                fire(first)
            if index == off:
                env.run(*args[:4], "schedule", "enable", now=(occurrence + timedelta(minutes=30)).isoformat())
            for hours in (1, 2):  # the hourly retry line at the occurrence's minute
                fire(first + timedelta(hours=hours))
        with history_for(paths.state_dir, None, config) as history:
            rows = [r for r in history.runs() if r.trigger == "scheduled"]
        done = [r.occurrence.isoformat() for r in rows if r.status == "success" and r.occurrence]
        in_year = sorted(o for o in done if o < end.isoformat())
        expected = sorted(o.isoformat() for i, o in enumerate(occurrences) if i != off)
        assert len(done) == len(set(done)), f"{mode}: an occurrence ran twice"
        assert in_year == expected, (mode, sorted(set(expected) - set(in_year)), sorted(set(in_year) - set(expected)))
        assert [r.occurrence for r in rows if r.status == "aborted"] == [occurrences[down]]
