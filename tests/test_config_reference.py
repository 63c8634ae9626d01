"""The config reference (docs/configuration.md) is generated from the one schema and cannot drift from it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from psabill.config import reference as settings  # the reference module documents the settings schema
from psabill.cli import cli

README = Path(__file__).parents[1] / "docs" / "configuration.md"  # the reference moved out of the README


def _accepted(cls, where: str = ""):
    """Every dotted TOML key the validator accepts in a section class (sub-tables walked)."""
    from psabill.config.keys import toml_name, toml_names

    for name in toml_names(cls):
        declaration = cls.KEYS[toml_names(cls)[name]]
        dotted = f"{where}.{name}" if where else name
        if declaration.sub is not None and name == toml_name(toml_names(cls)[name], declaration):
            yield from _accepted(declaration.sub, dotted)
        else:
            yield dotted


def test_every_schema_key_has_a_docs_entry_and_every_entry_a_key() -> None:
    # DOCS is gone: each key's documentation is its one declaration in psabill.config.schema, and
    # the reference's rows are made from it. Every key the validator accepts has a row, and every row a key.
    from psabill.config.schema import SCHEMA, Table

    keys = settings.keys()
    assert "notify.smtp.password_file" in keys and "products.*" in keys and "version" in keys
    assert len(keys) == len(set(keys)), "a key documented twice"
    accepted = []
    for name in SCHEMA._fields:
        section = getattr(SCHEMA, name)
        if isinstance(section, Table):
            accepted.append(f"{section.name}.*")
        else:
            accepted += list(_accepted(section, "" if name == "top" else name))
    assert sorted(set(accepted) - set(keys)) == [], "keys without a reference row"
    assert sorted(set(keys) - set(accepted)) == [], "reference rows for keys the schema does not have"


def test_every_docs_entry_is_filled_in() -> None:
    for section, name, type_, default, meaning, example in settings.rows():
        key = f"{section}.{name}" if section else name
        assert type_ and default and meaning and example, key
        assert "\n" not in "".join((type_, default, meaning, example)), key


def test_the_readme_reference_is_exactly_what_the_generator_writes() -> None:
    text = README.read_text(encoding="utf-8")
    start, end = "<!-- config-reference:start -->\n", "<!-- config-reference:end -->"
    embedded = text[text.index(start) + len(start):text.index(end)]
    assert embedded == settings.render_reference(2), (
        "docs/configuration.md's config reference is stale: paste `python -c 'from psabill.config.reference import "
        "render_reference; print(render_reference(2), end=\"\")'` between its markers")


def test_every_schema_key_appears_in_the_readme() -> None:
    text = README.read_text(encoding="utf-8")
    for key in settings.keys():
        assert f"| `{key.rpartition('.')[2]}` |" in text, key


def test_python_dash_m_and_the_cli_print_the_same_reference() -> None:
    by_module = subprocess.run([sys.executable, "-m", "psabill.config.reference"], capture_output=True, text=True,
                               check=True, timeout=60).stdout
    by_cli = CliRunner().invoke(cli, ["config", "reference"]).output
    assert by_module == by_cli == settings.render_reference()


def test_the_reference_lists_every_key_and_the_file_formats() -> None:
    text = settings.render_reference()
    for key in settings.keys():
        section, _, name = key.rpartition(".")
        assert f"## [{section}]" in text if section else "## Top level" in text
        assert f"| `{name}` |" in text
    # The heading was "Usage source formats"; it is "Usage sources" now that it covers kind = "lastpass" too.
    for heading in ("## Usage sources", "## Mapping file format", "customer,sku,seats,psa_company",
                    "customer,psa_company,agreement"):
        assert heading in text


def test_a_key_added_in_a_test_only_schema_appears_in_all_four(tmp_path: Path) -> None:
    """Issue 19: one declaration of a key makes it appear in the typed settings, `psabill config reference`,
    the reference table (docs/configuration.md) and the `config init` starter."""
    import collections
    import os

    import pytest

    from psabill.config import settings as loader
    from psabill.config.keys import STRING, Starter, key, section
    from psabill.config.schema import SCHEMA, AccountSettings
    from psabill.config.starter import starter_text
    from psabill.errors import ConfigError

    extra = key(STRING, "Accounts", type="string", meaning="Who the test-only report is addressed to.",
                example='"Accounts Payable"', starter=Starter('"Accounts Payable"'))
    declared = {**AccountSettings.KEYS, "addressee": extra}  # AccountSettings' keys, plus one
    TestAccount = section("account")(collections.namedtuple("TestAccount", list(declared),
                                                            defaults=list(declared.values())))
    schema = SCHEMA._replace(account=TestAccount)

    def config(text: str) -> Path:
        path = tmp_path / f"c{len(list(tmp_path.iterdir()))}.toml"
        path.write_text(text)
        os.chmod(path, 0o600)
        return path

    # (1) the typed settings: the default, and a value from a file (the copied keys still work)
    assert loader.load(config('[account]\nname = "One"\n'), schema=schema).account.addressee == "Accounts"
    loaded = loader.load(config('[account]\nname = "One"\naddressee = "Billing Desk"\n'), schema=schema)
    assert (loaded.account.name, loaded.account.addressee) == ("One", "Billing Desk")
    with pytest.raises(ConfigError, match=r"account.addressee = 7: expected a string"):
        loader.load(config("[account]\naddressee = 7\n"), schema=schema)  # checked by its declaration
    with pytest.raises(ConfigError, match=r"unknown key 'addressee' in \[account\]"):
        loader.load(config('[account]\naddressee = "Billing Desk"\n'))  # the real schema has no such key

    # (2) `psabill config reference`, and (3) the reference table in docs/configuration.md: both are render_reference's Markdown
    row = "| `addressee` | string | Accounts | Who the test-only report is addressed to. | `\"Accounts Payable\"` |"
    assert "account.addressee" in settings.keys(schema) and "account.addressee" not in settings.keys()
    assert row in settings.render_reference(schema=schema)
    assert row not in settings.render_reference()
    readme_table = settings.render_reference(2, schema=schema)
    account_table = readme_table[readme_table.index("### [account]"):]
    account_table = account_table[:account_table.index("\n\n", account_table.index("|---|"))]
    assert row in account_table.splitlines()

    # (4) the `config init` starter, which loads with that schema
    text = starter_text({"psa": "connectwise", "source": "csv"}, schema=schema)
    assert "# Who the test-only report is addressed to.\naddressee = \"Accounts Payable\"\n" in text
    assert "addressee" not in starter_text({"psa": "connectwise", "source": "csv"})
    started = config(text)
    assert loader.load(started, schema=schema, check_addresses=False).account.addressee == "Accounts Payable"
