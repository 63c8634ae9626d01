"""``[source] kind = "csv"`` and ``"json"``: a file, read once it has stopped changing.

An exporter may still be writing the file when cron fires. A file modified in
the last :data:`SETTLE` seconds is read only once it is that old, and a file
whose size or modification time changes while it is read is read again; one
that is still changing after :data:`ATTEMPTS` reads is refused (the run is
aborted and retried at a later firing). A path that is not a regular file
(a FIFO, a device, a directory) is refused at once, never waited on, so it
cannot hold the run lock.

A file another user could have written is refused before it is read
(:func:`psabill.text.files.check_private`).
"""

import os
import stat
import time
from pathlib import Path
from typing import Collection, Optional

from psabill.config.schema import SourceSettings
from psabill.errors import AbortError, ConfigError
from psabill.sources.rows import MAX_BYTES, Usage, parse
from psabill.text.files import check_private, read_regular

SETTLE = 2.0  # seconds a file must have been left alone
ATTEMPTS = 3


def read(source: SourceSettings, skus: Optional[Collection[str]], config_path: Path) -> Usage:
    path = source.path
    if path is None:
        raise ConfigError(f"{config_path}: [source] kind = \"{source.kind}\" needs path = \"...\"")
    check_private(path, "usage source", AbortError)
    return parse(read_settled(path, "usage source"), fmt=source.kind, origin=f"usage source {path}", skus=skus)


def read_settled(path: Path, what: str, *, settle: float = SETTLE, attempts: int = ATTEMPTS,
                 sleep: "object" = time.sleep) -> bytes:
    """The bytes of a regular file that did not change while it was read (see the module docstring)."""
    for attempt in range(attempts):
        before = _state(path)
        if before is not None:
            age = time.time() - before[1]
            if 0 <= age < settle:
                sleep(settle - age)  # type: ignore[operator]
                before = _state(path)
        data = read_regular(path, what, AbortError, limit=MAX_BYTES,
                            describe_limit=lambda limit: f"{limit // (1024 * 1024)} MB")
        assert data is not None
        after = _state(path)
        if before == after and (after is None or after[0] == len(data)):
            return data
        if attempt < attempts - 1:
            sleep(settle)  # type: ignore[operator]
    raise AbortError(f"{what} {path} kept changing while it was read ({attempts} tries): it is still being "
                     "written; a later firing within catch-up tries again")


def _state(path: Path) -> Optional[tuple]:
    try:
        info = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISREG(info.st_mode):
        return None  # a FIFO or device is refused by the read at once, never waited on to settle
    return (info.st_size, info.st_mtime, info.st_ino)
