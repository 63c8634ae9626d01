"""The README's config reference is generated from the one schema and cannot drift from it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from psabill.config import reference as settings  # the reference module documents the settings schema
from psabill.cli import cli

README = Path(__file__).parents[1] / "README.md"


def test_every_schema_key_has_a_docs_entry_and_every_entry_a_key() -> None:
    keys = settings.schema_keys()
    assert "notify.smtp.password_file" in keys and "products.*" in keys and "version" in keys
    assert sorted(set(keys) - set(settings.DOCS)) == [], "keys without a DOCS entry"
    assert sorted(set(settings.DOCS) - set(keys)) == [], "DOCS entries for keys the schema does not have"


def test_every_docs_entry_is_filled_in() -> None:
    for key, doc in settings.DOCS.items():
        assert doc.type and doc.default and doc.meaning and doc.example, key
        assert "\n" not in "".join(doc), key


def test_the_readme_reference_is_exactly_what_the_generator_writes() -> None:
    text = README.read_text(encoding="utf-8")
    start, end = "<!-- config-reference:start -->\n", "<!-- config-reference:end -->"
    embedded = text[text.index(start) + len(start):text.index(end)]
    assert embedded == settings.render_reference(2), (
        "the README's config reference is stale: paste `python -c 'from psabill.config.reference import "
        "render_reference; print(render_reference(2), end=\"\")'` between its markers")


def test_every_schema_key_appears_in_the_readme() -> None:
    text = README.read_text(encoding="utf-8")
    for key in settings.schema_keys():
        assert f"| `{key.rpartition('.')[2]}` |" in text, key


def test_python_dash_m_and_the_cli_print_the_same_reference() -> None:
    by_module = subprocess.run([sys.executable, "-m", "psabill.config.reference"], capture_output=True, text=True,
                               check=True, timeout=60).stdout
    by_cli = CliRunner().invoke(cli, ["config", "reference"]).output
    assert by_module == by_cli == settings.render_reference()


def test_the_reference_lists_every_key_and_the_file_formats() -> None:
    text = settings.render_reference()
    for key in settings.schema_keys():
        section, _, name = key.rpartition(".")
        assert f"## [{section}]" in text if section else "## Top level" in text
        assert f"| `{name}` |" in text
    for heading in ("## Usage source formats", "## Mapping file format", "customer,sku,seats,psa_company",
                    "customer,psa_company,agreement"):
        assert heading in text
