"""The facts a results email states, precomputed so the text and HTML parts agree.

Every name that came from outside (account, customer, SKU, PSA messages) is
made single-line before it reaches any template: a CR, LF, tab or other
control character is shown as a visible escape (``\\n``), so a customer name
can neither forge a line in the text body nor a header.
"""

from __future__ import annotations

from datetime import datetime, timezone, tzinfo
from typing import Any, Dict, List, Optional, Sequence

from psabill.text.files import human_duration
from psabill.report import RunReport
from psabill.outcomes import (
    ABORTED,
    FAILED,
    FAILED_RUN,
    INTERRUPTED,
    PARTIAL,
    PLANNED,
    RUNNING,
    SUCCESS,
    UNMAPPED,
    UPDATED,
)


SUBJECT_MAX = 200  # long subjects get folded/truncated by clients anyway; keep it readable
LIST_LIMIT = 50  # rows per list in the email; every item is in the attached CSV
LATE_THRESHOLD = 60  # cron fires a few seconds after :00; only a real delay is worth a line


def inline(value: Any) -> str:
    """One visible line: control characters become escapes, nothing is dropped.

    Dropping a newline would silently merge two words; escaping keeps the name
    recognisable *and* inert. Registered secrets are scrubbed first.
    """
    from psabill.text import redact

    text = redact.scrub("" if value is None else str(value))
    out = []
    for ch in text:
        code = ord(ch)
        if ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif code < 0x20 or 0x7F <= code < 0xA0 or ch in "\u2028\u2029":
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


def header_text(value: str, limit: int = SUBJECT_MAX) -> str:
    """A rendered template output as a single header line (whitespace collapsed)."""
    text = " ".join(inline(part) for part in value.split())
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "\u2026"
    return text


# -- the facts the templates show ---------------------------------------------------


def _zone(name: str) -> tzinfo:
    from psabill.clock import load_zone
    from psabill.errors import UsageError

    try:
        return load_zone(name)
    except UsageError:
        return timezone.utc  # a bad zone in an old report must not stop the email


def local_time(value: Optional[datetime], zone: tzinfo) -> str:
    """``Tue 2026-03-10 09:00 EDT`` (the zone name itself is shown once, elsewhere)."""
    if value is None:
        return ""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)  # the history stores UTC
    return value.astimezone(zone).strftime("%a %Y-%m-%d %H:%M %Z").strip()


def delta_text(delta: Optional[int]) -> str:
    if delta is None:
        return ""
    return f"+{delta}" if delta > 0 else str(delta)  # negative numbers carry their own sign


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def outcome_text(report: RunReport) -> str:
    """The result in words: "complete", "N companies not updated", "N customers unmapped" or "failed".

    A run that left a customer unmapped is not "complete": that customer was not billed.
    """
    unmapped = len({item.customer for item in report.items if item.outcome == UNMAPPED})
    if report.status == SUCCESS:
        if unmapped:
            return f"{_plural(unmapped, 'customer', 'customers')} unmapped"
        return "complete"
    if report.status == PARTIAL:
        n = len({item.customer for item in report.items if item.outcome == FAILED})
        if n == 0:
            return "some companies not updated"
        return f"{_plural(n, 'company', 'companies')} not updated"
    if report.status in (FAILED_RUN, ABORTED, INTERRUPTED):
        return "failed"
    if report.status == RUNNING:
        return "still running"
    return inline(report.status)


def counts_known(report: RunReport) -> bool:
    """False for a run that stopped before it looked at any item: its counts are unknown, not zeros."""
    return bool(report.items) or report.status not in (FAILED_RUN, ABORTED, INTERRUPTED)


def summary_text(report: RunReport) -> str:
    """What the subject says: ``41 changed, 2 failed, 1 unmapped``, ``complete, 3 changed`` or ``failed``."""
    if not counts_known(report):
        return "failed"
    counts = report.counts
    changed = f"{counts['updated']} {'to change' if report.trigger == 'dry-run' else 'changed'}"
    parts = [changed]
    if counts["failed"]:
        parts.append(f"{counts['failed']} failed")
    if counts["unmapped"]:
        parts.append(f"{counts['unmapped']} unmapped")
    if report.status == SUCCESS and not counts["unmapped"]:
        return "complete, " + changed
    if report.status in (FAILED_RUN, ABORTED, INTERRUPTED):
        return "failed, " + ", ".join(parts)
    return ", ".join(parts)


TRIGGER_WORDS = {"scheduled": "scheduled", "manual": "manual", "dry-run": "dry run"}


def details_text(report: RunReport, history_url: Optional[str]) -> str:
    """The history URL for this run, or the command that shows it.

    ``{run_id}`` is substituted by plain replacement, never ``str.format``:
    a format string from the config could otherwise reach object attributes.
    """
    run_id = "" if report.run_id is None else str(report.run_id)
    if history_url and run_id:
        return inline(history_url.replace("{run_id}", run_id))
    if run_id:
        return f"psabill history show {run_id}"
    return "psabill history"


