"""How the CLI shows results: a run as text, JSON, colour for states, progress on a terminal.

Every name and message passes through the one text cleaner
(:mod:`psabill.text.clean`); JSON through :func:`psabill.text.clean.json_text`.
"""

import sys
import time
from typing import Any, Optional

import click

from psabill import outcomes
from psabill.cli.options import echo
from psabill.report import Run
from psabill.text import clean

GREEN = ("ok", "in sync", "success", "complete")
RED = ("OUT OF SYNC", "failed", "aborted", "NOT delivered", "held", "unmapped")
YELLOW = ("partial", "interrupted", "retrying", "planned")


def paint(text: str, colour: bool) -> str:
    """``text`` in green, yellow or red when ``colour`` and it names a good, so-so or bad state."""
    if not colour:
        return text
    for word in RED:
        if text.startswith(word):
            return click.style(text, fg="red", bold=True if word in ("OUT OF SYNC", "held") else None)
    for word in YELLOW:
        if text.startswith(word):
            return click.style(text, fg="yellow")
    for word in GREEN:
        if text.startswith(word):
            return click.style(text, fg="green")
    return text


def emit_json(data: Any) -> None:
    """Print ``data`` as JSON (controls and bidi characters escaped, secrets out)."""
    click.echo(clean.json_text(data))


def change(old: Any, new: Any) -> str:
    """``3 -> 5``; a side that is unknown is shown as ``n/a`` (never ``None``)."""
    return f"{'n/a' if old is None else old} -> {'n/a' if new is None else new}"


def run_text(run: Run, *, limit: Optional[int] = None) -> None:
    """A run's outcome and what needs action, then its changes, as text (held first)."""
    verb = "Dry run" if run.dry_run else "Run"
    echo(f"{verb} {run.id}: {run.status}" + (f" ({clean.message(run.message)})" if run.message else ""))
    counts = run.counts
    shown = ", ".join(f"{('would update' if run.dry_run and word == outcomes.PLANNED else word)} {counts[word]}"
                      for word in outcomes.ITEM_ORDER if counts.get(word))
    echo(f"  {shown or 'no items'}; {run.api_requests} API requests")
    order = {word: i for i, word in enumerate(outcomes.ITEM_ORDER)}
    listed = [i for i in sorted(run.items, key=lambda i: (order.get(i.outcome, 99), i.customer.casefold(), i.sku))
              if i.outcome != outcomes.UNCHANGED]
    for item in listed[:limit] if limit else listed:
        who = f"{clean.name(item.customer)} / {clean.name(item.sku)}"
        if item.outcome == outcomes.PLANNED:
            echo(f"  would update {who}: {change(item.old, item.new)}")
        elif item.outcome == outcomes.UPDATED:
            echo(f"  {who}: {change(item.old, item.new)}" + (f" ({clean.message(item.message)})" if item.message else ""))
        else:
            hint = f" Fix: {clean.message(item.hint)}" if item.hint else ""
            rule = f" [{item.rule}]" if item.rule else ""
            echo(f"  {item.outcome.upper()}{rule} {who}: {change(item.old, item.new)}: "
                 f"{clean.message(item.message)}.{hint}")
    if limit and len(listed) > limit:
        echo(f"  ... and {len(listed) - limit} more (psabill history show {run.id} lists every item)")
    if run.dry_run:
        echo("Nothing was written to the PSA (dry run).")
    if run.id is not None:
        echo(f"Details: psabill history show {run.id}")


class ProgressBar:
    """Each phase of a long manual run on a terminal: reading the source, reading the PSA, writing."""

    def __init__(self) -> None:
        self.phase = ""
        self.started = time.monotonic()
        self.phase_started = self.started

    def __call__(self, phase: str, done: int, total: int, requests: int) -> None:
        now = time.monotonic()
        if phase != self.phase:
            if self.phase:
                sys.stderr.write("\n")
            self.phase, self.phase_started = phase, now
        elapsed = max(now - self.phase_started, 1e-3)
        rate = requests / max(now - self.started, 1e-3)
        if total and done:
            eta = elapsed / done * (total - done)
            line = f"{phase}: {done}/{total} ({requests} API requests, {rate:.0f}/s, about {eta:.0f}s left)"
        elif total:
            line = f"{phase}: {total} rows ({requests} API requests, {rate:.0f}/s)"
        else:
            line = f"{phase}... ({requests} API requests)"
        sys.stderr.write("\r" + line[:150].ljust(80))
        sys.stderr.flush()

    def close(self) -> None:
        if self.phase:
            sys.stderr.write("\n")
            sys.stderr.flush()
