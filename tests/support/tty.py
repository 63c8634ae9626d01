"""Run psabill at a real pseudo-terminal, as an admin would: read until the prompt, act, answer.

``at_prompt`` runs while psabill waits at its confirmation prompt: the moment
an admin reads the plan, when the world can move underneath it.
"""

from __future__ import annotations

import os
import pty
import select
import signal
import sys
import time
from typing import Callable, List, NamedTuple, Optional

from support.env import Env

PROMPT = b"[y/N]"


class Session(NamedTuple):
    code: int
    output: str


def interactive(env: Optional[Env], args: List[str], *, answer: str, at_prompt: Optional[Callable[[], None]] = None,
                timeout: float = 60.0, extra_env: Optional[dict] = None, program: Optional[List[str]] = None,
                environ: Optional[dict] = None) -> Session:
    """``psabill ARGS`` on a pty; when the prompt shows, call ``at_prompt`` then type ``answer``.

    ``program`` runs another psabill (e.g. one installed from a fresh clone) instead of this
    interpreter's, and ``environ`` replaces the whole environment."""
    environment = dict(environ) if environ is not None else {**os.environ, **(extra_env or {})}
    argv = [*(program or [sys.executable, "-m", "psabill"]), *args]
    pid, fd = pty.fork()
    if pid == 0:  # the child: psabill, on the terminal
        try:
            os.execvpe(argv[0], argv, environment)
        finally:
            os._exit(127)
    output = b""
    answered = False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                output += chunk
            if not answered and PROMPT in output:
                if at_prompt is not None:
                    at_prompt()
                os.write(fd, answer.encode() + b"\r")
                answered = True
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                while True:  # what is left in the pty
                    ready, _, _ = select.select([fd], [], [], 0.05)
                    if not ready:
                        break
                    try:
                        chunk = os.read(fd, 65536)
                    except OSError:
                        break
                    if not chunk:
                        break
                    output += chunk
                return Session(os.waitstatus_to_exitcode(status) if hasattr(os, "waitstatus_to_exitcode")
                               else (status >> 8), output.decode("utf-8", "replace").replace("\r\n", "\n"))
        else:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError(f"psabill did not finish within {timeout}s; it printed:\n"
                                 f"{output.decode(errors='replace')}")
        # The terminal closed (the child exited): collect its status.
        _, status = os.waitpid(pid, 0)
        return Session(os.waitstatus_to_exitcode(status) if hasattr(os, "waitstatus_to_exitcode") else (status >> 8),
                       output.decode("utf-8", "replace").replace("\r\n", "\n"))
    finally:
        os.close(fd)
