"""Writing the site's files: atomically, world-readable, never writable by others, and only when they change.

Pages are written with :func:`psabill.text.files.atomic_write` (temp file in
the same directory, fsync, rename, fsync of the directory) at mode 0644, so a
web server reading the site sees the old page or the new one, never half of
one. Directories are created 0755 whatever the umask; an existing directory of
ours that group or others could write is tightened (``chmod go-w``), one of
another user's that they could write is refused. A file whose bytes are
already what the site would write is not rewritten (its mode is still put
right), so an update after one run touches only the pages that run changed.

Writes run on a few threads while the next page renders: fsync waits on the
disk, not on the interpreter.
"""

from __future__ import annotations

import os
import stat
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Deque, List, Optional

from psabill.site.errors import SiteError
from psabill.text.files import atomic_write, make_dirs, os_problem

PAGE_MODE = 0o644
SITE_DIR_MODE = 0o755
WORKERS = 4
#: Rendered pages waiting for a writer, at most: the renderer runs ahead of the disk by this much,
#: which bounds the memory a build of a year of run pages takes.
MAX_PENDING = 512
MAX_PENDING_BYTES = 48 * 1024 * 1024


def make_public_dir(path: Path) -> None:
    """Create ``path`` (and missing parents) 0755; an existing one must not be writable by others."""
    make_dirs(path, SITE_DIR_MODE, SiteError, "the site directory")
    try:
        info = os.stat(path)
    except OSError as exc:
        raise SiteError(f"cannot use the site directory {path}: {os_problem(exc)}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise SiteError(f"the site directory {path} is not a directory: move it aside, then retry")
    loose = stat.S_IMODE(info.st_mode) & (stat.S_IWGRP | stat.S_IWOTH)
    if not loose:
        return
    if info.st_uid != os.getuid():
        raise SiteError(f"the site directory {path} is writable by group or others and owned by another user "
                        f"(uid {info.st_uid}): run 'chmod go-w {path}' as its owner, or pick another directory")
    try:
        os.chmod(path, stat.S_IMODE(info.st_mode) & ~(stat.S_IWGRP | stat.S_IWOTH))
    except OSError as exc:
        raise SiteError(f"the site directory {path} is writable by group or others and cannot be tightened: "
                        f"{os_problem(exc)}; run 'chmod go-w {path}'") from None


def write_if_changed(path: Path, payload: bytes) -> bool:
    """Write ``payload`` to ``path`` atomically at 0644 unless it already holds exactly those bytes.

    True when the file was written. An unchanged file with another mode is chmodded 0644.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        info = None
    except OSError:
        info = None  # unreadable for some reason: the write below reports it
    if info is not None and stat.S_ISREG(info.st_mode) and info.st_size == len(payload):
        try:
            with open(path, "rb") as handle:
                same = handle.read(len(payload) + 1) == payload
        except OSError:
            same = False
        if same:
            if stat.S_IMODE(info.st_mode) != PAGE_MODE:
                try:
                    os.chmod(path, PAGE_MODE)
                except OSError as exc:
                    raise SiteError(f"cannot set the mode of {path}: {os_problem(exc)}") from None
            return False
    atomic_write(path, payload, error=SiteError, what="the site page", mode=PAGE_MODE, prefix=TEMP_PREFIX)
    return True


TEMP_PREFIX = ".psabill-site-"
STALE_TEMP_SECONDS = 600


def remove_stale_temps(directory: Path, now: float) -> List[Path]:
    """Remove the temp files a write that never finished (a crash, a kill) left in ``directory``.

    Only ours (the atomic write's prefix and suffix) and only ones older than
    STALE_TEMP_SECONDS, so a write in progress elsewhere keeps its file.
    """
    removed: List[Path] = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        if not (entry.name.startswith(TEMP_PREFIX) and entry.name.endswith(".tmp")):
            continue
        try:
            if entry.is_file(follow_symlinks=False) and now - entry.stat(follow_symlinks=False).st_mtime > STALE_TEMP_SECONDS:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            continue
    return removed


class Writer:
    """Writes pages under one site dir on a few threads; :meth:`close` returns the paths written."""

    def __init__(self, root: Path, subdirs: List[str]) -> None:
        self.root = root
        make_public_dir(root)
        for name in subdirs:
            make_public_dir(root / name)
        self._pool: Optional[ThreadPoolExecutor] = None
        self._pending: Deque["Future[Optional[Path]]"] = deque()
        self._sizes: Deque[int] = deque()
        self._pending_bytes = 0
        self._written: List[Path] = []

    def put(self, relative: str, payload: bytes) -> None:
        """Queue ``payload`` for ``root/relative`` (written now or soon; errors surface by :meth:`close`)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="psabill-site")
        while self._pending and (len(self._pending) >= MAX_PENDING
                                 or self._pending_bytes + len(payload) > MAX_PENDING_BYTES):
            self._collect(self._pending.popleft())
        self._pending.append(self._pool.submit(self._write, self.root / relative, payload))
        self._pending_bytes += len(payload)
        self._sizes.append(len(payload))

    @staticmethod
    def _write(path: Path, payload: bytes) -> Optional[Path]:
        return path if write_if_changed(path, payload) else None

    def _collect(self, future: "Future[Optional[Path]]") -> None:
        self._pending_bytes -= self._sizes.popleft()
        path = future.result()  # re-raises the writer's SiteError here
        if path is not None:
            self._written.append(path)

    def drain(self) -> None:
        """Wait for every queued write (their payloads are then let go); errors as :meth:`close`'s."""
        while self._pending:
            self._collect(self._pending.popleft())

    def close(self) -> List[Path]:
        """Wait for every queued write; the first failure is raised after the others finished."""
        failure: Optional[BaseException] = None
        while self._pending:
            try:
                self._collect(self._pending.popleft())
            except BaseException as exc:  # noqa: BLE001 - finish the rest, then raise the first
                failure = failure or exc
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if failure is not None:
            raise failure
        return sorted(self._written)

    def abandon(self) -> None:
        """Stop after a failure elsewhere: queued writes that have not started are dropped."""
        for future in self._pending:
            future.cancel()
        self._pending.clear()
        self._sizes.clear()
        self._pending_bytes = 0
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
