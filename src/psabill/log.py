"""The log file in the state dir (size-rotated), echoed to stderr with --verbose.

Set up only when a run starts or a command changes something: the not-due
cron path never imports ``logging``. Every record goes through
:class:`ScrubbingFormatter`: its message (and any traceback) is scrubbed of
registered secrets by :func:`psabill.redact.scrub` and its control and bidi
characters are escaped by :func:`psabill.redact.neutralize`, so one record is
one line that neither a terminal nor a log viewer can be steered by.
"""

from __future__ import annotations

import logging
import logging.handlers
from pathlib import Path
from typing import Any

from psabill import redact
from psabill.errors import StateError
from psabill.fsutil import make_private_dir

NAME = "psabill"


class ScrubbingFormatter(logging.Formatter):
    """A Formatter whose message and traceback are scrubbed and neutralized."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = redact.neutralize(redact.scrub(record.message))
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:
        return redact.neutralize(redact.scrub(super().formatException(ei)), multiline=True)

    def formatStack(self, stack_info: str) -> str:
        return redact.neutralize(redact.scrub(super().formatStack(stack_info)), multiline=True)


def setup(target: Path, *, verbose: bool = False, max_bytes: int = 1_000_000, backups: int = 5) -> logging.Logger:
    """The psabill logger, writing to ``target`` (and stderr when ``verbose``)."""
    logger = logging.getLogger(NAME)
    if getattr(logger, "_psabill_target", None) == target:
        return logger
    for old in list(logger.handlers):  # a new state dir (tests, or the demo) gets its own log
        logger.removeHandler(old)
        old.close()
    make_private_dir(target.parent, StateError, "state dir")
    handler = logging.handlers.RotatingFileHandler(target, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
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
