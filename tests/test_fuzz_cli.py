"""A fuzzing harness: Hypothesis drives the CLI as a user would, and every way out is one line.

Generated arguments, config documents, crontab contents, environment
variables and hostile state dirs (loose, symlinks or directories where state
files belong) go to the real CLI (in-process, through Click's runner). Whatever
happens, psabill must end with a documented exit code, never a traceback, and
a failure must be exactly one ``Error: ...`` line on stderr.

The budget is 300 examples per property in CI; ``PSABILL_FUZZ_EXAMPLES=5000``
runs a longer campaign.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from psabill.cli import cli
from support.env import separate_runner

EXAMPLES = int(os.environ.get("PSABILL_FUZZ_EXAMPLES", "300"))
DOCUMENTED = {0, 1, 2, 3, 4, 5, 6, 7, 130, 143}  # 70 (internal error) is a bug
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

odd_text = st.one_of(
    st.text(max_size=24),
    st.sampled_from(["", " ", "-1", "0", "9am", "9pm", "25", "1e400", "nan", "inf", "9999-12-31", "0001-01-01",
                     "tues", "Tuesday", "last", "32", "24h", "0s", "99999999999999d", "3h", "2h59m", "x" * 300,
                     "99999999999999999999", "-9223372036854775809",
                     "America/New_York", "america/new_york", "EST", "Etc/GMT+5", "../etc/passwd", "/UTC",
                     "a@b.com;c@d.com", "a@b.com, c@d.com", "\x1b[31mred", "\u202egnp.exe", "é", "\x00"]),
)

commands = st.one_of(
    st.tuples(st.just(["schedule", "set"]),
              st.lists(st.sampled_from(["--monthly", "--weekly", "--daily", "--hour", "--timezone", "--notify",
                                        "--start", "--catch-up", "--account-name", "--no-cron", "--json"]),
                       max_size=6),
              st.lists(odd_text, max_size=6)),
    st.tuples(st.sampled_from([["schedule", "show"], ["schedule", "next"], ["schedule", "enable"],
                               ["schedule", "disable"], ["status"], ["status", "--json"], ["cron", "show"],
                               ["cron", "install"], ["history"], ["history", "show"], ["email", "preview"],
                               ["run", "--scheduled"], ["schedule", "export", "--format", "systemd"],
                               ["schedule", "next", "--count"], ["history", "--days"], ["email", "resend"],
                               ["history", "show"], ["email", "preview"], ["config", "show"], ["config", "path"]]),
              st.just([]), st.lists(odd_text, max_size=2)),
)

scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2 ** 63), max_value=2 ** 63 - 1),
                    st.floats(allow_nan=True, allow_infinity=True), odd_text,
                    st.dates(), st.lists(odd_text, max_size=3))

SECTIONS: Dict[str, List[str]] = {
    "account": ["name", "timezone"],
    "schedule": ["enabled", "mode", "day", "weekday", "hour", "start", "saved_at", "catch_up"],
    "notify": ["emails", "on_manual", "transport", "from", "template_dir", "history_url"],
    "source": ["kind", "path", "command", "format", "timeout"],
    "psa": ["kind", "url", "timeout", "concurrency", "max_retries"],
    "history": ["retention_days"],
    "run": ["lock_timeout"],
    "log": ["max_bytes", "backups"],
    "products": ["LastPass"],
}

documents = st.dictionaries(
    st.sampled_from(sorted(SECTIONS)),
    st.sampled_from(sorted(SECTIONS)).flatmap(
        lambda name: st.dictionaries(st.sampled_from(SECTIONS[name]), scalars, max_size=4)),
    max_size=4,
)

config_bytes = st.one_of(
    documents.map(lambda doc: _toml(doc)),
    st.binary(max_size=200),
    st.just(b"\xef\xbb\xbf[account]\ntimezone = \"UTC\"\n"),
)

crontabs = st.one_of(st.none(), st.binary(max_size=200),
                     st.just(b"# psabill: an admin's own line\n0 * * * * true\n"),
                     st.just("MAILTO=ops\n0 9 * * 2 \xff\xfe not utf-8\n".encode("latin-1")))

environments = st.fixed_dictionaries({}, optional={
    "PSABILL_NOW": st.sampled_from(["2026-12-01T14:00:00Z", "0001-01-01T00:00:00Z", "9999-12-31T23:00:00+00:00",
                                    "not a date", "2026-12-01T14:00:00", "2026-13-01T00:00:00Z"]),
    "PSABILL_HOST_TZ": st.sampled_from(["UTC", "Australia/Lord_Howe", "Nowhere/Land", "", "EST5EDT"]),
    "TZ": st.sampled_from(["America/New_York", ":Europe/London", "garbage"]),
})


# A hostile or damaged state dir: loose, a symlink where a state file belongs, a directory for the lock.
state_dirs = st.sampled_from([None, "loose", "state.db->", "state.db-wal->", "psabill.text.log->", "run.lock->",
                              "run.lock/", "psabill.text.log/"])
VICTIM = b"someone else's file\n"


def _prepare_state(root: Path, state: Optional[str]) -> Optional[Path]:
    """Set up ``state`` in root/state; return the file a symlink points at (which must stay untouched)."""
    if state is None:
        return None
    directory = root / "state"
    directory.mkdir(mode=0o700)
    if state == "loose":
        directory.chmod(0o777)
        return None
    name = state.rstrip("/>-") if state.endswith("->") else state.rstrip("/")
    if state.endswith("/"):
        (directory / name).mkdir()
        return None
    victim = root / "victim"
    victim.write_bytes(VICTIM)
    victim.chmod(0o644)
    (directory / name).symlink_to(victim)
    return victim


def _toml(document: Dict[str, Any]) -> bytes:
    try:
        return tomli_w.dumps(document).encode("utf-8")
    except (TypeError, ValueError):  # tomli-w refuses None and some floats: write what TOML can hold
        return repr(document).encode("utf-8", "replace")


def _invoke(root: Path, argv: List[str], config: Optional[bytes], crontab: Optional[bytes],
            environment: Dict[str, str]) -> Any:
    conf = root / "conf" / "config.toml"
    if config is not None:
        conf.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        conf.write_bytes(config)
        conf.chmod(0o600)
    tab = root / "crontab"
    if crontab is not None:
        tab.write_bytes(crontab)
    env = {"PSABILL_CONFIG": str(conf), "PSABILL_STATE_DIR": str(root / "state"), "PSABILL_CRONTAB": str(tab),
           "HOME": str(root / "home"), "PSABILL_HOST_TZ": "UTC", "PSABILL_NOW": "2026-12-01T14:00:00Z",
           **environment}
    return separate_runner().invoke(cli, argv, env=env, catch_exceptions=True)


def _assert_one_clean_line(result: Any, argv: List[str]) -> None:
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"psabill {argv!r} raised {result.exception!r}") from result.exception
    assert result.exit_code in DOCUMENTED, (argv, result.exit_code, result.stderr)
    if result.exit_code != 0 and result.exit_code != 1:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("Error: "), (argv, result.stderr)


@FUZZ
@given(command=commands, config=st.one_of(st.none(), config_bytes), crontab=crontabs, environment=environments,
       state=state_dirs)
def test_any_input_ends_in_one_line_and_a_documented_exit_code(
        command: Any, config: Optional[bytes], crontab: Optional[bytes], environment: Dict[str, str],
        state: Optional[str]) -> None:
    head, options, values = command
    argv = list(head)
    for index, option in enumerate(options):
        argv.append(option)
        if option not in ("--daily", "--no-cron", "--json") and index < len(values):
            argv.append(values[index])
    argv += values[len(options):]
    with tempfile.TemporaryDirectory() as tmp:
        victim = _prepare_state(Path(tmp), state)
        _assert_one_clean_line(_invoke(Path(tmp), argv, config, crontab, environment), argv)
        if victim is not None:  # a symlink in the state dir is never followed
            assert victim.read_bytes() == VICTIM and stat.S_IMODE(victim.stat().st_mode) == 0o644, (argv, state)
        if state == "loose" and (Path(tmp) / "state" / "state.db").exists():
            assert stat.S_IMODE((Path(tmp) / "state").stat().st_mode) == 0o700


@FUZZ
@given(config=config_bytes, crontab=crontabs)
def test_a_valid_schedule_saved_over_any_config_and_crontab_is_all_or_nothing(
        config: bytes, crontab: Optional[bytes]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        argv = ["schedule", "set", "--weekly", "tue", "--hour", "9", "--timezone", "America/New_York"]
        result = _invoke(root, argv, config, crontab, {})
        _assert_one_clean_line(result, argv)
        after_config = (root / "conf" / "config.toml").read_bytes()
        after_tab = (root / "crontab").read_bytes() if (root / "crontab").exists() else None
        if result.exit_code != 0:
            assert after_config == config and after_tab == crontab  # nothing half-written
        else:
            status = _invoke(root, ["status", "--json"], None, None, {})
            assert status.exit_code == 0, status.stderr
            assert '"in_sync": true' in status.stdout
