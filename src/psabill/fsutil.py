"""Small file and text helpers every edge shares: the one atomic write, the one
capped read, the one-line collapse and the one duration formatter.

Atomic write: the bytes go to a temp file in the target's directory, created
0600 whatever the umask, fsynced, then renamed over the target, then the
directory is fsynced. A reader, or a crash, sees the old file or the new one,
never half of either. A symlinked target is written through to the file it
names, so an admin's ``config.toml -> dotfiles/psabill.toml`` stays a link.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, List, Optional, Type

from psabill.errors import PsabillError

DIR_MODE = 0o700
FILE_MODE = 0o600


def one_line(text: object) -> str:
    """Collapse every run of whitespace (newlines included) to one space."""
    return " ".join(str(text).split())


def human_duration(seconds: float, *, spaced: bool = False) -> str:
    """The largest unit and the next: ``1d 2h``, ``18h 0min``, ``3min 5s``, ``45s`` (``1 h 30 min`` when ``spaced``)."""
    rest = int(abs(seconds))
    parts: List[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        if parts or rest >= size or unit == "s":
            amount, rest = divmod(rest, size)
            parts.append(f"{amount} {unit}" if spaced else f"{amount}{unit}")
        if len(parts) == 2:
            break
    return " ".join(parts)


def make_private_dir(path: Path, error: Type[PsabillError], what: str) -> None:
    """Create ``path`` (and parents) as 0700 regardless of the umask."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    except OSError as exc:
        raise error(f"cannot create {what} {path}: {exc.strerror}") from None


def atomic_write(path: Path, payload: bytes, *, error: Type[PsabillError], what: str,
                 mode: int = FILE_MODE, prefix: str = ".psabill-") -> None:
    """Replace ``path`` with ``payload`` atomically; raise ``error`` naming ``what`` on failure."""
    import tempfile  # not at module level: the not-due cron path writes nothing

    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    directory = target.parent
    make_private_dir(directory, error, f"the directory of {what}")
    try:
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=directory)
    except OSError as exc:
        raise error(f"cannot write {what} {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
        fsync_dir(directory)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise error(f"cannot write {what} {path}: {exc.strerror}") from None


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable; best effort on filesystems that refuse."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_capped(path: Path, limit: int, *, error: Type[PsabillError], what: str,
                describe_limit: Optional[Callable[[int], str]] = None) -> bytes:
    """The file's bytes, refusing a missing file, a directory or one over ``limit`` bytes."""
    try:
        with open(path, "rb") as handle:
            # One byte past the cap tells "exactly at" from "over" without trusting
            # st_size (a FIFO or a growing file has none worth trusting).
            data = handle.read(limit + 1)
    except FileNotFoundError:
        raise error(f"{what} {path} not found") from None
    except IsADirectoryError:
        raise error(f"{what} {path} is a directory, not a file") from None
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror}") from None
    if len(data) > limit:
        shown = describe_limit(limit) if describe_limit else f"{limit} bytes"
        raise error(f"{what} {path} is over the {shown} limit")
    return data
