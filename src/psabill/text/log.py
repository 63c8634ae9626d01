"""The log file in the state dir (size-rotated), echoed to stderr with --verbose.

Set up only when a run starts or a command changes something: the not-due
cron path never imports ``logging``. Every record goes through
:class:`ScrubbingFormatter`: its message (and any traceback) is scrubbed of
registered secrets and its control and bidi characters are escaped by
:func:`psabill.text.clean.clean`, so one record is
one line that neither a terminal nor a log viewer can be steered by.

The file and its rotated copies are 0600 whatever the umask, and a symlink in
their place is never followed (:class:`PrivateRotatingFileHandler`). Logging
never speaks to cron with a traceback: a log that cannot be opened or written
is reported once, in one line on stderr, and the run carries on without it.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from pathlib import Path
from typing import Any, Optional

from psabill.text import clean
from psabill.errors import PsabillError, StateError
from psabill.text.files import make_private_dir, os_problem, refuse_symlink

NAME = "psabill"


class ScrubbingFormatter(logging.Formatter):
    """A Formatter whose message and traceback are scrubbed and neutralized."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = clean.clean(record.message)
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:
        return clean.clean(super().formatException(ei), lines=True)

    def formatStack(self, stack_info: str) -> str:
        return clean.clean(super().formatStack(stack_info), lines=True)


class PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """A size-rotated log opened 0600 without following symlinks; a failing write is reported once."""

    _reported = False

    def _open(self) -> Any:
        path = Path(self.baseFilename)
        refuse_symlink(path, StateError, "log file")  # refused: a symlink here is hostile
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            if os.path.islink(path):
                refuse_symlink(path, StateError, "log file")
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        try:
            if os.fstat(fd).st_uid == os.getuid():
                os.fchmod(fd, 0o600)  # a log left looser (an older psabill, a umask of 000) is tightened
        except OSError:
            pass
        return os.fdopen(fd, "a", encoding=self.encoding or "utf-8", errors=self.errors)

    def handleError(self, record: logging.LogRecord) -> None:
        """One line, once, instead of logging's traceback on stderr (which cron would mail)."""
        exc = sys.exc_info()[1]
        if not self._reported:
            self._reported = True
            if isinstance(exc, PsabillError):
                why = exc.message
            elif isinstance(exc, OSError):
                why = f"cannot write the log file {self.baseFilename}: {os_problem(exc)}"
            else:
                why = f"cannot write the log file {self.baseFilename}: {type(exc).__name__}: {exc}"
            warn(f"{why}; carrying on without the log")
        # Drop the broken stream; the next record tries to reopen it.
        stream, self.stream = self.stream, None  # type: ignore[assignment]
        if stream is not None:
            try:
                stream.close()
            except Exception:
                pass


def warn(text: str) -> None:
    """One line on stderr, scrubbed and neutralized; never raises."""
    try:
        sys.stderr.write(f"psabill: warning: {clean.clean(text)}\n")
        sys.stderr.flush()
    except Exception:
        pass


def setup(target: Path, *, verbose: bool = False, max_bytes: int = 1_000_000, backups: int = 5) -> logging.Logger:
    """The psabill logger, writing to ``target`` (and stderr when ``verbose``)."""
    logger = logging.getLogger(NAME)
    # No handler (the --verbose echo included) may print logging's own traceback: cron would mail it.
    logging.raiseExceptions = False
    if getattr(logger, "_psabill_target", None) == target:
        return logger
    for old in list(logger.handlers):  # a new state dir (tests, or the demo) gets its own log
        logger.removeHandler(old)
        old.close()
    make_private_dir(target.parent, StateError, "state dir", tighten=True)
    handler: Optional[logging.Handler] = None
    try:
        handler = PrivateRotatingFileHandler(target, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
    except OSError as exc:  # unwritable: say so once and carry on (a symlink is refused above)
        warn(f"cannot open the log file {target}: {os_problem(exc)}; carrying on without the log")
    if handler is not None:
        handler.setFormatter(ScrubbingFormatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
    if verbose:
        echo = logging.StreamHandler()
        echo.setFormatter(ScrubbingFormatter("psabill: %(message)s"))
        logger.addHandler(echo)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logger._psabill_target = target  # type: ignore[attr-defined]
    return logger
