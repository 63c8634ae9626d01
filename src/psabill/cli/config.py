"""``psabill config``: write a starter config, say which config is in use, show it, print the reference.

The starter's comments come from :data:`psabill.config.reference.DOCS`, the same
descriptions the README's config reference is generated from, so neither drifts
from the schema.
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

import click

from psabill.cli.options import App, echo, emit_json, json_option, pass_app
from psabill.errors import UsageError

MASK = "********"


@click.group()
def config() -> None:
    """Write, locate and inspect the config file.

    \b
    Example:
      psabill config init --psa connectwise --source csv
      psabill config show
    """


# Each starter section: (table, [(key, example or None for the DOCS example, active?)]).
Starter = List[Tuple[str, List[Tuple[str, Any, bool]]]]


def starter_sections(psa: str, source: str) -> Starter:
    """What ``config init`` writes, as (section, keys); commented-out keys are optional."""
    sections: Starter = [
        ("account", [("name", '"Example MSP"', True), ("timezone", None, False)]),
        ("notify", [("emails", None, False), ("transport", '"sendmail"', True), ("on_manual", "false", True),
                    ("ping_url", None, False)]),
    ]
    if source == "command":
        sections.append(("source", [("kind", '"command"', True), ("command", None, True),
                                    ("format", '"csv"', False), ("timeout", None, False)]))
    else:
        sections.append(("source", [("kind", f'"{source}"', True), ("path", f'"usage.{source}"', True)]))
    sections.append(("products", [("LastPass", '"SEATS-STD"', True)]))
    sections.append(("mapping", [("file", None, False)]))
    if psa == "autotask":
        sections.append(("psa", [("kind", '"autotask"', True),
                                 ("url", '"https://webservices2.autotask.net"', True),
                                 ("username", None, True), ("integration_code", None, True),
                                 ("secret_file", None, True), ("secret_env", None, False)]))
    else:
        sections.append(("psa", [("kind", '"connectwise"', True), ("url", None, True), ("company", None, True),
                                 ("public_key", None, True), ("client_id", None, True),
                                 ("private_key_file", None, True), ("private_key_env", None, False)]))
    return sections


def starter_text(psa: str, source: str) -> str:
    """The commented starter config for ``psa`` and ``source``."""
    from psabill.config.reference import DOCS
    from psabill.config.settings import VERSION

    lines = [
        "# psabill config, written by 'psabill config init'.",
        "# Every key: 'psabill config reference' (also in the README). Paths are relative to this file.",
        "# Secrets: keep them out of this file with *_file (a mode 0600 file) or *_env (a variable).",
        "# The schedule is saved by 'psabill schedule set --help'; it adds a [schedule] table here.",
        f"version = {VERSION}",
    ]
    for section, keys in starter_sections(psa, source):
        lines += ["", f"[{section}]"]
        for key, value, active in keys:
            doc = DOCS[f"{section}.*" if section == "products" else f"{section}.{key}"]
            example = value if value is not None else doc.example
            lines.append(f"# {doc.meaning}" + ("" if doc.default == "-" else f" Default: {doc.default}."))
            lines.append(("" if active else "# ") + f"{key} = {example}")
    return "\n".join(lines) + "\n"


@config.command()
@click.option("--psa", type=click.Choice(["connectwise", "autotask"]), default="connectwise", show_default=True,
              help="Which PSA the [psa] table is for.")
@click.option("--source", type=click.Choice(["csv", "json", "command"]), default="csv", show_default=True,
              help="Where seat counts come from.")
@click.option("--force", is_flag=True, help="Replace an existing config.")
@json_option
@pass_app
def init(app: App, psa: str, source: str, force: bool, as_json: bool) -> None:
    """Write a commented starter config (mode 0600) to the config path.

    Edit the values it marks, then 'psabill check'. An existing config is
    kept unless --force is given.

    \b
    Example:
      psabill config init --psa autotask --source command
    """
    from psabill.errors import ConfigError
    from psabill.text.files import atomic_write
    from psabill.config.settings import parse_document, validate

    path = app.paths.config
    if path.exists() and not force:
        raise UsageError(f"config {path} already exists: pass --force to replace it")
    payload = starter_text(psa, source).encode("utf-8")
    validate(parse_document(payload, path), path)  # the starter must be a config psabill loads
    atomic_write(path, payload, error=ConfigError, what="config", prefix=".config-")
    if as_json:
        emit_json({"config": str(path), "psa": psa, "source": source})
        return
    echo(f"Wrote {path} (mode 0600). Edit it, then run 'psabill check'.")


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
        emit_json({"config": str(target), "exists": target.exists()})
        return
    click.echo(str(target))
    if not target.exists():
        click.echo("(it does not exist yet: 'psabill config init' writes one)", err=True)


def masked(document: Dict[str, Any]) -> Dict[str, Any]:
    """A deep copy of ``document`` with every literal secret replaced by :data:`MASK`."""
    from psabill.config.settings import SECRET_KEYS

    def copy(node: Any) -> Any:
        return {k: copy(v) for k, v in node.items()} if isinstance(node, dict) else node

    out = copy(document)
    for section, key in SECRET_KEYS:
        node: Any = out
        for part in section.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and key in node:
            node[key] = MASK
    return out


@config.command()
@json_option
@pass_app
def show(app: App, as_json: bool) -> None:
    """Print the config in use, with literal secrets masked.

    *_env and *_file values (names, not secrets) are shown as they are.

    \b
    Example:
      psabill config show --json
    """
    settings = app.settings(check_addresses=False, must_exist=True)
    document = masked(dict(settings.document))
    if as_json:
        emit_json(document)
        return
    import tomli_w

    click.echo(f"# {settings.path}")
    click.echo(tomli_w.dumps(document), nl=False)


@config.command()
def reference() -> None:
    """Print the Markdown reference of every config key and file format.

    \b
    Example:
      psabill config reference > config-reference.md
    """
    from psabill.config.reference import render_reference

    click.echo(render_reference(), nl=False)
