"""``psabill config``: write a starter config, say which config is in use, show it, print the reference.

The starter and the reference are both made from the schema's one declaration of each key.
"""

import sys
from typing import Any, Dict, Optional

import click

from psabill import psa, sources
from psabill.cli.options import App, echo, json_option, pass_app
from psabill.cli.render import emit_json
from psabill.config import starter
from psabill.config.edit import render
from psabill.config.reference import render_reference
from psabill.config.schema import SCHEMA
from psabill.config.secrets import ENV_NAME
from psabill.text.redact import mask_url

MASK = "********"


@click.group()
def config() -> None:
    """Write, locate and inspect the config file.

    \b
    Example:
      psabill config init --psa connectwise --source lastpass
      psabill config show
    """


@config.command()
@click.option("--psa", "psa_kind", type=click.Choice(psa.kinds()), default="connectwise", show_default=True,
              help="Which PSA the [psa] table is for.")
@click.option("--source", "source_kind", type=click.Choice(sources.kinds()), default="lastpass", show_default=True,
              help="Where seat counts come from.")
@click.option("--from", "sender", metavar="ADDRESS",
              help="Sender of the report email (default: psabill@<this host's full domain name>; asked on a "
                   "terminal when the host has none).")
@click.option("--transport", type=click.Choice(["smtp", "sendmail", "file"]),
              help="How the report is delivered (default: sendmail when the host has one, else smtp).")
@click.option("--force", is_flag=True, help="Replace an existing config (it says what that discards).")
@json_option
@pass_app
def init(app: App, psa_kind: str, source_kind: str, sender: Optional[str], transport: Optional[str], force: bool,
         as_json: bool) -> None:
    """Write a commented starter config (mode 0600), or add the sections an existing one lacks.

    An existing config keeps every byte; only missing sections are appended.
    --force replaces it whole, and says which sections that discarded.

    \b
    Example:
      psabill config init --psa autotask --source lastpass --from psabill@msp.example
    """
    if sender is None and starter.default_sender() is None and sys.stdin.isatty() and not as_json:
        sender = click.prompt("This host's name is not a full domain: send the report email from which address?",
                              default="", show_default=False) or None
    result = starter.write(app.paths.config, {"psa": psa_kind, "source": source_kind}, sender=sender,
                           transport=transport, force=force)
    if as_json:
        emit_json({"schema": 1, "config": str(result.path), "created": result.created, "added": result.added,
                   "replaced": result.replaced, "psa": psa_kind, "source": source_kind})
        return
    if result.created:
        echo(f"Wrote {result.path} (mode 0600). Fill in [psa] and [source], then run 'psabill check'.")
    elif result.added:
        echo(f"Added {', '.join(result.added)} to {result.path}; nothing else changed. Then run 'psabill check'.")
    else:
        echo(f"Replaced {result.path} (discarded {', '.join(result.replaced) or 'nothing'}).")
    if sender is None and starter.default_sender() is None:
        echo("Note: set [notify] from to a real address before the first report: this host has no full "
             "domain name to send from.")


@config.command()
@json_option
@pass_app
def path(app: App, as_json: bool) -> None:
    """Print the path of the config file in use.

    It is --config, else $PSABILL_CONFIG, else the per-user config dir.

    \b
    Example:
      psabill config path
    """
    target = app.paths.config
    if as_json:
        emit_json({"schema": 1, "config": str(target), "exists": target.exists()})
        return
    click.echo(str(target))
    if not target.exists():
        click.echo("(it does not exist yet: 'psabill config init' writes one)", err=True)


def masked(document: Dict[str, Any]) -> Dict[str, Any]:
    """A deep copy of ``document`` with every literal secret, and every URL's password, masked."""
    def copy(node: Any, section: Any) -> Any:
        if not isinstance(node, dict):
            return node
        out: Dict[str, Any] = {}
        for key, value in node.items():
            sub = section.KEYS.get(key) if section is not None and hasattr(section, "KEYS") else None
            if isinstance(value, dict):
                out[key] = copy(value, sub.sub if sub is not None else None)
            elif sub is not None and sub.secret and key == (sub.toml or key):
                out[key] = MASK
            elif isinstance(value, str) and key.endswith("_env") and not ENV_NAME.fullmatch(value):
                out[key] = MASK  # not a variable's name: perhaps the secret itself, pasted here
            elif isinstance(value, str) and "://" in value:
                out[key] = mask_url(value)
            else:
                out[key] = value
        return out

    return {name: copy(value, SCHEMA.section_of(name)) if isinstance(value, dict) else value
            for name, value in document.items()}


@config.command()
@json_option
@pass_app
def show(app: App, as_json: bool) -> None:
    """Print the config in use, with literal secrets and URL passwords masked.

    *_env and *_file values (names, not secrets) are shown as they are, except
    an *_env value that is not a variable name (capitals, digits, _): that may
    be the secret itself, pasted in the wrong key.

    \b
    Example:
      psabill config show --json
    """
    settings = app.settings(check_addresses=False, must_exist=True)
    document = masked(dict(settings.document))
    if as_json:
        emit_json({"schema": 1, **document})  # every --json object carries "schema"
        return
    click.echo(f"# {settings.path}")
    click.echo(render(document), nl=False)


@config.command()
def reference() -> None:
    """Print the Markdown reference of every config key and file format.

    \b
    Example:
      psabill config reference > config-reference.md
    """
    click.echo(render_reference(), nl=False)
