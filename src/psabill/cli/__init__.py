"""The Click layer: parse, call the core, render text or JSON, map errors to exit codes.

The root group finds its commands lazily, as Click's "complex" example does:
:data:`COMMANDS` names each command's module, imported only when that command
runs, so the cron path loads ``run`` and nothing else. Command modules import
:mod:`psabill.cli.options` and :mod:`psabill.cli.render`, never this module,
so there is no cycle. Here is the one place where a domain error becomes an
exit code.
"""

import importlib
import os
import sys
from typing import Any, List, Optional

import click

from psabill import __version__
from psabill.cli.options import App, Fail, verbosity_options
from psabill.config.paths import Paths
from psabill.errors import ExitCode, PsabillError
from psabill.text import clean, redact

# command name -> (module under psabill.cli, attribute)
COMMANDS = {
    "approve": ("approve", "approve"),
    "check": ("check", "check"),
    "config": ("config", "config"),
    "cron": ("cron", "cron"),
    "demo": ("demo", "demo"),
    "email": ("email", "email_group"),
    "help": ("help", "help_"),
    "history": ("history", "history"),
    "reject": ("approve", "reject"),
    "run": ("run", "run"),
    "sandbox": ("sandbox", "sandbox"),
    "schedule": ("schedule", "schedule"),
    "status": ("status", "status"),
    "version": ("help", "version"),
}


class PsabillGroup(click.Group):
    """The root group: lazy commands, and domain errors turned into exit codes."""

    def list_commands(self, ctx: click.Context) -> List[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> Optional[click.Command]:
        if name not in COMMANDS:
            return None
        module, attribute = COMMANDS[name]
        command: click.Command = getattr(importlib.import_module(f"psabill.cli.{module}"), attribute)
        return verbosity_options(command)  # -v / -q after the command too

    def parse_args(self, ctx: click.Context, args: List[str]) -> List[str]:
        # Bare `psabill` shows the help and exits 0, as it did before Click 8.2 made it a usage error.
        if not args and not ctx.resilient_parsing:
            click.echo(ctx.get_help())
            ctx.exit(0)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PsabillError as exc:
            raise Fail(exc.message, int(exc.exit_code)) from None

    def main(self, args: Any = None, prog_name: Optional[str] = None, complete_var: Optional[str] = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        """Every way out is one line on stderr and a documented exit code.

        Click's own usage errors print a usage block first; here they are one
        ``Error:`` line that names the command's --help. Anything unexpected is
        a bug: one line, exit 70, and the traceback only with PSABILL_DEBUG=1.
        """
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        streams = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = _Scrubbed(sys.stdout), _Scrubbed(sys.stderr)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Exit as exc:
            code = exc.exit_code
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else "psabill"
            _fail(f"{exc.format_message()} (see '{where} --help')", exc.exit_code)
        except click.ClickException as exc:
            _fail(exc.format_message(), exc.exit_code)
        except click.Abort:
            _fail("aborted", ExitCode.INTERRUPTED)
        except KeyboardInterrupt:
            _fail("interrupted", ExitCode.INTERRUPTED)
        except Exception as exc:  # a bug: never a traceback for cron to mail, unless asked for
            if os.environ.get("PSABILL_DEBUG"):
                raise
            _fail(f"internal error, please report it: {type(exc).__name__}: {clean.message(exc)} "
                  "(PSABILL_DEBUG=1 shows the traceback)", ExitCode.INTERNAL)
        finally:
            sys.stdout, sys.stderr = streams
        sys.exit(code if isinstance(code, int) else 0)


class _Scrubbed:
    """A text stream whose every write is scrubbed of registered secrets (see psabill.text.redact)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: Any) -> int:
        if isinstance(text, str):
            text = redact.scrub(text)
        return int(self._stream.write(text))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _fail(message: str, code: int) -> None:
    click.echo(f"Error: {clean.message(message)}", err=True)
    sys.exit(int(code))


@click.group(cls=PsabillGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", metavar="PATH", help="Config file (default: $PSABILL_CONFIG, else ~/.config/psabill/config.toml).")
@click.option("--state-dir", metavar="PATH", help="History, lock and log dir (default: $PSABILL_STATE_DIR, else the user state dir).")
@click.option("-v", "--verbose", is_flag=True, help="Echo the log to stderr (also accepted after the command).")
@click.option("-q", "--quiet", is_flag=True,
              help="Commands that change things print only errors (also accepted after the command).")
@click.version_option(__version__, prog_name="psabill")
@click.pass_context
def cli(ctx: click.Context, config_path: Optional[str], state_dir: Optional[str], verbose: bool, quiet: bool) -> None:
    """Keep PSA billing quantities in step with real seat counts, on a schedule.

    \b
    Example:
      psabill schedule set --weekly tue --hour 9 --timezone America/New_York \\
          --notify "billing@msp.example, ops@msp.example"
      psabill status
    """
    if verbose and quiet:
        raise click.UsageError("-v and -q cannot be combined")
    ctx.obj = App(Paths.resolve(config_path, state_dir), verbose=verbose, quiet=quiet)


def main() -> None:
    """The ``psabill`` console script."""
    cli.main(prog_name="psabill")
