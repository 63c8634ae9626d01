"""What ``psabill config init`` writes: a commented starter config, made from the schema's declarations.

Each key that declares a :class:`~psabill.config.keys.Starter` appears with its
meaning as a comment, active or commented out; ``kinds`` keeps a key to the
starters of some ``[source]`` / ``[psa]`` kinds. A starter never holds a
literal secret: a secret's starter names its ``_file``. The text is validated
as a config before it is written, so a starter always loads as it is.
"""

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, NamedTuple, Optional

import tomlkit

from psabill.config.keys import Key, toml_name
from psabill.config.schema import SCHEMA, Schema, Table
from psabill.config.settings import parse_document, validate
from psabill.errors import ConfigError, UsageError
from psabill.text.files import atomic_write, read_regular

HEADER = (
    "# psabill config, written by 'psabill config init'.",
    "# Every key: 'psabill config reference' (and docs/configuration.md). Paths are relative to this file.",
    "# Secrets: keep them out of this file with *_file (a mode 0600 file) or *_env (a variable).",
    "# The schedule is saved by 'psabill schedule set --help'; it adds a [schedule] table here.",
)


def sections(schema: Schema, kinds: Mapping[str, str], values: Mapping[str, str]) -> Dict[str, List[str]]:
    """Starter lines per section name; ``kinds`` is {"source": "csv", "psa": "connectwise"}, ``values`` overrides
    a key's starter value by dotted name (``notify.from``)."""
    out: Dict[str, List[str]] = {}
    for name in schema._fields:
        section = getattr(schema, name)
        if isinstance(section, Table):
            lines = [f"# {section.meaning}"] + [f"{k} = {v}" for k, v in section.starter]
            out[section.name] = lines
            continue
        where = "" if name == "top" else name
        lines = _section_lines(section, where, kinds.get(where, ""), values)
        if lines:
            out[where] = lines
    return out


def _section_lines(cls: Any, where: str, kind: str, values: Mapping[str, str]) -> List[str]:
    lines: List[str] = []
    for field, declaration in cls.KEYS.items():
        name = toml_name(field, declaration)
        dotted = f"{where}.{name}" if where else name
        starter = declaration.starter
        if dotted in values:
            lines += _key_lines(declaration, name, values[dotted], True)
            continue
        if starter is None or (starter.kinds is not None and kind not in starter.kinds):
            continue
        if declaration.secret:
            value = starter.value or f'"{declaration.forms[1]}"'
            lines.append(f"# Read {declaration.meaning} from this file (mode 0600); or {name}_env = "
                         f"\"{declaration.forms[0]}\".")
            lines.append(("" if starter.active else "# ") + f"{name}_file = {value}")
            continue
        value = (starter.value or declaration.example).replace("{kind}", kind)
        lines += _key_lines(declaration, name, value, starter.active)
    return lines


def _key_lines(declaration: Key, name: str, value: str, active: bool) -> List[str]:
    doc = declaration.default_doc if declaration.default_doc is not None else None
    default = "" if doc in (None, "-") else f" Default: {doc}."
    return [f"# {declaration.meaning}{default}", ("" if active else "# ") + f"{name} = {value}"]


def starter_text(kinds: Mapping[str, str], values: Optional[Mapping[str, str]] = None,
                 schema: Schema = SCHEMA, only: Optional[List[str]] = None) -> str:
    """The starter config (or, with ``only``, just those sections, to add to an existing config)."""
    lines: List[str] = [] if only is not None else list(HEADER)
    for where, body in sections(schema, kinds, values or {}).items():
        if only is not None and where not in only:
            continue
        if where:
            lines += ["", f"[{where}]"]
        lines += body
    return "\n".join(lines).lstrip("\n") + "\n"


class Written(NamedTuple):
    """What ``config init`` did."""

    path: Path
    created: bool  # a new file
    added: List[str]  # sections added to an existing config
    replaced: List[str]  # sections of the old config that --force discarded


def default_sender() -> Optional[str]:
    """``psabill@<this host's full domain name>``, or None when the host's name is not a full domain."""
    import socket  # only config init asks for the host's name

    host = (socket.getfqdn() or "").strip(".")
    return f"psabill@{host}" if "." in host and not host.endswith(".localdomain") else None


def default_transport() -> str:
    """sendmail when the host has one (an MTA is installed), else SMTP."""
    return "sendmail" if os.access("/usr/sbin/sendmail", os.X_OK) else "smtp"


def write(path: Path, kinds: Mapping[str, str], *, sender: Optional[str], transport: Optional[str],
          force: bool) -> Written:
    """Write the starter to ``path``, or add the sections an existing config lacks (see the CLI's help)."""
    values: Dict[str, str] = {"notify.transport": _toml(transport or default_transport())}
    chosen = sender or default_sender()
    if chosen:
        values["notify.from"] = _toml(chosen)
    existing = read_regular(path, "config", ConfigError, missing_ok=True)
    if existing is None or force:
        text = starter_text(kinds, values)
        replaced = sorted(parse_document(existing, path)) if existing is not None else []
        payload = text.encode("utf-8")
        validate(parse_document(payload, path), path)  # the starter must be a config psabill loads
        atomic_write(path, payload, error=ConfigError, what="config", prefix=".config-")
        return Written(path, existing is None, [], [f"[{name}]" if name != "version" else name for name in replaced])
    document = parse_document(existing, path)
    missing = [name for name in sections(SCHEMA, kinds, values) if name and name not in document]
    if not missing:
        keep = ", ".join(f"[{name}]" for name in document if isinstance(document[name], dict))
        raise UsageError(f"config {path} already has every section a starter writes; --force would replace it "
                         f"whole, discarding {keep or 'its top-level keys'}")
    addition = starter_text(kinds, values, only=missing)
    text = existing.decode("utf-8").rstrip("\n") + "\n\n" + addition
    tomlkit.parse(text)
    validate(parse_document(text.encode("utf-8"), path), path)
    atomic_write(path, text.encode("utf-8"), error=ConfigError, what="config", prefix=".config-")
    return Written(path, False, [f"[{name}]" for name in missing], [])


def _toml(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string
