"""The facts a results email states, precomputed so the text and HTML parts agree.

Every name and message that came from outside (account, customer, SKU, PSA
messages) goes through the one text cleaner (:mod:`psabill.text.clean`)
before it reaches a template: secrets out, control and bidi characters shown
as escapes, names cut at :data:`~psabill.text.clean.NAME_LIMIT` characters
and messages at :data:`~psabill.text.clean.MESSAGE_LIMIT` (the attached CSV keeps
both whole). The HTML template then escapes markup.

What needs action comes first: held changes (with the rule that held each),
then what stopped the run, failures with their fix, unmapped customers, then
the changes. Counts are the items' own (:attr:`psabill.report.Run.counts`).
"""

from datetime import datetime, timezone, tzinfo
from typing import Any, Dict, List, Optional, Sequence

from psabill import outcomes
from psabill.clock import load_zone
from psabill.errors import UsageError
from psabill.report import Run
from psabill.text import clean
from psabill.site.paths import run_page_url
from psabill.text.files import human_duration

SUBJECT_MAX = 200  # long subjects get folded/truncated by clients anyway; keep it readable
LIST_LIMIT = 50  # rows per list in the email; every item is in the attached CSV
LATE_THRESHOLD = 60  # cron fires a few seconds after :00; only a real delay is worth a line
TRIGGER_WORDS = {"scheduled": "scheduled", "manual": "manual", "dry-run": "dry run", "approval": "approval"}


def header_text(value: str, limit: int = SUBJECT_MAX) -> str:
    """A rendered template output as a single header line (whitespace collapsed, controls escaped)."""
    return clean.message(value, limit=limit)


def _zone(name: str) -> tzinfo:
    try:
        return load_zone(name)
    except UsageError:
        return timezone.utc  # a bad zone in an old record must not stop the email


def local_time(value: Optional[datetime], zone: tzinfo) -> str:
    """``Tue 2026-03-10 09:00 EDT``."""
    if value is None:
        return ""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)  # the ledger stores UTC
    return value.astimezone(zone).strftime("%a %Y-%m-%d %H:%M %Z").strip()


def delta_text(delta: Any) -> str:
    if delta is None:
        return ""
    return f"+{delta}" if delta > 0 else str(delta)  # negative numbers carry their own sign


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def outcome_text(run: Run) -> str:
    """The result in words, what needs action first: "held for approval", "complete", "N companies not updated"..."""
    unmapped = len({item.customer for item in run.items if item.outcome == outcomes.UNMAPPED})
    if run.status == outcomes.HELD_RUN:
        held = run.count(outcomes.HELD)
        return f"held for approval ({_plural(held, 'change', 'changes')})" if held else "held for approval"
    if run.status == outcomes.SUCCESS:
        return f"{_plural(unmapped, 'customer', 'customers')} unmapped" if unmapped else "complete"
    if run.status == outcomes.UNMAPPED_RUN:
        return (f"not billed: {_plural(unmapped, 'customer', 'customers')} unmapped" if unmapped
                else "not billed: the source has no rows")
    if run.status == outcomes.PARTIAL:
        n = len({item.customer for item in run.items if item.outcome in (outcomes.FAILED, outcomes.UNKNOWN)})
        return f"{_plural(n, 'company', 'companies')} not updated" if n else "some companies not updated"
    if run.status in outcomes.BAD:
        return "failed"
    if run.status == outcomes.RUNNING:
        return "still running"
    return clean.message(run.status)


def counts_known(run: Run) -> bool:
    """False for a run that stopped before it looked at any item: its counts are unknown, not zeros."""
    return bool(run.items) or run.status not in outcomes.BAD


def summary_text(run: Run) -> str:
    """What the subject says after the state: ``41 changed, 2 failed, 1 unmapped``."""
    if not counts_known(run):
        return "nothing was written"  # it stopped before it looked at any item: no counts, never zeros
    counts = run.counts
    changed = counts.get(outcomes.UPDATED, 0) + counts.get(outcomes.PLANNED, 0)
    parts = [f"{changed} {'to change' if run.dry_run else 'changed'}"]
    for word in (outcomes.FAILED, outcomes.UNKNOWN, outcomes.UNMAPPED):
        if counts.get(word):
            parts.append(f"{counts[word]} {word}")
    return ", ".join(parts)


def subject_state(run: Run) -> str:
    """The subject's first words: the state that needs action, if any."""
    if run.status == outcomes.HELD_RUN:
        return "HELD for approval"
    if not counts_known(run):
        return "FAILED"
    if run.status in outcomes.BAD:
        return "FAILED"
    if run.status == outcomes.UNMAPPED_RUN:
        return "NOT BILLED"
    if run.status == outcomes.PARTIAL:
        return "partial"
    if run.count(outcomes.UNMAPPED):
        return "unmapped"  # a run that left customers out is not complete (outcome_text agrees)
    return "complete"


def details_text(run: Run, history_url: Optional[str], site_url: Optional[str]) -> str:
    """The run's page (``history_url`` wins; else the history site's page), or the command that shows it.

    ``{run_id}`` is substituted by plain replacement, never ``str.format``: a
    format string from the config could otherwise reach object attributes.
    """
    run_id = "" if run.id is None else str(run.id)
    if history_url and run_id:
        return clean.clean(history_url.replace("{run_id}", run_id))
    if site_url and run_id:
        return clean.clean(run_page_url(site_url, int(run_id)))
    if run_id:
        return f"psabill history show {run_id}"
    return "psabill history"


