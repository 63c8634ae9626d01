"""Domain exceptions and the exit codes the CLI maps them to.

The core raises these; only ``psabill.cli`` turns them into an exit status.
Every message is a single line that names the offending value.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0  # success, or nothing due
    PARTIAL = 1  # the run finished, but some items failed
    USAGE = 2  # bad command-line input
    CONFIG = 3  # the config file is missing, malformed or invalid
    ABORTED = 4  # the run stopped before writing anything (source, PSA reachability, auth)
    EMAIL = 5  # the run was recorded but its report could not be delivered
    CRONTAB = 6  # the crontab could not be read or written
    STATE = 7  # the state dir / history database is unusable, or the run lock timed out
    HELD = 8  # the run held changes that look like a broken source, for `psabill approve`
    INTERRUPTED = 130  # Ctrl-C (SIGINT) during a run: recorded as interrupted
    TERMINATED = 143  # SIGTERM (or SIGHUP) during a run: recorded as interrupted
    INTERNAL = 70  # a bug: one line, and the traceback only with PSABILL_DEBUG=1


class PsabillError(Exception):
    """Base class: a one-line, user-facing message plus an exit code."""

    exit_code: ExitCode = ExitCode.USAGE

    def __init__(self, message: str) -> None:
        # A newline would break the one-line contract (and could forge log lines).
        super().__init__(" ".join(str(message).split("\n")))

    @property
    def message(self) -> str:
        return str(self.args[0])


class UsageError(PsabillError):
    exit_code = ExitCode.USAGE


class ConfigError(PsabillError):
    exit_code = ExitCode.CONFIG


class AbortError(PsabillError):
    exit_code = ExitCode.ABORTED


class EmailError(PsabillError):
    exit_code = ExitCode.EMAIL


class CrontabError(PsabillError):
    exit_code = ExitCode.CRONTAB


class StateError(PsabillError):
    exit_code = ExitCode.STATE
