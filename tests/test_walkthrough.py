"""The README walked as a new admin walks it (issue 24): the quick start, then "Set it up", step by step.

The test copies the working tree as a fresh clone would have it, runs the README's
quick-start line in it literally (a venv, `pip install .`, `psabill demo`), and then
every command of "Set it up", in order, with that venv's psabill and a throwaway HOME:
the config lands in `~/.config/psabill` of that HOME. The one thing an admin does by
hand, editing the config, is done with the README's own TOML block, its PSA, LastPass
and SMTP endpoints pointed at the stand-ins on loopback. `pipx install .` is the one
step replaced: the quick start's venv is the install the README offers beside it. The
crontab is a file (`PSABILL_CRONTAB`), never the real user's.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest
import tomli_w

from psabill.sandbox import book as sample_book
from support.env import tomllib
from support.smtp import smtp_sink
from support.tty import interactive

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def section(title: str) -> str:
    return README.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def blocks(text: str, language: str) -> List[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, re.DOTALL)


def commands(text: str) -> List[str]:
    """Every command line of the section's ```sh blocks, comments stripped."""
    found = []
    for block in blocks(text, "sh"):
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            if line and not line.startswith("#"):
                found.append(line)
    return found


def fresh_clone(target: Path) -> None:
    """The files a clone of this tree holds: what git tracks plus what is new and not ignored."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                            check=False)
    if listed.returncode != 0:  # not a git checkout (an unpacked sdist): take the tree as it is
        shutil.copytree(ROOT, target, ignore=shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.egg-info"))
        return
    for name in filter(None, listed.stdout.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


@pytest.mark.timeout(900)
def test_the_quick_start_and_set_it_up_work_from_a_fresh_clone(tmp_path: Path) -> None:
    clone = tmp_path / "psabill"
    clone.mkdir()
    fresh_clone(clone)
    home = tmp_path / "home"
    home.mkdir()
    base_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8",
                "PSABILL_CRONTAB": str(tmp_path / "crontab"), "PSABILL_HOST_TZ": "UTC",
                "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    for name in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_CACHE_DIR", "http_proxy",
                 "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "no_proxy"):
        if name in os.environ:
            base_env[name] = os.environ[name]

    # -- the quick start, literally: python3 is this test's Python
    [quick, _tests] = commands(section("Quick start"))
    assert quick.startswith("python3 -m venv .venv") and quick.endswith("psabill demo"), quick
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(sys.executable)
    env = {**base_env, "PATH": f"{bin_dir}:{base_env['PATH']}"}
    done = subprocess.run(["sh", "-c", quick], cwd=clone, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "== 4. Where everything is" in done.stdout and "results email:" in done.stdout
    psabill = clone / ".venv" / "bin" / "psabill"
    assert not (home / ".config").exists(), "the demo wrote into the user's home"

    # -- Set it up, step by step
    steps = commands(section("Set it up"))
    assert steps[0] == "pipx install ." and steps[1].startswith("psabill config init")
    [config_block] = blocks(section("Set it up"), "toml")
    sample = sample_book.build("connectwise", cases=False)
    with sample, smtp_sink() as (smtp_port, sink):
        config = home / ".config" / "psabill" / "config.toml"
        wrote_config = False
        for step in steps[1:]:
            argv = shlex.split(step)
            assert argv[0] == "psabill", step
            if argv[1] == "check" and not wrote_config:
                # Step 3, by hand: the README's TOML, its endpoints pointed at the stand-ins.
                _fill_in(config, tomllib.loads(config_block), sample, smtp_port)
                wrote_config = True
            if argv[1:] == ["run"]:  # shows the plan and asks: answered "y" at a terminal
                session = interactive(None, argv[1:], answer="y", program=[str(psabill)], environ=env)
                assert session.code == 0, session.output
                assert "[y/N]" in session.output and "updated" in session.output
                continue
            done = subprocess.run([str(psabill), *argv[1:]], env=env, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, f"{step}: {done.stdout}{done.stderr}"
            assert "Traceback" not in done.stdout + done.stderr
            if argv[1] == "config":
                assert config.is_file() and oct(config.stat().st_mode & 0o777) == "0o600"
            if argv[1] == "check":
                assert "Nothing was written." in done.stdout and sample.psa.patches() == []
                assert sink.envelopes == []
            if argv[1:3] == ["email", "test"]:
                assert len(sink.envelopes) == 1
            if argv[1:] == ["run", "--dry-run"]:
                assert sample.psa.patches() == [] and "would update" in done.stdout
            if argv[1] == "status":
                assert "in sync" in done.stdout and "Next run:" in done.stdout, done.stdout
        assert wrote_config
        written = len(sample.psa.patches())
        assert written > 0
        assert _quantities(sample) == _lastpass_seats(sample)  # every line now bills LastPass's count
    assert (tmp_path / "crontab").read_text().count("# psabill[") == 3


def _fill_in(config: Path, readme: Dict[str, Any], sample: Any, smtp_port: int) -> None:
    """What an admin types into the starter: the README's TOML, with these stand-ins' endpoints and keys."""
    data = tomllib.loads(config.read_text())
    for name, table in readme.items():
        data[name] = table
    data["psa"].update({k: v for k, v in sample.psa.config_section().items() if k != "kind"})
    data["source"]["url"] = sample.lastpass.api_url
    data["notify"]["smtp"] = {"host": "127.0.0.1", "port": smtp_port, "security": "none"}  # no login on loopback
    directory = config.parent
    for name, secret in ((data["psa"]["private_key_file"], sample.psa.private_key),
                         (data["source"]["api_key_file"], sample.lastpass.api_key)):
        fd = os.open(str(directory / name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secret + "\n")
    config.write_text(tomli_w.dumps(data))


def _quantities(sample: Any) -> Dict[str, float]:
    found = {}
    for agreement in sample.psa.agreements.values():
        for line in sample.psa.additions[agreement["id"]].values():
            found[agreement["company"]["name"]] = line["quantity"]
    return found


def _lastpass_seats(sample: Any) -> Dict[str, float]:
    return {c["name"]: float(sample.lastpass.seats(c["id"], sample_book.COUNTED))
            for c in sample.lastpass.companies.values()}