def csv_filename(run_id: Optional[int]) -> str:
    """``psabill-run-000042.csv``: the attachment that lists every item of the run."""
    return f"psabill-run-{run_id:06d}.csv" if run_id is not None else "psabill-run-unsaved.csv"


def context(report: RunReport, history_url: Optional[str] = None) -> Dict[str, Any]:
    """Everything the templates show, precomputed so text and HTML state the same facts.

    Lists are capped at :data:`LIST_LIMIT` rows (``*_more`` says how many are left
    out): the attached CSV carries every item, so a run of thousands stays small.
    """
    zone = _zone(report.account_zone or "UTC")
    counts = report.counts
    all_changes = [
        {
            "customer": inline(i.customer),
            "sku": inline(i.sku),
            "old": "" if i.old is None else str(i.old),
            "new": "" if i.new is None else str(i.new),
            "delta": delta_text(i.delta),
        }
        for i in report.items
        if i.outcome in (UPDATED, PLANNED)
    ]
    all_failures = [
        {
            "customer": inline(i.customer),
            "sku": inline(i.sku),
            "message": inline(i.message) or "no reason was recorded",
            "hint": inline(i.hint),
        }
        for i in report.items
        if i.outcome == FAILED
    ]
    all_unmapped: List[Dict[str, str]] = []
    by_name: Dict[str, Dict[str, str]] = {}
    for i in report.items:
        if i.outcome != UNMAPPED:
            continue
        name = inline(i.customer)
        entry = by_name.get(name)
        if entry is None:
            entry = {"customer": name, "skus": inline(i.sku), "message": inline(i.message)}
            by_name[name] = entry
            all_unmapped.append(entry)
        elif i.sku:
            entry["skus"] += ", " + inline(i.sku)
    changes = all_changes[:LIST_LIMIT]
    failures = all_failures[:LIST_LIMIT]
    unmapped = all_unmapped[:LIST_LIMIT]
    late = ""
    if report.late_seconds is not None and report.late_seconds >= LATE_THRESHOLD:
        late = f"started {human_duration(report.late_seconds, spaced=True)} late"
        if report.occurrence is not None:
            late += f" (it was due {local_time(report.occurrence, zone)})"
    history_is_url = bool(history_url and report.run_id is not None)
    stopped = report.status in (FAILED_RUN, ABORTED, INTERRUPTED)
    return {
        "account": inline(report.account_name),  # may be empty: the templates then leave it out
        "zone": inline(report.account_zone or "UTC"),
        "outcome": outcome_text(report),
        "summary": summary_text(report),
        "status": inline(report.status),
        "ok": report.status == SUCCESS and not counts["unmapped"],
        # A run that stopped says what to do about it first; report.message is the reason.
        "action": (inline(report.message) or "the run stopped without a recorded reason") if stopped else "",
        "counts_known": counts_known(report),
        "trigger": TRIGGER_WORDS.get(report.trigger, inline(report.trigger)),
        "scheduled": report.trigger == "scheduled",
        "dry_run": report.trigger == "dry-run",
        "run_id": report.run_id,
        "psa": inline(report.psa_kind or ""),
        "started": local_time(report.started_at, zone),
        "date": report.started_at.astimezone(zone).strftime("%Y-%m-%d"),
        "finished": local_time(report.finished_at, zone),
        "late": late,
        "message": inline(report.message),
        "schedule": inline(report.schedule_text or ""),
        "next_run": local_time(report.next_run, zone),
        "counts": counts,
        "changes": changes,
        "changes_total": len(all_changes),
        "changes_more": len(all_changes) - len(changes),
        "failures": failures,
        "failures_total": len(all_failures),
        "failures_more": len(all_failures) - len(failures),
        "unmapped": unmapped,
        "unmapped_total": len(all_unmapped),
        "unmapped_more": len(all_unmapped) - len(unmapped),
        "attachment": csv_filename(report.run_id) if report.items else "",
        "details": details_text(report, history_url),
        "details_is_url": history_is_url,
        "widths": _widths(changes),
        "report": report,  # for custom templates that want more than the precomputed facts
    }


def _widths(changes: Sequence[Dict[str, str]]) -> Dict[str, int]:
    """Column widths for the plain-text change table."""
    return {
        "customer": max([len("Customer")] + [len(c["customer"]) for c in changes]),
        "sku": max([len("SKU")] + [len(c["sku"]) for c in changes]),
        "old": max([len("Old")] + [len(c["old"]) for c in changes]),
        "new": max([len("New")] + [len(c["new"]) for c in changes]),
        "delta": max([len("Change")] + [len(c["delta"]) for c in changes]),
    }
