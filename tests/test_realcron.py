"""The one test that drives the real `crontab` binary, as a throwaway system user.

It needs root (to create the user) and Debian's `cron` package; `.ci/run`
installs it. The real user's crontab is never touched.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

pytestmark = pytest.mark.realcron

ADMIN_TAB = 'MAILTO="ops@msp.example"\n# nightly backup\n30 2 * * *   /usr/local/bin/backup --all   # keep spacing\n'
# Modules `psabill schedule` imports, copied where the throwaway user can read them.
MODULES = ["psabill", "click", "crontab", "cronlog", "tomli_w", "tomlkit", "platformdirs", "tzlocal",
           "email_validator", "idna", "dns", "tzdata", "dateutil", "six"]


def _interpreter() -> str:
    # pyenv's Pythons live under /root (mode 0700): the user needs the system one.
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.access(candidate, os.X_OK):
            return candidate
    pytest.fail("no system python3 outside /root for the throwaway user")


def _copy_modules(dest: Path) -> None:
    for name in MODULES:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            continue
        origin = Path(spec.origin)
        if origin.name == "__init__.py":
            shutil.copytree(origin.parent, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(origin, dest / origin.name)


@pytest.fixture
def throwaway_user() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.fail("test_realcron needs root to create a throwaway user (run .ci/run as root)")
    if not shutil.which("crontab"):
        pytest.fail("the crontab binary is missing: apt-get install -y cron")
    name = f"psabill-t{uuid.uuid4().hex[:8]}"
    subprocess.run(["useradd", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", name],
                   check=True)
    try:
        yield name
    finally:
        subprocess.run(["crontab", "-u", name, "-r"], capture_output=True)
        subprocess.run(["userdel", name], check=True)


@pytest.fixture
def world(tmp_path_factory: pytest.TempPathFactory, throwaway_user: str) -> Path:
    base = Path(tmp_path_factory.mktemp("realcron"))
    os.chmod(base, 0o755)
    for parent in base.parents:
        if str(parent).startswith("/tmp/"):
            os.chmod(parent, 0o755)
    _copy_modules(base / "site")
    home = base / "home"
    home.mkdir()
    shutil.chown(home, throwaway_user)
    return base


def as_user(user: str, world: Path, *args: str) -> subprocess.CompletedProcess:
    env: Dict[str, str] = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(world / "home"),
        "PYTHONPATH": str(world / "site"),
        "PSABILL_CONFIG": str(world / "home" / "config.toml"),
        "PSABILL_STATE_DIR": str(world / "home" / "state"),
        "PSABILL_HOST_TZ": "UTC",
        "PSABILL_NOW": "2026-11-26T12:00:00+00:00",
    }
    command: List[str] = ["runuser", "-u", user, "--", "env", "-i"]
    command += [f"{k}={v}" for k, v in env.items()]
    command += [_interpreter(), "-m", "psabill", *args]
    return subprocess.run(command, capture_output=True, text=True)


def user_crontab(user: str) -> str:
    proc = subprocess.run(["crontab", "-u", user, "-l"], capture_output=True, text=True)
    return proc.stdout


def test_schedule_set_writes_the_users_real_crontab_and_keeps_every_other_line(throwaway_user: str, world: Path) -> None:
    subprocess.run(["crontab", "-u", throwaway_user, "-"], input=ADMIN_TAB, text=True, check=True)

    result = as_user(throwaway_user, world, "schedule", "set", "--weekly", "tue", "--hour", "9",
                     "--timezone", "America/New_York")
    assert result.returncode == 0, result.stderr
    installed = user_crontab(throwaway_user)
    assert installed.startswith(ADMIN_TAB)
    ours = installed[len(ADMIN_TAB):].splitlines()
    assert len(ours) == 3
    assert ours[0].startswith("0 13,14 * * 2 ") and "run --scheduled # psabill[" in ours[0]
    assert ours[0].endswith("(managed by psabill; edit with 'psabill schedule set')")
    assert ours[1].startswith("@reboot ")
    assert ours[2].startswith("0 * * * * ") and "retry after an aborted run" in ours[2]

    status = as_user(throwaway_user, world, "status", "--json")
    assert status.returncode == 0, status.stderr
    assert '"in_sync": true' in status.stdout

    result = as_user(throwaway_user, world, "schedule", "disable")
    assert result.returncode == 0, result.stderr
    assert user_crontab(throwaway_user) == ADMIN_TAB


def test_a_user_denied_cron_gets_a_one_line_error_and_nothing_changes(throwaway_user: str, world: Path) -> None:
    deny = Path("/etc/cron.deny")
    original = deny.read_bytes() if deny.exists() else None
    try:
        with deny.open("a") as handle:
            handle.write(f"{throwaway_user}\n")
        result = as_user(throwaway_user, world, "schedule", "set", "--daily", "--hour", "6", "--timezone", "UTC")
    finally:
        if original is None:
            deny.unlink()
        else:
            deny.write_bytes(original)
    assert result.returncode == 6
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("Error: cannot read the user's crontab:")
    assert "not allowed" in lines[0]
    assert not (world / "home" / "config.toml").exists()
