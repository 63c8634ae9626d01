"""``[source] kind = "command"``: a program that prints the usage as CSV or JSON.

``command`` is an argv list run without a shell, in the config file's
directory, for at most ``timeout`` seconds, with its own process group (a
timeout kills what it spawned too). Its program, and any file it names, must
pass :func:`psabill.text.files.check_program`.

How it says it is complete: it exits 0 having closed its output. With
``trailer = true`` its last line must also be ``# rows: N``, the number of
data rows before it (a CSV header is not a row; a JSON list's items are): a
missing or wrong trailer means the export was cut, and the run aborts before
the PSA is touched, to be retried at a later firing. Without a trailer, a CSV
whose last row has no line end is still read, and the guard holds the run.
"""

import os
import re
import subprocess
import threading
import time
from pathlib import Path
from typing import IO, Callable, Collection, List, Optional, Sequence

from psabill.config.schema import SourceSettings
from psabill.errors import AbortError
from psabill.sources.rows import MAX_BYTES, Usage, parse, preview
from psabill.text.files import check_program

_TRAILER = re.compile(rb"\n?# rows: ([0-9]{1,12})[ \t]*\r?\n?[ \t\r\n]*\Z")


def read(source: SourceSettings, skus: Optional[Collection[str]], config_path: Path) -> Usage:
    argv = check_program(list(source.command), config_path.parent,
                         "source command", AbortError)
    data = run_command(argv, cwd=config_path.parent, timeout=source.timeout)
    origin = f"output of source command {_show_argv(source.command)}"
    if source.trailer:
        data = _strip_trailer(data, origin, source.format)
    return parse(data, fmt=source.format, origin=origin, skus=skus)


def _strip_trailer(data: bytes, origin: str, fmt: Optional[str]) -> bytes:
    match = _TRAILER.search(data)
    if match is None:
        raise AbortError(f"{origin} does not end with its '# rows: N' trailer ([source] trailer = true): "
                         "the export looks cut; nothing was written")
    body = data[: match.start()] + b"\n"
    expected = int(match.group(1))
    usage = parse(body, fmt=fmt, origin=origin, skus=None)
    if len(usage.rows) != expected:
        raise AbortError(f"{origin} has {len(usage.rows)} rows but its trailer says {expected}: the export looks "
                         "cut; nothing was written")
    return body


def run_command(argv: Sequence[str], *, cwd: Path, timeout: float) -> bytes:
    """The command's stdout (capped), or AbortError naming status, timeout or first stderr line."""
    shown = _show_argv(argv)
    try:
        proc = subprocess.Popen(
            list(argv),
            cwd=str(cwd),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            # Its own process group, so a timeout kills the helpers it spawned
            # too and nothing keeps our pipes open.
            start_new_session=True,
        )
    except FileNotFoundError:
        raise AbortError(f"source command {shown} not found") from None
    except PermissionError:
        raise AbortError(f"source command {shown} is not executable") from None
    except OSError as exc:
        raise AbortError(f"cannot start source command {shown}: {exc.strerror}") from None
    assert proc.stdout is not None and proc.stderr is not None
    deadline = time.monotonic() + timeout
    out = _Drain(proc.stdout, MAX_BYTES + 1, on_full=lambda: _kill(proc))
    err = _Drain(proc.stderr, 64 * 1024)
    try:
        proc.wait(timeout=timeout)
        # A background child that inherited stdout can hold the pipe open after
        # the command itself exits; its output is only complete at EOF.
        out.join(max(0.0, deadline - time.monotonic()))
        timed_out = out.alive()
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        if proc.returncode is None or out.alive():
            _kill(proc)
        proc.wait()
        out.join(5)
        err.join(5)
    if timed_out:
        raise AbortError(f"source command {shown} timed out after {timeout:g} s")
    if out.full:
        raise AbortError(f"source command {shown} wrote over the {MAX_BYTES // (1024 * 1024)} MB limit")
    if proc.returncode != 0:
        first = next((line.strip() for line in err.data().decode("utf-8", "replace").splitlines()
                      if line.strip()), "")
        status = (f"was killed by signal {-proc.returncode}" if proc.returncode < 0
                  else f"exited with status {proc.returncode}")
        raise AbortError(f"source command {shown} {status}" + (f": {preview(first)}" if first else ""))
    return out.data()


class _Drain:
    """Reads a pipe on a thread so neither pipe can fill up and stall the child."""

    def __init__(self, pipe: IO[bytes], limit: int, on_full: Optional[Callable[[], None]] = None) -> None:
        self.pipe = pipe
        self.limit = limit
        self.on_full = on_full
        self.chunks: List[bytes] = []
        self.size = 0
        self.full = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while True:
                chunk = self.pipe.read1(65536)  # type: ignore[attr-defined]
                if not chunk:
                    return
                if self.size < self.limit:
                    self.chunks.append(chunk[: self.limit - self.size])
                    self.size += len(self.chunks[-1])
                    if self.size >= self.limit and self.on_full is not None:
                        self.full = True
                        self.on_full()
                        return
        except (OSError, ValueError):
            return
        finally:
            try:
                self.pipe.close()
            except OSError:
                pass

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)

    def alive(self) -> bool:
        return self.thread.is_alive()

    def data(self) -> bytes:
        return b"".join(self.chunks)


def _kill(proc: "subprocess.Popen[bytes]") -> None:
    try:
        os.killpg(proc.pid, 9)
    except (ProcessLookupError, PermissionError):
        try:
            proc.kill()
        except ProcessLookupError:
            pass


def _show_argv(argv: Sequence[str]) -> str:
    return repr(" ".join(argv)[:120])
