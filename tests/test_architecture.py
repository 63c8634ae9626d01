"""The layering holds (issue 19): no cycle, nothing imports upward, no private names across packages,
registries for PSAs and sources, exit codes in one table, Click only in the CLI.

Layers, lowest first (a module may import its own layer and the ones below):

1. ``core``: the pure rules and plain data: errors, outcomes, the clock, the run
   model, the text cleaner, the file helpers, the schedule rules and cron plan,
   the two kind registries, the net errors.
2. ``config``: the schema, the typed settings, secrets, paths, readiness.
3. ``edges``: each one place that touches the world: the crontab, the ledger,
   HTTP, the sources, the PSAs, the email, the site, the sandboxes.
4. ``run``: the guard, the plan, the safety net, the engine; status.
5. ``cli``: Click, and the entry point.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest

import psabill

SRC = Path(psabill.__file__).parent
ROOT = Path(__file__).resolve().parents[1]  # the checkout: docs are not installed with the package

LAYERS: List[Tuple[str, Tuple[str, ...]]] = [
    ("core", ("psabill", "psabill.errors", "psabill.outcomes", "psabill.clock", "psabill.report", "psabill.text",
              "psabill.text.redact", "psabill.text.clean", "psabill.text.files", "psabill.text.times",
              "psabill.text.log", "psabill.schedule", "psabill.schedule.rules", "psabill.schedule.cronplan",
              "psabill.psa", "psabill.sources", "psabill.net", "psabill.net.errors")),
    ("config", ("psabill.config",)),
    ("edges", ("psabill.schedule.crontab", "psabill.schedule.save", "psabill.schedule.export", "psabill.ledger",
               "psabill.net.http", "psabill.sources.", "psabill.psa.", "psabill.notify", "psabill.site",
               "psabill.sandbox")),
    ("run", ("psabill.run", "psabill.status")),
    ("cli", ("psabill.cli", "psabill.entry", "psabill.__main__")),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> int:
    """The layer of ``module``: the most specific prefix in LAYERS names it."""
    best, best_len = -1, -1
    for index, (_name, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            exact = module == prefix
            under = prefix.endswith(".") and module.startswith(prefix)
            package = not prefix.endswith(".") and module.startswith(prefix + ".")
            if (exact or under or package) and len(prefix) + (1 if exact else 0) > best_len:
                best, best_len = index, len(prefix) + (1 if exact else 0)
    return best


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


def test_every_module_has_a_layer() -> None:
    assert [name for name in graph() if layer_of(name) < 0] == []


def test_no_module_imports_another_that_imports_it_back() -> None:
    edges = graph()
    # A package's __init__ that only re-exports its own parts is not a cycle: importing
    # psabill.notify.facts runs psabill.notify first, which is the package, not a peer.
    for name in edges:
        edges[name] = {m for m in edges[name] if not name.startswith(m + ".")}
    assert find_cycle(edges) == []


def test_the_cycle_finder_does_find_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_nothing_imports_upward() -> None:
    upward = [f"{name} ({LAYERS[layer_of(name)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
              for name, targets in graph().items() for target in sorted(targets)
              if layer_of(target) > layer_of(name) and not name.startswith(target + ".")]
    assert upward == []


def test_the_layer_check_does_catch_an_upward_import() -> None:
    assert layer_of("psabill.config.settings") < layer_of("psabill.run.guard")
    assert layer_of("psabill.psa") < layer_of("psabill.psa.autotask")  # the registry sits below its clients


def test_no_module_imports_another_packages_private_names() -> None:
    found = []
    for path in SRC.rglob("*.py"):
        here = module_name(path)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("psabill")):
                continue
            package = node.module.rsplit(".", 1)[0] if node.module.count(".") > 1 else node.module
            for alias in node.names:
                private = alias.name.startswith("_") or any(p.startswith("_") for p in node.module.split("."))
                if private and not here.startswith(package):
                    found.append(f"{here}: from {node.module} import {alias.name}")
    assert found == []


def test_only_the_cli_imports_click() -> None:
    users = [module_name(p) for p in SRC.rglob("*.py")
             if any(isinstance(n, (ast.Import, ast.ImportFrom)) and
                    (getattr(n, "module", None) == "click" or any(a.name == "click" for a in n.names))
                    for n in ast.walk(ast.parse(p.read_text(encoding="utf-8"))))]
    assert sorted(u for u in users if not u.startswith("psabill.cli")) == []


def test_the_registries_import_nothing_of_psabill_and_name_every_kind() -> None:
    from psabill import psa, sources
    from psabill.psa.base import PsaClient

    for registry in ("psa/__init__.py", "sources/__init__.py"):
        tree = ast.parse((SRC / registry).read_text(encoding="utf-8"))
        assert [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))
                and "psabill" in (getattr(n, "module", "") or "")] == [], registry
    assert {"connectwise", "autotask"} <= set(psa.kinds())
    for kind in psa.kinds():
        assert issubclass(psa.client_class(kind), PsaClient), kind
    assert set(sources.kinds()) >= {"lastpass", "csv", "json", "command"}
    for kind in sources.kinds():
        assert callable(sources.reader(kind)), kind


def test_the_psa_interface_is_three_reads_and_one_write_with_no_capability_flags() -> None:
    from psabill.psa.base import PsaClient

    abstract = sorted(PsaClient.__abstractmethods__)
    assert abstract == ["agreements", "check", "companies", "lines", "request_count", "write"]
    for kind in ("connectwise", "autotask"):
        from psabill import psa

        cls = psa.client_class(kind)
        text = Path(__import__(cls.__module__, fromlist=["x"]).__file__).read_text(encoding="utf-8")
        assert "NotImplementedError" not in text, kind
    engine = (SRC / "run" / "engine.py").read_text(encoding="utf-8") + (SRC / "run" / "perform.py").read_text(
        encoding="utf-8")
    for word in ("autotask", "connectwise", "bulk_writes", "budgeted", "bulk_lines"):
        assert word not in engine.lower(), word  # no per-PSA branch in the run


def test_the_test_only_third_psa_touches_no_file_under_src() -> None:
    for path in SRC.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "absolute_psa" not in text and "AbsoluteClient" not in text, module_name(path)
    contract = (Path(__file__).parent / "test_psa_contract.py").read_text(encoding="utf-8")
    assert '"absolute"' in contract  # the contract suite runs against it too (tests/support/absolute_psa.py)


def test_exit_codes_live_in_one_table() -> None:
    from psabill.errors import ExitCode

    assert {c.value for c in ExitCode} >= {0, 1, 2, 3, 4, 5, 6, 7, 8, 70, 130, 143}
    literal_exits = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "exit" and node.args
                    and isinstance(node.args[0], ast.Constant) and node.args[0].value not in (0, None)):
                literal_exits.append(module_name(path))
    assert literal_exits == []


def test_only_settings_and_edit_read_the_raw_config_document() -> None:
    readers = []
    for path in SRC.rglob("*.py"):
        name = module_name(path)
        if name in ("psabill.config.settings", "psabill.config.edit", "psabill.config.starter") \
                or name.startswith("psabill.cli") or name == "psabill.schedule.save":
            continue
        text = path.read_text(encoding="utf-8")
        if ".document" in text or "tomllib" in text:
            readers.append(name)
    assert readers == []


def test_the_package_root_holds_only_the_entry_point_errors_outcomes_clock_report_and_status() -> None:
    root = sorted(p.stem for p in SRC.glob("*.py"))
    assert root == ["__init__", "__main__", "clock", "entry", "errors", "outcomes", "report", "status"]


def test_every_module_says_its_job_in_an_opening_docstring() -> None:
    for path in SRC.rglob("*.py"):
        if path.name == "__main__.py":
            continue
        assert ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))), module_name(path)


@pytest.mark.parametrize("path", sorted(p for p in SRC.rglob("*.py")), ids=lambda p: module_name(p))
def test_an_import_inside_a_function_says_why(path: Path) -> None:
    """Imports inside functions only where they keep the cron path (or another command) cheap, each with a
    reason: a comment on the import's line or the line above it."""
    lines = path.read_text(encoding="utf-8").splitlines()
    tree = ast.parse("\n".join(lines))
    unexplained = []
    for func in ast.walk(tree):
        if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(func):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                here, above = lines[node.lineno - 1], lines[node.lineno - 2] if node.lineno > 1 else ""
                block_comment = _import_block_comment(lines, node.lineno)
                if "#" not in here and not above.strip().startswith("#") and not block_comment:
                    unexplained.append(f"line {node.lineno}: {here.strip()}")
    assert unexplained == []


