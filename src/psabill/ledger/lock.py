"""The run lock: an ``flock`` on ``run.lock`` in the state dir.

Two runs never refresh together, whatever started them. The second waits
(bounded by ``[run] lock_timeout``) and then re-checks what is due. Closing the
descriptor releases the lock, so a killed run never leaves it held. The file
is opened 0600 without following a symlink (see :func:`psabill.text.files.open_private`).

:func:`config_lock` is the same kind of lock on ``.<config name>.lock`` next to
the config: ``schedule set``, ``enable``, ``disable`` and ``cron install``
load, plan, write the crontab and write the config all under it, so two at
once leave the config and the crontab in agreement.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

from psabill.errors import ConfigError, PsabillError, StateError
from psabill.text.files import make_private_dir, open_private


def _hold(fd: int, timeout: float, poll: float, on_timeout: Callable[[], PsabillError]) -> None:
    """Take an exclusive flock on ``fd``, polling; raise ``on_timeout()`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise on_timeout() from None
            time.sleep(poll)


@contextlib.contextmanager
def run_lock(path: Path, timeout: float) -> Iterator[None]:
    """Hold ``path`` exclusively; wait at most ``timeout`` seconds for it."""
    make_private_dir(path.parent, StateError, "state dir", tighten=True)
    fd = open_private(path, os.O_RDWR | os.O_CREAT, StateError, "the run lock")
    try:
        _hold(fd, timeout, 0.05, lambda: StateError(
            f"another psabill run still holds {path} after {timeout:g}s; "
            "nothing was run (raise [run] lock_timeout to wait longer)"))
        yield
    finally:
        os.close(fd)


CONFIG_LOCK_TIMEOUT = 60.0


@contextlib.contextmanager
def config_lock(config: Path, timeout: float = CONFIG_LOCK_TIMEOUT) -> Iterator[None]:
    """Hold ``.<name>.lock`` next to ``config`` exclusively; wait at most ``timeout`` seconds."""
    path = config.parent / f".{config.name}.lock"
    make_private_dir(config.parent, ConfigError, "config directory")
    fd = open_private(path, os.O_RDWR | os.O_CREAT, ConfigError, "config lock")
    try:
        _hold(fd, timeout, 0.02, lambda: ConfigError(
            f"another psabill command still holds {path} after {timeout:g}s; nothing was changed"))
        yield
    finally:
        os.close(fd)


TENANT_LOCK_TIMEOUT = 600.0


@contextlib.contextmanager
def tenant_lock(identity: str, timeout: float = TENANT_LOCK_TIMEOUT) -> Iterator[None]:
    """One run at a time per PSA tenant on this host, whatever config or state dir it runs from.

    Two installs of psabill on one host (two users, two state dirs) against one
    Autotask tenant would otherwise both read 10 units and both post +15. The
    lock is an abstract Unix socket named after the tenant (Linux): any user
    can take it, nothing is left on disk, and the kernel drops it when the
    process dies, however it dies. Elsewhere it is an ``flock`` on a file in
    the temp dir. Two *hosts* are kept apart by a shared ledger instead.
    """
    tag = hashlib.sha256(identity.encode("utf-8")).hexdigest()[:32]
    if not sys.platform.startswith("linux"):
        with run_lock(Path(tempfile.gettempdir()) / f"psabill-tenant-{tag}.lock", timeout):
            yield
        return
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                sock.bind("\0psabill-tenant-" + tag)
                break
            except OSError:
                if time.monotonic() >= deadline:
                    raise StateError(f"another psabill run on this host has worked on this PSA tenant for more than "
                                     f"{timeout:g}s; nothing was run (raise [run] lock_timeout to wait longer)") from None
                time.sleep(0.05)
        yield
    finally:
        sock.close()
