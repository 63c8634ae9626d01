"""PSA kinds: a registry that names each client class and imports its module only when it is used.

Adding a PSA adds a module with a :class:`~psabill.psa.base.PsaClient` and one
line here (or a :func:`register` call, as the tests' third PSA does); nothing
else changes. The registry imports nothing at module level, so the config
schema can ask it which kinds exist on the cheap cron path.
"""

import importlib
from typing import Any, Dict, Tuple

_KINDS: Dict[str, str] = {
    "connectwise": "psabill.psa.connectwise:ConnectWiseClient",
    "autotask": "psabill.psa.autotask:AutotaskClient",
}


def kinds() -> Tuple[str, ...]:
    """The PSA kinds ``[psa] kind`` accepts, in the order they were registered."""
    return tuple(_KINDS)


def register(kind: str, target: str) -> None:
    """Make ``kind`` known; ``target`` is ``"package.module:ClientClass"``."""
    _KINDS[kind] = target


def client_class(kind: str) -> Any:
    """The client class of ``kind``, its module imported now (KeyError for an unknown kind)."""
    module, _, name = _KINDS[kind].partition(":")
    return getattr(importlib.import_module(module), name)
