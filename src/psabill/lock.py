"""The run lock: an ``flock`` on ``run.lock`` in the state dir.

Two runs never refresh together, whatever started them. The second waits
(bounded by ``[run] lock_timeout``) and then re-checks what is due. Closing the
descriptor releases the lock, so a killed run never leaves it held. The file
is opened 0600 without following a symlink (see :func:`psabill.fsutil.open_private`).
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Iterator

from psabill.errors import StateError
from psabill.fsutil import make_private_dir, open_private


@contextlib.contextmanager
def run_lock(path: Path, timeout: float) -> Iterator[None]:
    """Hold ``path`` exclusively; wait at most ``timeout`` seconds for it."""
    import fcntl

    make_private_dir(path.parent, StateError, "state dir", tighten=True)
    fd = open_private(path, os.O_RDWR | os.O_CREAT, StateError, "the run lock")
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise StateError(
                        f"another psabill run still holds {path} after {timeout:g}s; "
                        "nothing was run (raise [run] lock_timeout to wait longer)"
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)
