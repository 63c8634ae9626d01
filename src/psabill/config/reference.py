"""The config reference, made from the schema: ``psabill config reference`` and the README's table.

Every row comes from a key's one declaration in :mod:`psabill.config.schema`
(type, default, meaning, example); a secret's declaration gives its three
rows. ``python -m psabill.config.reference`` prints the same Markdown;
tests/test_config_reference.py fails when the README's copy drifts.
"""

import sys
from typing import Any, Iterator, List, Tuple

from psabill.config.keys import Key, toml_name
from psabill.config.schema import SCHEMA, Schema, Table

_NO_DEFAULT = "-"


def rows(schema: Schema = SCHEMA) -> Iterator[Tuple[str, str, str, str, str, str]]:
    """(section, key, type, default, meaning, example) for every key, in schema order."""
    for name in schema._fields:
        section = getattr(schema, name)
        if isinstance(section, Table):
            yield section.name, "*", section.type, _NO_DEFAULT, section.meaning, section.example
            continue
        yield from _section_rows(section, "" if name == "top" else name)


def _section_rows(cls: Any, where: str) -> Iterator[Tuple[str, str, str, str, str, str]]:
    subs = []
    for field, declaration in cls.KEYS.items():
        name = toml_name(field, declaration)
        if declaration.sub is not None:
            subs.append((declaration.sub, f"{where}.{name}" if where else name))
            continue
        if declaration.secret:
            env, file = declaration.forms
            yield where, name, declaration.type, _NO_DEFAULT, \
                f"{_cap(declaration.meaning)} as a literal; prefer {name}_file or {name}_env (a literal needs a " \
                f"mode 0600 config).", declaration.example
            yield where, f"{name}_env", "variable name", _NO_DEFAULT, \
                f"Read {declaration.meaning} from this variable.", f'"{env}"'
            yield where, f"{name}_file", "path", _NO_DEFAULT, \
                f"Read {declaration.meaning} from this file (mode 0600).", f'"{file}"'
            continue
        yield where, name, declaration.type, _default(declaration), declaration.meaning, declaration.example
    for sub_cls, sub_where in subs:
        yield from _section_rows(sub_cls, sub_where)


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _default(declaration: Key) -> str:
    if declaration.default_doc is not None:
        return declaration.default_doc
    value = declaration.default
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return _NO_DEFAULT
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def keys(schema: Schema = SCHEMA) -> List[str]:
    """Every key the schema accepts, as dotted paths (``notify.smtp.password_file``, ``products.*``)."""
    return [f"{section}.{name}" if section else name for section, name, *_ in rows(schema)]


FORMATS = """\
## Usage sources

`[source] kind = "lastpass"` reads every managed company of your LastPass MSP
account over the LastPass Business API and bills each its users: one row per
company, SKU `sku` (or `mfa_sku` when the company has the MFA add-on), seats =
its users whose status is in `count_statuses`; a suspended company is billed 0.
See docs/lastpass.md for the API key and what is counted.

`[source] kind = "csv"` reads a UTF-8 file with a header row naming
`customer`, `sku` and `seats`, and optionally `psa_company`; other columns are
ignored. A byte-order mark and CRLF line endings (what Excel writes) are fine.
`seats` is a whole number, 0 or more. `sku` must be a key of `[products]`.
End the file with a line break: a last row without one looks cut, and an
unattended run holds it (see What psabill refuses to do unattended).

```csv
customer,sku,seats,psa_company
CUST00001,LastPass,25,
Globex Corporation,LastPass,40,GLOBEX
```

`[source] kind = "json"` reads a list of objects with the same fields
(`seats` an integer, `psa_company` a string or null); a key given twice in an
object is refused.

```json
[{"customer": "CUST00001", "sku": "LastPass", "seats": 25},
 {"customer": "Globex Corporation", "sku": "LastPass", "seats": 40, "psa_company": "GLOBEX"}]
```

`[source] kind = "command"` runs `command` (an argv list, no shell) in the
config file's directory for at most `timeout` seconds; its stdout is CSV or
JSON as above (`format`, else sniffed). It says it is complete by exiting 0;
with `trailer = true` its last line must also be `# rows: N`, the number of
rows before it, so an export cut short is refused. Any bad row aborts the run
before the PSA is touched, with one line naming the row.

Names are compared in Unicode NFC, ignoring case: a name exported from a Mac
(decomposed accents) matches the PSA's, and two rows that differ only so are
one customer twice, which is refused. A source path must be a regular file
(a FIFO or device is refused at once); a file that changed in the last few
seconds, or changes while it is read, is read again after a short wait.

## Mapping file format

`[mapping] file` names a CSV with the header `customer,psa_company[,agreement]`:
one row per customer (matched ignoring case) that pins it to a PSA company
and, optionally, one agreement. A LastPass managed company can be pinned by
its name or its id. A duplicate customer or an empty `psa_company` aborts the
run.

```csv
customer,psa_company,agreement
Globex Corporation,GLOBEX,Managed Services 2026
CUST00007,ACME,
```

## Secrets

`psa.private_key` (ConnectWise), `psa.secret` (Autotask), `source.api_key`
(LastPass) and `notify.smtp.password` each come from exactly one of: the key
itself (a literal: the config must then be mode 0600), `<key>_env` (an
environment variable) or `<key>_file` (a file, relative to the config's
directory, mode 0600). `psabill config show` masks literals and URL passwords;
no error ever shows a secret's value.

## Commands

* `psabill config init [--psa connectwise|autotask] [--source lastpass|csv|json|command] [--from ADDRESS] [--force]`
  writes a commented starter config (mode 0600), or adds the sections an existing one lacks.
* `psabill config path` prints the config file in use.
* `psabill config show [--json]` prints it with secrets masked.
* `psabill config reference` prints this page.
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_reference(level: int = 1, schema: Schema = SCHEMA) -> str:
    """Every key of ``schema`` plus the file formats, as Markdown; headings start at ``level``."""
    out = [
        "# psabill config reference",
        "",
        "<!-- Generated by `psabill config reference` from the one declaration of each key in",
        "     psabill.config.schema; tests/test_config_reference.py fails when this copy drifts. -->",
        "",
        "The config is TOML, at `--config`, else `$PSABILL_CONFIG`, else",
        "`~/.config/psabill/config.toml`. Paths in it are relative to its directory.",
        "An unknown key or a bad value is refused when the config is loaded.",
        "",
    ]
    section = None
    for head, name, type_, default, meaning, example in rows(schema):
        if head != section:
            section = head
            if out[-1] != "":
                out.append("")
            out += [f"## [{head}]" if head else "## Top level", "",
                    "| Key | Type | Default | Meaning | Example |", "|---|---|---|---|---|"]
        out.append(f"| `{name}` | {_cell(type_)} | {_cell(default)} | {_cell(meaning)} | `{_cell(example)}` |")
    return _demote("\n".join(out) + "\n\n" + FORMATS, level - 1)


def _demote(markdown: str, by: int) -> str:
    """Add ``by`` levels to every heading outside code fences."""
    lines, fenced = [], False
    for line in markdown.split("\n"):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            line = "#" * by + line
        lines.append(line)
    return "\n".join(lines)


if __name__ == "__main__":  # python -m psabill.config.reference
    sys.stdout.write(render_reference())
