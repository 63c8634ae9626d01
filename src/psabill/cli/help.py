"""``psabill help [COMMAND]`` and ``psabill version``."""

from typing import Tuple

import click

from psabill import __version__


@click.command("help")
@click.argument("command", nargs=-1)
@click.pass_context
def help_(ctx: click.Context, command: Tuple[str, ...]) -> None:
    """Show the help of psabill, or of COMMAND (``psabill help schedule set``).

    \b
    Example:
      psabill help run
    """
    root = ctx.find_root()
    group = root.command
    current: click.Command = group
    sub_ctx = root
    for name in command:
        if not isinstance(current, click.Group):
            raise click.UsageError(f"{' '.join(command)!r}: {current.name} has no subcommands")
        found = current.get_command(sub_ctx, name)
        if found is None:
            raise click.UsageError(f"no such command {name!r}")
        sub_ctx = click.Context(found, info_name=name, parent=sub_ctx)
        current = found
    click.echo(current.get_help(sub_ctx))


@click.command()
def version() -> None:
    """Print the version of psabill.

    \b
    Example:
      psabill version
    """
    click.echo(f"psabill {__version__}")
