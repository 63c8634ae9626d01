"""The log file in the state dir (size-rotated), echoed to stderr with --verbose.

Set up only when a run starts or a command changes something: the not-due
cron path never imports ``logging``.
"""

from __future__ import annotations

import logging
import logging.handlers

from psabill.context import Context

NAME = "psabill"
LOG_FILE = "psabill.log"


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
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    if ctx.verbose:
        echo = logging.StreamHandler()
        echo.setFormatter(logging.Formatter("psabill: %(message)s"))
        logger.addHandler(echo)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logger._psabill_target = target  # type: ignore[attr-defined]
    return logger
