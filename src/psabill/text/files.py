"""Small file helpers every edge shares: the one atomic write, the one
regular-file read, the permission rules and the one duration formatter.

Atomic write: the bytes go to a temp file in the target's directory, created
0600 whatever the umask, fsynced, then renamed over the target, then the
directory is fsynced. A reader, or a crash, sees the old file or the new one,
never half of either. A symlinked target is written through to the file it
names, so an admin's ``config.toml -> dotfiles/psabill.toml`` stays a link.

Permissions, in one place:

* :func:`check_private` is the ssh ``StrictModes`` rule for every file whose
  content decides what psabill runs or sends (the config, the mapping file, a
  ``*_file`` secret, the usage source, the source command and its script): it
  must be owned by this user (or root) and writable by nobody else, or it is
  refused before a byte of it is used, with the chmod/chown that fixes it.
* :func:`make_private_dir` creates every missing directory 0700 (parents
  too), whatever the umask; with ``tighten`` (the state dir) an existing one
  looser than 0700 is tightened if it is ours and refused if it is not.
* :func:`open_private` opens a state-dir file 0600 without following a
  symlink; :func:`refuse_symlink` is the same rule for files SQLite opens.
* :func:`os_problem` turns an OSError into the one-line cause and the fix.
* :func:`read_regular` reads a file psabill is told to read (the config, a
  source, a secret): only a regular file, opened without blocking.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Type

from psabill.errors import PsabillError

DIR_MODE = 0o700
FILE_MODE = 0o600


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


def os_problem(exc: OSError) -> str:
    """The cause of ``exc`` and what to do about it, in a few words (no path)."""
    code = exc.errno
    text = exc.strerror or str(exc)
    if code == errno.EROFS:
        return f"{text} (remount it read-write or pick another location, then retry)"
    if code in (errno.EACCES, errno.EPERM):
        return f"{text} (make it writable by this user, then retry)"
    if code == errno.ENOSPC or code == errno.EDQUOT:
        return f"{text} (free some space, then retry)"
    if code == errno.ELOOP:
        return "it is a symlink, which psabill does not follow here (remove it, then retry)"
    if code == errno.EISDIR:
        return "it is a directory, not a file (remove it, then retry)"
    if code == errno.ENOTDIR:
        return f"{text} (a part of the path is a file, not a directory)"
    return f"{text} (fix it, then retry)"


def _owner_fix(path: Path) -> str:
    try:
        import pwd  # only an error message names the owner; absent on some platforms

        name = pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):
        name = str(os.getuid())
    return f"chown {name} {path}"


def check_private(path: Path, what: str, error: Type[PsabillError]) -> None:
    """Refuse ``path`` (``what`` names it) when another user could have written it.

    Owned by another user (root excepted) or writable by group or others ->
    ``error`` with the fix. A missing or unreadable path is left to the caller's
    own read, which reports it. A symlink is judged by the file it names.
    """
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return
    me = os.getuid()
    if info.st_uid not in (me, 0):
        raise error(f"{what} {path} is owned by another user (uid {info.st_uid}), so psabill will not use it: "
                    f"run '{_owner_fix(path)}' if you trust its content, or replace it with your own file")
    if stat.S_IMODE(info.st_mode) & (stat.S_IWGRP | stat.S_IWOTH):
        raise error(f"{what} {path} is writable by group or others (mode {stat.S_IMODE(info.st_mode):04o}), "
                    f"so psabill will not use it: check its content, then run 'chmod go-w {path}'")


def make_dirs(path: Path, mode: int, error: Type[PsabillError], what: str) -> None:
    """Create ``path``'s missing directories (parents first) at exactly ``mode``, whatever the umask.

    One made by another process meanwhile is left for the caller to judge like any existing one.
    """
    missing: list = []
    probe = path
    while not os.path.lexists(probe):
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, mode)
        except FileExistsError:
            continue
        except OSError as exc:
            raise error(f"cannot create {what} {path}: {os_problem(exc)}") from None
        try:
            os.chmod(directory, mode)  # mkdir's mode went through the umask
        except OSError as exc:
            raise error(f"cannot set the mode of {what} {directory}: {os_problem(exc)}") from None


def make_private_dir(path: Path, error: Type[PsabillError], what: str, *, tighten: bool = False) -> None:
    """Create ``path`` and its missing parents as 0700 regardless of the umask.

    With ``tighten`` an existing ``path`` must be a directory owned by this user;
    looser than 0700 it is chmodded 0700, owned by another user it is refused.
    """
    make_dirs(path, DIR_MODE, error, what)
    try:
        info = os.stat(path)
    except OSError as exc:
        raise error(f"cannot use {what} {path}: {os_problem(exc)}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise error(f"{what} {path} is not a directory: move it aside, then retry")
    if not tighten:
        return
    if info.st_uid != os.getuid():
        raise error(f"{what} {path} is owned by another user (uid {info.st_uid}): run "
                    f"'{_owner_fix(path)}' or point --state-dir at a directory of your own, then retry")
    if stat.S_IMODE(info.st_mode) & 0o077:
        try:
            os.chmod(path, DIR_MODE)
        except OSError as exc:
            raise error(f"{what} {path} is open to group or others (mode {stat.S_IMODE(info.st_mode):04o}) and "
                        f"cannot be tightened: {os_problem(exc)}; run 'chmod 700 {path}'") from None


def refuse_symlink(path: Path, error: Type[PsabillError], what: str) -> None:
    """Raise ``error`` when ``path`` is a symlink (its target is never touched)."""
    if os.path.islink(path):
        raise error(f"{what} {path} is a symlink, which psabill does not follow in the state dir: "
                    "remove it, then retry (its target was left unchanged)")


def open_private(path: Path, flags: int, error: Type[PsabillError], what: str) -> int:
    """``os.open`` a state-dir file 0600 (whatever the umask) without following a symlink."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), FILE_MODE)
    except OSError as exc:
        if exc.errno == errno.ELOOP or os.path.islink(path):
            refuse_symlink(path, error, what)
        raise error(f"cannot open {what} {path}: {os_problem(exc)}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise error(f"{what} {path} is not a regular file: remove it, then retry")
        if info.st_uid == os.getuid() and stat.S_IMODE(info.st_mode) & 0o077:
            os.fchmod(fd, FILE_MODE)
    except OSError as exc:
        os.close(fd)
        raise error(f"cannot use {what} {path}: {os_problem(exc)}") from None
    except BaseException:
        os.close(fd)
        raise
    return fd


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
        raise error(f"cannot write {what} {path}: {os_problem(exc)}") from None
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
        raise error(f"cannot write {what} {path}: {os_problem(exc)}") from None


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
    """The file's bytes, refusing a missing file, anything but a regular file, or one over ``limit`` bytes."""
    data = read_regular(path, what, error, limit=limit, describe_limit=describe_limit)
    assert data is not None
    return data


def read_regular(path: Path, what: str, error: Type[PsabillError], *, limit: Optional[int] = None,
                 missing_ok: bool = False, missing_fix: str = "",
                 describe_limit: Optional[Callable[[int], str]] = None) -> Optional[bytes]:
    """A regular file's bytes; a FIFO, device, socket or directory is refused at once, never waited on.

    The file is opened non-blocking (an open of a FIFO would otherwise wait for
    a writer) and judged by ``fstat`` of what was opened, so a path swapped for
    a FIFO in between is refused too. A missing file is None with ``missing_ok``.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        if missing_ok:
            return None
        raise error(f"{what} {path} not found" + (f": {missing_fix}" if missing_fix else "")) from None
    except IsADirectoryError:
        raise error(f"{what} {path} is a directory, not a file") from None
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {os_problem(exc)}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise error(f"{what} {path} is {kind_of(info.st_mode)}, not a regular file: point it at a file")
        chunks: List[bytes] = []
        size = 0
        while True:
            # One byte past the cap tells "exactly at" from "over" without trusting st_size.
            chunk = os.read(fd, 1 << 20 if limit is None else min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if limit is not None and size > limit:
                shown = describe_limit(limit) if describe_limit else f"{limit} bytes"
                raise error(f"{what} {path} is over the {shown} limit")
        return b"".join(chunks)
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {os_problem(exc)}") from None
    finally:
        os.close(fd)


def kind_of(mode: int) -> str:
    """What a file of ``st_mode`` is, in words: "a FIFO (named pipe)", "a device", "a directory"..."""
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a regular file" if stat.S_ISREG(mode) else "not a regular file"


MAX_CA_BYTES = 10 * 1024 * 1024


def read_ca(path: Path, what: str, error: Type[PsabillError]) -> str:
    """A PEM CA bundle as text, for ``ssl.create_default_context(cadata=...)``.

    Read as every file psabill is told to read (:func:`read_regular`): a FIFO
    or a device is refused at once, where OpenSSL's own open of ``cafile``
    would wait for a writer forever. Text around the certificates is ignored,
    as OpenSSL ignores it (non-ASCII comments included).
    """
    data = read_regular(path, what, error, limit=MAX_CA_BYTES, describe_limit=lambda _limit: "10 MB CA bundle")
    assert data is not None
    return "".join(ch for ch in data.decode("latin-1") if ord(ch) < 128)


def check_program(argv: Sequence[str], cwd: Path, what: str, error: Type[PsabillError]) -> List[str]:
    """``argv`` with its program made absolute, once nobody but its owner (or root) could have written it.

    The program is found the way psabill runs it: a path with a slash is
    relative to ``cwd`` (the config's directory, never the working directory
    of whoever ran psabill), a bare name is looked up on PATH. It must exist,
    and it and every later argument that names an existing regular file (the
    script ``sh export.sh`` would run) pass :func:`check_private`. This is the
    one rule for every program psabill runs: the source command and the mailer.
    """
    import shutil  # only a run that starts a program needs it

    if not argv:
        raise error(f"{what} is empty: give the program, then its arguments")
    program = argv[0]
    if os.sep in program:
        found = program if os.path.isabs(program) else str(cwd / program)
        if not os.path.exists(found):
            raise error(f"{what} {program!r} not found (a relative program is relative to {cwd})")
    else:
        located = shutil.which(program)
        if located is None:
            raise error(f"{what} {program!r} not found on PATH ({os.environ.get('PATH', '')}): give its absolute path")
        found = located
    check_private(Path(found), what, error)
    for argument in argv[1:]:
        if not argument or argument.startswith("-") or "\0" in argument:
            continue
        candidate = cwd / argument
        try:
            regular = candidate.is_file()
        except (OSError, ValueError):
            continue
        if regular:
            check_private(candidate, f"file named by the {what}", error)
    return [found, *argv[1:]]
