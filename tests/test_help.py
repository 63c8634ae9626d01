"""Help text is the documentation: every command has help with an example."""

from __future__ import annotations

from typing import Iterator, Tuple

import click
import pytest
from click.testing import CliRunner

from psabill.cli import cli


def walk(group: click.Group, prefix: Tuple[str, ...] = ()) -> Iterator[Tuple[str, ...]]:
    ctx = click.Context(group)
    for name in group.list_commands(ctx):  # the root group loads its commands lazily
        command = group.get_command(ctx, name)
        assert command is not None
        yield prefix + (name,)
        if isinstance(command, click.Group):
            yield from walk(command, prefix + (name,))


COMMANDS = sorted(walk(cli))


def test_the_expected_commands_exist() -> None:
    names = {" ".join(c) for c in COMMANDS}
    assert {"schedule set", "schedule show", "schedule next", "schedule enable", "schedule disable",
            "cron show", "cron install", "run", "status", "history", "history show"} <= names


@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(c) for c in COMMANDS])
def test_every_command_has_help_with_an_example(command: Tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, [*command, "--help"])
    assert result.exit_code == 0
    assert "Example" in result.output, f"psabill {' '.join(command)} --help has no example"


@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(c) for c in COMMANDS])
def test_every_command_is_in_the_readme(command: Tuple[str, ...]) -> None:
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert f"psabill {' '.join(command)}" in readme


def test_every_test_the_readme_fault_matrix_names_exists() -> None:
    import re
    from pathlib import Path

    root = Path(__file__).parents[1]
    matrix = (root / "docs" / "faults.md").read_text()  # the fault matrix moved out of the README
    named = re.findall(r"`(test_\w+\.py)((?:::\w+)*)`", matrix)
    assert len(named) >= 25
    for filename, path in named:
        source = (root / "tests" / filename).read_text()
        for part in path.strip(":").split("::") if path else []:
            kind = "class" if part[0].isupper() else "def"
            assert re.search(rf"^\s*{kind} {part}\b", source, re.M), f"{filename}{path} is not a test"
