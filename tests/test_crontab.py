"""Crontab lines: preservation of everything else, quoting, and running under /bin/sh."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from support.env import Env
from psabill.schedule import crontab as cron
from psabill.errors import CrontabError

ADMIN_TAB = (
    "# my comment   with  spaces\n"
    "SHELL=/bin/bash\n"
    'MAILTO = "ops@msp.example"\n'
    "  # indented comment\n"
    "\n"
    "*/5 * * * *   /usr/bin/foo --bar   # trailing\n"
    "0 1 * * 1-5 echo 100\\% done\n"
    "@daily  /bin/true\n"
    "not a valid line at all\n"
)


def cron_to_sh(line: str) -> str:
    """What Debian cron hands /bin/sh: the command field with `\\%` unescaped
    (an unescaped % would end the command)."""
    command = line.split(None, 5)[5] if not line.startswith("@") else line.split(None, 1)[1]
    assert re.search(r"(?<!\\)%", command) is None, "unescaped % in the command"
    return command.replace("\\%", "%")


CONFIG = Path("/etc/psabill/config.toml")
M = cron.marker(CONFIG)  # "psabill[<hash of CONFIG>]:"


class TestPreservation:
    def test_every_other_byte_survives_install_and_removal(self, tmp_path: Path) -> None:
        tab = cron.Crontab(tmp_path / "crontab", CONFIG)
        tab.file.write_text(ADMIN_TAB)  # type: ignore[union-attr]
        tab.replace([f"0 9 * * * /x run --scheduled # {M} billing update"])
        text = tab.file.read_text()  # type: ignore[union-attr]
        assert text == ADMIN_TAB + f"0 9 * * * /x run --scheduled # {M} billing update\n"
        tab.replace([])
        assert tab.file.read_text() == ADMIN_TAB  # type: ignore[union-attr]

    def test_lines_are_replaced_where_they_stood(self) -> None:
        text = f"A=1\n0 9 * * * old # {M} billing update\n@reboot old # {M} catch-up\n# tail\n"
        assert cron.splice(text, [f"new1 # {M} x", f"new2 # {M} y"], CONFIG) == (
            f"A=1\nnew1 # {M} x\nnew2 # {M} y\n# tail\n"
        )

    def test_a_commented_out_psabill_line_is_the_admins_and_is_kept(self) -> None:
        text = f"# 0 9 * * * old # {M} billing update\n"
        assert cron.splice(text, [f"new # {M} x"], CONFIG) == text + f"new # {M} x\n"

    def test_a_file_without_final_newline_keeps_its_last_line(self) -> None:
        assert cron.splice("0 1 * * * job", [f"n # {M} x"], CONFIG) == f"0 1 * * * job\nn # {M} x\n"


class TestQuoting:
    @pytest.mark.parametrize(
        "dirname",
        ["with space", "per%cent", "quo'te\"s", "ünïcødé", "dollar$HOME;rm -rf"],
        ids=["spaces", "percent", "quotes", "non_ascii", "shell_metacharacters"],
    )
    def test_an_odd_config_path_survives_the_round_trip_and_runs_under_sh(self, env: Env, dirname: str) -> None:
        odd = env.tmp / dirname / "config.toml"
        result = env.run("--config", str(odd), "schedule", "set", "--daily", "--hour", "6", "--timezone", "UTC",
                         now="2026-11-26T12:00:00Z")
        assert result.exit_code == 0, result.output
        line = [x for x in env.crontab.read_text().splitlines() if cron.is_ours(x, odd)][0]
        command = cron_to_sh(line).replace(" run --scheduled", " status --json")
        proc = subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True,
                              env={"PATH": "/usr/bin:/bin", "PSABILL_HOST_TZ": "UTC",
                                   "PSABILL_CRONTAB": str(env.crontab), "HOME": str(env.tmp / "home")})
        assert proc.returncode == 0, proc.stderr
        assert f'"config": "{odd}"'.encode("unicode_escape").decode() or True
        import json

        assert json.loads(proc.stdout)["config"] == str(odd)

    def test_a_path_with_a_newline_is_refused(self) -> None:
        with pytest.raises(CrontabError, match="line break"):
            cron.command_line(["/usr/bin/psabill", "--config", "/tmp/a\nb"])

    def test_the_command_uses_absolute_paths(self, env: Env) -> None:
        env.run("schedule", "set", "--daily", "--hour", "6", "--timezone", "UTC", now="2026-11-26T12:00:00Z")
        line = env.crontab.read_text().splitlines()[0]
        argv0 = line.split()[5]
        assert os.path.isabs(argv0) and os.access(argv0, os.X_OK)
        assert f"--config {env.config}" in line


class TestUserCrontabErrors:
    def test_a_missing_crontab_binary_is_a_one_line_error(self, env: Env, tmp_path: Path) -> None:
        env.monkeypatch.delenv("PSABILL_CRONTAB")
        proc = subprocess.run(
            [sys.executable, "-m", "psabill", "schedule", "set", "--daily", "--hour", "6", "--timezone", "UTC"],
            capture_output=True, text=True,
            env={**os.environ, "PATH": str(tmp_path / "empty-bin")},
        )
        assert proc.returncode == 6
        assert proc.stderr.strip() == (
            "Error: cannot read the user's crontab: Can't read crontab; No crontab program 'crontab'"
        )
        assert not env.config.exists()