def _import_block_comment(lines: List[str], lineno: int) -> bool:
    """A comment on any import of the same consecutive block of imports explains the block."""
    start = lineno - 1
    while start > 0 and lines[start - 1].strip().startswith(("import ", "from ")):
        start -= 1
    end = lineno - 1
    while end + 1 < len(lines) and lines[end + 1].strip().startswith(("import ", "from ")):
        end += 1
    block = lines[start:end + 1]
    return any("#" in line for line in block) or (start > 0 and lines[start - 1].strip().startswith("#"))


def test_docs_architecture_lists_every_module_with_its_docstrings_summary() -> None:
    """The README links docs/architecture.md for the module tree: it must name every module, with the
    summary line of its docstring (regenerate it when a module is added or its job changes)."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    listed = dict(re.findall(r"^\| `([\w/]+\.py)` \| (.*) \|$", text, re.MULTILINE))
    modules = {str(p.relative_to(SRC)) for p in SRC.rglob("*.py")}
    assert set(listed) == modules
    for rel in modules - {"__main__.py"}:
        summary = " ".join(ast.get_docstring(ast.parse((SRC / rel).read_text(encoding="utf-8"))).split("\n\n")[0].split())
        assert listed[rel].split(" ")[:3] == re.sub(r":\w+:`~?([^`]+)`", r"`\1`", summary).replace("``", "`") \
            .split(" ")[:3], rel


def test_every_relative_link_in_the_readme_and_docs_resolves() -> None:
    root = ROOT
    pages = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(root)} -> {target}")
    assert broken == []
    linked = set(re.findall(r"\]\(docs/([\w-]+\.md)", (root / "README.md").read_text(encoding="utf-8")))
    assert {p.name for p in (root / "docs").glob("*.md")} <= linked, "a docs page the README does not link"


def _tests_defined() -> Set[str]:
    """Every ``file.py::test`` and ``file.py::Class::test`` the tests define."""
    found: Set[str] = set()
    for path in (ROOT / "tests").glob("test_*.py"):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test"):
                found.add(f"{path.name}::{node.name}")
            elif isinstance(node, ast.ClassDef):
                found.add(f"{path.name}::{node.name}")
                found.update(f"{path.name}::{node.name}::{item.name}" for item in node.body
                             if isinstance(item, ast.FunctionDef) and item.name.startswith("test"))
    return found


def test_every_test_the_readme_and_docs_name_as_proof_exists() -> None:
    """The guarantee tables ("proved by") name tests: a renamed or deleted test must not leave a claim behind."""
    defined = _tests_defined()
    named = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        named += [(page.name, ref) for ref in
                  re.findall(r"`(?:tests/)?(test_\w+\.py::[\w:]+)(?:\[[^\]`]*\])?`", page.read_text(encoding="utf-8"))]
    assert len(named) > 20  # the tables are there, and this reads them
    assert [(page, ref) for page, ref in named if ref not in defined] == []
