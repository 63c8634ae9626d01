"""psabill's lines in a crontab: build, read, replace, remove.

The target is the invoking user's crontab (through python-crontab, which runs
the ``crontab`` command) or, when ``PSABILL_CRONTAB`` is set, a plain file.

An admin's crontab must survive byte for byte, so the splice is done on the
raw text here: psabill's own lines are replaced where they stood, and every
other byte is kept (a crontab library would re-render the whole file).

Lines are owned by a config: each carries the marker ``# psabill[<id>]:``, where
``<id>`` is a short hash of the config's absolute path (the comment shows the
path too). Every operation touches only its own config's lines: never another
config's, and never an admin line that merely mentions "# psabill:". Lines in
the old format (``# psabill: billing update ...``) are still recognised as this
config's when their command names this config, so the next write migrates them.

A crontab is bytes, not necessarily UTF-8: an admin's line may hold Latin-1 or
any other bytes. Text here is decoded with ``surrogateescape`` and encoded back
the same way, so every byte that is not ours survives a rewrite unchanged.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import sys
from dataclasses import dataclass
from datetime import datetime, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, List, NamedTuple, Optional, Sequence

from psabill.config.paths import Paths
from psabill.errors import CrontabError
from psabill.text.clean import message as one_line
from psabill.text.files import atomic_write

if TYPE_CHECKING:
    from psabill.config.settings import Settings

MARKER = "psabill"
# The tags of the format before lines were owned by a config (recognised for migration only).
LEGACY_SCHEDULE_TAG = f"{MARKER}: billing update (managed by psabill; edit with 'psabill schedule set')"
LEGACY_REBOOT_TAG = f"{MARKER}: catch-up after reboot (managed by psabill)"


def config_id(config: Path) -> str:
    """A short, stable id for a config: the first 8 hex digits of SHA-256 of its absolute path."""
    return hashlib.sha256(str(config).encode("utf-8")).hexdigest()[:8]


def marker(config: Path) -> str:
    return f"{MARKER}[{config_id(config)}]:"


def _shown(config: Path) -> str:
    # The comment reaches /bin/sh as a shell comment; cron would still turn a bare % into a newline.
    return str(config).replace("%", "\\%")


def schedule_tag(config: Path) -> str:
    return f"{marker(config)} billing update for {_shown(config)} (managed by psabill; edit with 'psabill schedule set')"


def reboot_tag(config: Path) -> str:
    return f"{marker(config)} catch-up after reboot for {_shown(config)} (managed by psabill)"


def retry_tag(config: Path) -> str:
    return f"{marker(config)} retry after an aborted run for {_shown(config)} (managed by psabill)"


def command_line(argv: Sequence[str]) -> str:
    """The argv shell-quoted for /bin/sh.

    cron turns an unescaped ``%`` into a newline (the rest becomes stdin);
    python-crontab escapes every ``%`` as ``\\%`` when it renders the job line,
    and cron strips that backslash before /bin/sh sees the command.
    """
    for argument in argv:
        if "\n" in argument or "\r" in argument or "\0" in argument:
            raise CrontabError(f"cannot put {argument!r} in a crontab: it contains a line break")
    return " ".join(shlex.quote(argument) for argument in argv)


def lines_for(expression: str, argv: Sequence[str], config: Path, catch_up: bool = True,
              retry: Optional[str] = None) -> List[str]:
    """The crontab lines for one config's schedule.

    ``retry`` is the expression of the extra firings that retry a failed or
    partial run within catch-up (the guard answers them cheaply when nothing
    is due). The lines are rendered here, always the same way (``%`` in the
    command escaped as ``\\%``, the tag as a trailing comment), from fields
    :mod:`psabill.schedule.cronplan` computed, so a read-only view (``status``,
    ``cron show``) compares like with like; the ``crontab`` command checks
    them again when it installs them.
    """
    command = command_line(argv)
    escaped = command.replace("%", "\\%")
    lines = [f"{expression} {escaped} # {schedule_tag(config)}"]
    if catch_up:
        lines.append(f"@reboot {escaped} # {reboot_tag(config)}")
    if retry:
        lines.append(f"{retry} {escaped} # {retry_tag(config)}")
    return lines


def is_ours(line: str, config: Path) -> bool:
    """Whether ``line`` is one of ``config``'s job lines (a commented-out line is the admin's)."""
    if line.lstrip().startswith("#"):
        return False
    if re.search(r"#\s*" + re.escape(marker(config)) + " ", line):
        return True
    body = line.rstrip("\r\n")
    legacy = body.endswith((f"# {LEGACY_SCHEDULE_TAG}", f"# {LEGACY_REBOOT_TAG}"))
    needle = " --config " + shlex.quote(str(config)).replace("%", "\\%") + " "  # python-crontab escapes %
    return legacy and needle in body


@dataclass
class Crontab:
    """A crontab target: the user's (``file=None``) or a file."""

    file: Optional[Path]
    config: Path  # whose lines this handle reads and writes

    @property
    def where(self) -> str:
        return str(self.file) if self.file else "the user's crontab"

    def read(self) -> str:
        """The raw text, exactly as stored ("" when there is none); bytes that are not
        UTF-8 are kept as surrogate escapes."""
        if self.file is not None:
            try:
                return decode(self.file.read_bytes())
            except FileNotFoundError:
                return ""
            except OSError as exc:
                raise CrontabError(f"cannot read crontab file {self.file}: {exc.strerror or exc}") from None
        return decode(_crontab_command(["-l"], reading=True))

    def lines(self) -> List[str]:
        return [line for line in self.read().splitlines() if is_ours(line, self.config)]

    def replace(self, new_lines: Sequence[str]) -> None:
        """Put ``new_lines`` where this config's lines were (appended if none); keep the rest."""
        old = self.read()
        text = splice(old, new_lines, self.config)
        if text != old:
            self._write(text)

    def _write(self, text: str) -> None:
        data = encode(text)
        if self.file is not None:
            atomic_write(self.file, data, error=CrontabError, what="crontab file", prefix=".crontab-")
            return
        import tempfile  # the user's crontab only; a crontab file is written by atomic_write

        fd, tmp = tempfile.mkstemp(prefix="psabill-crontab-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            _crontab_command([tmp], reading=False)
        except OSError as exc:
            raise CrontabError(f"cannot write the user's crontab: {one_line(exc)}") from None
        finally:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def decode(data: bytes) -> str:
    """Crontab bytes as text; bytes that are not UTF-8 become surrogate escapes."""
    return data.decode("utf-8", "surrogateescape")


def encode(text: str) -> bytes:
    """The inverse of :func:`decode`: the original bytes back."""
    return text.encode("utf-8", "surrogateescape")


def _crontab_command(args: List[str], *, reading: bool) -> bytes:
    """Run ``crontab ARGS`` (found on PATH like a shell would) and return its stdout bytes.

    ``crontab -l`` for a user without one prints "no crontab for ..." and fails:
    that is an empty crontab.
    """
    # the crontab command: only the user's crontab needs it, never a PSABILL_CRONTAB file (status, tests)
    import shutil
    import subprocess

    program = shutil.which("crontab")
    action = "read" if reading else "write"
    if program is None:
        raise CrontabError(f"cannot {action} the user's crontab: Can't {action} crontab; "
                           "No crontab program 'crontab'")
    try:
        proc = subprocess.run([program, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        raise CrontabError(f"cannot {action} the user's crontab: {one_line(exc)}") from None
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace")
        if reading and "no crontab for" in err.lower():
            return b""
        raise CrontabError(f"cannot {action} the user's crontab: {program} returned {proc.returncode}: "
                           f"{one_line(err) or '(no message)'}")
    return proc.stdout


def splice(text: str, new_lines: Sequence[str], config: Path) -> str:
    """Replace ``config``'s lines in ``text`` in place; every other byte is kept."""
    if text and not text.endswith("\n"):
        text += "\n"
    kept: List[str] = []
    inserted = False
    for line in text.splitlines(keepends=True):
        if is_ours(line, config):
            if not inserted:
                kept.extend(f"{new}\n" for new in new_lines)
                inserted = True
            continue
        kept.append(line)
    if not inserted:
        kept.extend(f"{new}\n" for new in new_lines)
    return "".join(kept)


# -- this config's lines ----------------------------------------------------------

def executable() -> List[str]:
    """Absolute argv prefix that starts this psabill under cron's minimal PATH."""
    script = Path(sys.executable).parent / "psabill"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [os.path.abspath(sys.executable), "-m", "psabill"]


def command_prefix(paths: Paths) -> List[str]:
    """psabill with absolute ``--config`` and ``--state-dir``, for any scheduler to run.

    Cron and systemd set no ``XDG_*`` variables, so a default resolved in the
    admin's shell could differ from theirs; spelling both out makes every
    scheduler and the admin read the same state.
    """
    return executable() + ["--config", str(paths.config), "--state-dir", str(paths.state_dir)]


def cron_argv(paths: Paths) -> List[str]:
    """The command cron runs."""
    return command_prefix(paths) + ["run", "--scheduled"]


def desired_lines(paths: Paths, settings: "Settings", now: datetime, host: tzinfo) -> List[str]:
    """What the crontab should hold now for this config ([] when disabled)."""
    from psabill.schedule import cronplan  # planning a crontab: not on the not-due path

    schedule = settings.when
    if schedule is None or not settings.schedule.enabled:
        return []
    planned = cronplan.plan(schedule, host, now)
    return lines_for(planned.expression, cron_argv(paths), paths.config, retry=planned.retry_expression)


def sync_cron(paths: Paths, settings: "Settings", now: datetime, host: tzinfo) -> List[str]:
    """Write this config's crontab lines; return them."""
    lines = desired_lines(paths, settings, now, host)
    Crontab(paths.crontab_file, paths.config).replace(lines)
    return lines


class CronView(NamedTuple):
    """This config's crontab lines, as installed and as the config wants them."""

    where: str
    installed: List[str]
    expected: List[str]

    @property
    def in_sync(self) -> bool:
        return self.installed == self.expected


def cron_view(paths: Paths, settings: "Settings", now: datetime, host: tzinfo) -> CronView:
    tab = Crontab(paths.crontab_file, paths.config)
    return CronView(tab.where, tab.lines(), desired_lines(paths, settings, now, host))


def remove_cron(paths: Paths) -> List[str]:
    """Remove this config's crontab lines (every other line is kept); the lines removed."""
    tab = Crontab(paths.crontab_file, paths.config)
    removed = tab.lines()
    tab.replace([])
    return removed

