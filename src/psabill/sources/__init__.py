"""Usage-source kinds: a registry that names each reader and imports its module only when it is used.

``[source] kind`` picks one; each reader takes the typed ``[source]`` settings
and returns a :class:`~psabill.sources.rows.Usage`: the rows, a digest of the
bytes they came from, and whether the input looked cut. Adding a kind adds a
module and one line here. The registry imports nothing at module level, so the
config schema can ask it which kinds exist on the cheap cron path.
"""

import importlib
from typing import Any, Dict, Tuple

_KINDS: Dict[str, str] = {
    "lastpass": "psabill.sources.lastpass:read",
    "csv": "psabill.sources.files:read",
    "json": "psabill.sources.files:read",
    "command": "psabill.sources.command:read",
}


def kinds() -> Tuple[str, ...]:
    """The kinds ``[source] kind`` accepts."""
    return tuple(_KINDS)


def register(kind: str, target: str) -> None:
    """Make ``kind`` known; ``target`` is ``"package.module:function"``."""
    _KINDS[kind] = target


def reader(kind: str) -> Any:
    """The reader of ``kind``, its module imported now (KeyError for an unknown kind)."""
    module, _, name = _KINDS[kind].partition(":")
    return getattr(importlib.import_module(module), name)
