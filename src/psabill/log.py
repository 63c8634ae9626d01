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
from typing import Any

from psabill import redact
from psabill.context import Context

NAME = "psabill"
LOG_FILE = "psabill.log"


class ScrubbingFormatter(logging.Formatter):
    """A Formatter whose message and traceback are scrubbed and neutralized."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = redact.neutralize(redact.scrub(record.message))
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:
        return redact.neutralize(redact.scrub(super().formatException(ei)), multiline=True)

    def formatStack(self, stack_info: str) -> str:
        return redact.neutralize(redact.scrub(super().formatStack(stack_info)), multiline=True)


def setup(ctx: Context) -> logging.Logger:
    logger = logging.getLogger(NAME)
    target = ctx.state_dir / LOG_FILE
    if getattr(logger, "_psabill_target", None) == target:
        return logger
    for old in list(logger.handlers):  # a new state dir (tests, or the demo) gets its own log
        logger.removeHandler(old)
        old.close()
    from psabill.config import load

    cfg = load(ctx.config_path, check_addresses=False)
    ctx.state().ensure_dir()
    handler = logging.handlers.RotatingFileHandler(
        target,
        maxBytes=int(cfg.get("log.max_bytes", 1_000_000)),
        backupCount=int(cfg.get("log.backups", 5)),
        encoding="utf-8",
    )
    handler.setFormatter(ScrubbingFormatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    if ctx.verbose:
        echo = logging.StreamHandler()
        echo.setFormatter(ScrubbingFormatter("psabill: %(message)s"))
        logger.addHandler(echo)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logger._psabill_target = target  # type: ignore[attr-defined]
    return logger
