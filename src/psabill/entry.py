"""The ``psabill`` console script: a Click-free fast path for cron's not-due firings.

Cron starts ``psabill --config C --state-dir S run --scheduled`` every time its
expression matches, and nearly every time nothing is due. That exact command
line (or plain ``run --scheduled``) is answered here with the settings, the
pure schedule core and one read-only ledger query: nothing due means exit 0,
silently, before Click or any command module is imported. Within catch-up of
the latest occurrence a second read-only query asks whether its report was
never confirmed delivered (a run killed mid-delivery, or a failed email): then
the full CLI re-sends it. Anything else, a due occurrence or any problem at
all, goes to the full CLI, which decides again and reports properly.
"""

from __future__ import annotations

import sys
from typing import List, Optional

from psabill.config.paths import Paths


def cron_paths(argv: List[str]) -> Optional[Paths]:
    """The paths of a ``run --scheduled`` command line in the shape cron runs, else None."""
    options = {}
    rest = list(argv)
    while rest[:1] in (["--config"], ["--state-dir"]) and len(rest) >= 2 and rest[0] not in options:
        options[rest[0]] = rest[1]
        rest = rest[2:]
    if rest != ["run", "--scheduled"] or any(not value or value.startswith("-") for value in options.values()):
        return None
    return Paths.resolve(options.get("--config"), options.get("--state-dir"))


def nothing_due(paths: Paths) -> bool:
    """True only when the config loads, the ledger says no occurrence is due, and no report of an
    occurrence within catch-up waits to be re-sent (one left pending by a killed run, or failed)."""
    try:
        # the fast path's whole import set: a not-due firing loads nothing else (tests/test_imports.py)
        from psabill import clock
        from psabill.config.settings import load
        from psabill.ledger.history import open_store
        from psabill.run.guard import due_occurrence, undelivered_within_catch_up

        settings = load(paths.config, check_addresses=False, must_exist=True)
        ledger = open_store(paths, settings.state_url, settings.account_id).ledger  # the one the guard asks
        now = clock.now()
        with ledger.one_look():
            if due_occurrence(settings, now, ledger.occurrence_done_readonly) is not None:
                return False
            return not undelivered_within_catch_up(settings, now, ledger)
    except Exception:  # any doubt: the CLI decides again and reports it as one line
        return False


def main() -> None:
    """Answer a not-due cron firing here; hand everything else to the CLI."""
    paths = cron_paths(sys.argv[1:])
    if paths is not None and nothing_due(paths):
        sys.exit(0)
    from psabill.cli import main as cli_main  # Click and the commands: only when a command runs

    cli_main()
