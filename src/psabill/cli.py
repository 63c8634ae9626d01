"""The Click layer: parse, call the core, render text or JSON, map errors to exit codes.

Command groups live in ``psabill.commands``; this module holds the root group,
the shared options and the one place where a domain error becomes an exit code.
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Optional, TypeVar

import click

from psabill import __version__
from psabill.errors import PsabillError

F = TypeVar("F", bound=Callable[..., Any])


class Fail(click.ClickException):
    """A domain error on its way out: ``Error: <one line>`` and its exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class PsabillGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PsabillError as exc:
            raise Fail(exc.message, int(exc.exit_code)) from None


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")(func)


def emit_json(data: Any) -> None:
    import json  # not at module level: the cron path never prints JSON

    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def get_ctx() -> Any:
    """The psabill Context stored on the Click context by the root group."""
    return click.get_current_context().find_root().obj


@click.group(cls=PsabillGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", metavar="PATH", help="Config file (default: $PSABILL_CONFIG, else ~/.config/psabill/config.toml).")
@click.option("--state-dir", metavar="PATH", help="History, lock and log dir (default: $PSABILL_STATE_DIR, else the user state dir).")
@click.option("-v", "--verbose", is_flag=True, help="Echo the log to stderr.")
@click.version_option(__version__, prog_name="psabill")
@click.pass_context
def cli(ctx: click.Context, config_path: Optional[str], state_dir: Optional[str], verbose: bool) -> None:
    """Keep PSA billing quantities in step with real seat counts, on a schedule.

    \b
    Example:
      psabill schedule set --weekly tue --hour 9 --timezone America/New_York \\
          --notify "billing@msp.example, ops@msp.example"
      psabill status
    """
    from psabill.context import Context

    ctx.obj = Context.from_env(config_path, state_dir, verbose=verbose)


def _register() -> None:
    from psabill.commands import check, cron, demo, email, history, run, schedule, status

    for command in (schedule.schedule, cron.cron, run.run, status.status, history.history, email.email_group,
                    check.check, demo.demo):
        cli.add_command(command)


_register()


def main() -> None:
    try:
        cli.main(prog_name="psabill")
    except KeyboardInterrupt:  # pragma: no cover - interactive only
        click.echo("Aborted.", err=True)
        sys.exit(130)

