"""What every command shares: the app object, the output options and shell completion.

Commands import from here and from :mod:`psabill.cli.render`, never from each
other and never from the root group, so the command modules form no cycle.
"""

import os
import sys
from typing import Any, Callable, List, NamedTuple, TypeVar

import click

from psabill.config.paths import Paths
from psabill.config.settings import Settings, load
from psabill.ledger.history import Store, open_store
from psabill.schedule.rules import WEEKDAYS

F = TypeVar("F", bound=Callable[..., Any])


class App(NamedTuple):
    """The root group's parsed options, handed to every command."""

    paths: Paths
    verbose: bool = False
    quiet: bool = False  # -q: action commands print nothing but errors

    def settings(self, *, check_addresses: bool = True, must_exist: bool = False) -> Settings:
        """Load and validate the config (parsed once per process: psabill.config.settings caches it)."""
        return load(self.paths.config, check_addresses=check_addresses, must_exist=must_exist)

    def store(self) -> Store:
        """The ledger and run lock: ``[state] url`` / PSABILL_STATE_URL, else SQLite in the state dir."""
        settings = self.settings(check_addresses=False)
        return open_store(self.paths, settings.state_url, settings.account_id)


pass_app = click.make_pass_decorator(App)

# A run id as the ledger stores it (a signed 64-bit integer); anything else is a usage error.
RUN_ID = click.IntRange(1, 2 ** 63 - 1)


def echo(message: str = "", **kwargs: Any) -> None:
    """``click.echo`` for what an action command reports; silent under ``-q``.

    Errors never go through here (they are exceptions), and neither does JSON, which is asked for explicitly.
    """
    ctx = click.get_current_context(silent=True)
    app = ctx.find_object(App) if ctx is not None else None
    if app is not None and app.quiet:
        return
    click.echo(message, **kwargs)


def _set_on_app(field_name: str) -> Callable[[click.Context, click.Parameter, bool], None]:
    def callback(ctx: click.Context, param: click.Parameter, value: bool) -> None:
        # App is immutable: the option swaps in a copy for this command (and any it invokes).
        if value and isinstance(ctx.obj, App):
            ctx.obj = ctx.obj._replace(**{field_name: True})

    return callback


def verbosity_options(command: click.Command) -> click.Command:
    """Accept ``-v``/``-q`` after ``command`` and each of its subcommands, as well as before."""
    names = {opt for param in command.params for opt in getattr(param, "opts", ())}
    if "-v" not in names:
        command.params.append(click.Option(["-v", "--verbose"], is_flag=True, expose_value=False,
                                           callback=_set_on_app("verbose"), help="Echo the log to stderr."))
    if "-q" not in names:
        command.params.append(click.Option(["-q", "--quiet"], is_flag=True, expose_value=False,
                                           callback=_set_on_app("quiet"), help="Print only errors."))
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            verbosity_options(sub)
    return command


def colour_wanted() -> bool:
    """Colour on a terminal; never with NO_COLOR set; forced by CLICOLOR_FORCE=1 (for pipes to less -R)."""
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("CLICOLOR_FORCE", "0") not in ("", "0"):
        return True
    return sys.stdout.isatty()


class Fail(click.ClickException):
    """A domain error on its way out: ``Error: <one line>`` and its exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def json_option(func: F) -> F:
    """``--json``: print JSON instead of text."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")(func)


# -- shell completion ------------------------------------------------------------


def complete_zone(ctx: click.Context, param: click.Parameter, incomplete: str) -> List[Any]:
    """IANA zone names starting with what was typed (ignoring case)."""
    from zoneinfo import available_timezones  # scans tzdata: only a <TAB> after --timezone gets here

    prefix = incomplete.lower()
    return sorted(z for z in available_timezones() if z.lower().startswith(prefix))


def complete_weekday(ctx: click.Context, param: click.Parameter, incomplete: str) -> List[Any]:
    """mon..sun."""
    return [day for day in WEEKDAYS if day.startswith(incomplete.lower())]


def complete_run_id(ctx: click.Context, param: click.Parameter, incomplete: str) -> List[Any]:
    """Run ids from this config's ledger (SQLite or PostgreSQL), newest first; any problem completes nothing."""
    from click.shell_completion import CompletionItem  # only shell completion loads it

    root = ctx.find_root()
    app = root.obj if isinstance(root.obj, App) else App(Paths.resolve(root.params.get("config_path"),
                                                                       root.params.get("state_dir")))
    try:
        store = app.store()
        if not store.ledger.exists:
            return []
        with store.ledger as ledger:
            rows = ledger.run_ids(incomplete)
    except Exception:  # completion must never print an error into the shell
        return []
    return [CompletionItem(str(run_id), help=f"{started} {trigger} {status}") for run_id, started, trigger, status in rows]
