"""The table of per-item failures (docs/psa.md) matches the messages the code really produces.

Each family in the first column of "## Per-item failures" must be found in the
string literals of the refresh engine and the PSA clients: ``<...>`` stands
for any text (an f-string field or a value), and ``: `` may join a prefix to a
reason built elsewhere (``not written: `` + the Autotask allowance message).
And every message the engine fails an item with must be in the table.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import List

import psabill

SRC = Path(psabill.__file__).parent
ROOT = Path(__file__).parents[1]  # the checkout: the package may be installed elsewhere (CI)
CODE = [SRC / "run" / "engine.py", SRC / "psa" / "connectwise.py", SRC / "psa" / "autotask.py",
        SRC / "psa" / "base.py", SRC / "net" / "http.py"]
FIELD = "\x00"  # an f-string field in a code template


def _template(node: ast.AST) -> str:
    """A string literal (implicit concatenation joined by the parser), fields as FIELD."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    assert isinstance(node, ast.JoinedStr)
    return "".join(v.value if isinstance(v, ast.Constant) else FIELD for v in node.values)  # type: ignore[misc]


def _literals(path: Path) -> List[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    inner = {id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for v in n.values}
    return [_template(n) for n in ast.walk(tree) if id(n) not in inner and (
        isinstance(n, ast.JoinedStr) or (isinstance(n, ast.Constant) and isinstance(n.value, str)))]


def _families() -> List[str]:
    text = (ROOT / "docs" / "psa.md").read_text(encoding="utf-8")
    section = text.split("## Per-item failures", 1)[1].split("\n#", 1)[0]
    return [m.group(1) for m in re.finditer(r"^\| `([^`]+)`", section, re.MULTILINE)]


def _pattern(part: str) -> "re.Pattern[str]":
    pieces = [re.escape(piece) for piece in re.split(r"<[^>]+>", part)]
    return re.compile(".*?".join(pieces), re.DOTALL)


def _found(family: str, literals: List[str]) -> bool:
    def one(part: str) -> bool:
        longest = max(re.split(r"<[^>]+>", part), key=len)
        return any(_pattern(part).search(lit) for lit in literals if longest in lit)  # cheap filter first

    return all(one(part) for part in family.split(": "))


def _covers(message: str, family: str) -> bool:
    """The code template ``message`` (fields match anything) reads as ``family``."""
    return bool(re.search(".*?".join(re.escape(piece) for piece in message.split(FIELD)), family, re.DOTALL))


def test_the_table_names_every_family_the_brief_promises() -> None:
    families = _families()
    assert len(families) >= 15
    for wanted in ("no <PSA> company has identifier or name", "has no active", "is not on", "hold product",
                   "not written: Autotask's hourly allowance for this run", "is posted;",
                   "changed in <PSA> since the plan", "another writer changed it during this run", "service bundle",
                   "Autotask services are named"):
        assert any(wanted in family for family in families), wanted


def test_every_family_in_the_readme_table_appears_in_the_code() -> None:
    literals = [lit for path in CODE for lit in _literals(path)]
    missing = [family for family in _families() if not _found(family, literals)]
    assert missing == []


def test_a_family_the_code_never_says_is_caught() -> None:
    literals = [lit for path in CODE for lit in _literals(path)]
    assert not _found("no <PSA> company has the name or number <customer>", literals)
    assert not _found("not written: daily API allowance exhausted", literals)


def test_every_message_the_engine_fails_an_item_with_is_in_the_table() -> None:
    tree = ast.parse((SRC / "run" / "engine.py").read_text(encoding="utf-8"))
    messages = [_template(call.args[0]) for call in ast.walk(tree)
                if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "fail"
                and call.args and isinstance(call.args[0], (ast.Constant, ast.JoinedStr))]
    assert len(messages) >= 12
    families = _families()
    # "SKU <sku>: <problem>" wraps the Autotask service-name problems, which have rows of their own.
    unlisted = [m for m in messages if len(re.sub(rf"[{FIELD}\W]|SKU", "", m)) > 0
                and not any(_found(family, [m]) or _covers(m, family) for family in families)]
    assert unlisted == []
