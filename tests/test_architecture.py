"""The layout stays as the README draws it: no import cycle, one reader of the raw config."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

import psabill

SRC = Path(psabill.__file__).parent


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, modules: Set[str]) -> Set[str]:
    """Every psabill module ``path`` imports, at module level or inside a function."""
    found: Set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: List[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        found.update(name for name in names if name in modules)
    return found


def graph() -> Dict[str, Set[str]]:
    files = {module_name(p): p for p in SRC.rglob("*.py")}
    return {name: imports_of(path, set(files)) - {name} for name, path in files.items()}


def find_cycle(edges: Dict[str, Set[str]]) -> List[str]:
    state: Dict[str, int] = {}
    stack: List[str] = []

    def visit(node: str) -> List[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return []

    for start in sorted(edges):
        if start not in state:
            cycle = visit(start)
            if cycle:
                return cycle
    return []


def test_no_module_imports_another_that_imports_it_back() -> None:
    edges = graph()
    # A package's __init__ that only re-exports its own parts is not a cycle: importing
    # psabill.notify.facts runs psabill.notify first, which is the package, not a peer.
    for name in edges:
        edges[name] = {m for m in edges[name] if not name.startswith(m + ".")}
    assert find_cycle(edges) == []


def test_the_cycle_finder_does_find_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_command_modules_never_import_the_root_group_or_each_other() -> None:
    edges = graph()
    commands = {name for name in edges if name.startswith("psabill.cli.") and name != "psabill.cli.options"}
    for name in commands:
        assert edges[name] & (commands | {"psabill.cli"}) == set(), name


def test_only_settings_and_the_cli_read_the_raw_config_document() -> None:
    readers = []
    for path in SRC.rglob("*.py"):
        name = module_name(path)
        if name == "psabill.config.settings" or name.startswith("psabill.cli"):
            continue
        text = path.read_text(encoding="utf-8")
        if ".document" in text or "tomllib" in text or ".get(\"notify." in text or "cfg." in text:
            readers.append(name)
    assert readers == []


def test_every_module_says_its_job_in_an_opening_docstring() -> None:
    for path in SRC.rglob("*.py"):
        if path.name == "__main__.py":
            continue
        assert ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))), module_name(path)