def csv_filename(run_id: Optional[int]) -> str:
    """``psabill-run-000042.csv``: the attachment that lists every item of the run."""
    return f"psabill-run-{run_id:06d}.csv" if run_id is not None else "psabill-run-unsaved.csv"


def _listed(rows: List[Dict[str, str]]) -> Dict[str, Any]:
    return {"rows": rows[:LIST_LIMIT], "total": len(rows), "more": max(0, len(rows) - LIST_LIMIT)}


def context(run: Run, history_url: Optional[str] = None, site_url: Optional[str] = None,
            next_attempt: Optional[datetime] = None) -> Dict[str, Any]:
    """Everything the templates show, precomputed so text and HTML state the same facts.

    Lists are capped at :data:`LIST_LIMIT` rows (``more`` says how many are left
    out): the attached CSV carries every item, so a run of thousands stays small.
    ``next_attempt`` is the firing that retries this occurrence, when it is retried.
    """
    zone = _zone(run.zone or "UTC")
    items = run.sorted_items()
    held = [{"customer": clean.name(i.customer), "sku": clean.name(i.sku), "old": _q(i.old), "new": _q(i.new),
             "rule": clean.clean(i.rule), "message": clean.brief(i.message), "hint": clean.brief(i.hint)}
            for i in items if i.outcome == outcomes.HELD]
    changes = [{"customer": clean.name(i.customer), "sku": clean.name(i.sku), "old": _q(i.old), "new": _q(i.new),
                "delta": delta_text(i.delta)}
               for i in items if i.outcome in (outcomes.UPDATED, outcomes.PLANNED)]
    failures = [{"customer": clean.name(i.customer), "sku": clean.name(i.sku),
                 "message": clean.brief(i.message) or "no reason was recorded", "hint": clean.brief(i.hint)}
                for i in items if i.outcome in (outcomes.FAILED, outcomes.UNKNOWN)]
    unmapped: List[Dict[str, str]] = []
    by_name: Dict[str, Dict[str, str]] = {}
    for i in items:
        if i.outcome != outcomes.UNMAPPED:
            continue
        shown = clean.name(i.customer)
        entry = by_name.get(shown)
        if entry is None:
            entry = by_name[shown] = {"customer": shown, "skus": clean.name(i.sku), "message": clean.brief(i.message)}
            unmapped.append(entry)
        else:
            entry["skus"] += ", " + clean.name(i.sku)
    late = ""
    if run.late_seconds is not None and run.late_seconds >= LATE_THRESHOLD:
        late = f"started {human_duration(run.late_seconds, spaced=True)} late"
        if run.occurrence is not None:
            late += f" (it was due {local_time(run.occurrence, zone)})"
    stopped = run.status in outcomes.BAD
    counts = run.counts
    shown_counts = [(word, counts[word]) for word in outcomes.ITEM_ORDER if counts.get(word)]
    return {
        "account": clean.name(run.account_name),  # may be empty: the templates then leave it out
        "zone": clean.clean(run.zone or "UTC"),
        "outcome": outcome_text(run),
        "state": subject_state(run),
        "summary": summary_text(run),
        "status": clean.clean(run.status),
        "ok": run.status == outcomes.SUCCESS and not counts.get(outcomes.UNMAPPED),
        # A run that stopped says what to do about it first; run.message is the reason.
        "action": (clean.brief(run.message) or "the run stopped without a recorded reason") if stopped else "",
        "counts_known": counts_known(run),
        "counts": shown_counts,
        "trigger": TRIGGER_WORDS.get(run.trigger, clean.clean(run.trigger)),
        "scheduled": run.trigger == "scheduled",
        "dry_run": run.dry_run,
        "attempt": run.attempt,
        "run_id": run.id,
        "psa": clean.clean(run.psa or ""),
        "started": local_time(run.started_at, zone),
        "date": run.started_at.astimezone(zone).strftime("%Y-%m-%d"),
        "finished": local_time(run.finished_at, zone),
        "late": late,
        "message": clean.brief(run.message),
        "schedule": clean.message(run.schedule_text),
        "next_run": local_time(run.next_run, zone),
        "next_attempt": local_time(next_attempt, zone),
        "held": _listed(held),
        "changes": _listed(changes),
        "failures": _listed(failures),
        "unmapped": _listed(unmapped),
        "attachment": csv_filename(run.id) if run.items else "",
        "details": details_text(run, history_url, site_url),
        "details_is_url": bool((history_url or site_url) and run.id is not None),
        "widths": _widths(changes[:LIST_LIMIT]),
        "run": run,  # for custom templates that want more than the precomputed facts
    }


def _q(value: Any) -> str:
    return "" if value is None else str(value)


def _widths(changes: Sequence[Dict[str, str]]) -> Dict[str, int]:
    """Column widths for the plain-text change table."""
    return {
        "customer": max([len("Customer")] + [len(c["customer"]) for c in changes]),
        "sku": max([len("SKU")] + [len(c["sku"]) for c in changes]),
        "old": max([len("Old")] + [len(c["old"]) for c in changes]),
        "new": max([len("New")] + [len(c["new"]) for c in changes]),
        "delta": max([len("Change")] + [len(c["delta"]) for c in changes]),
    }
