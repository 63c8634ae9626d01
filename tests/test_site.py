"""The static billing-history site (issue 25): structure, ordering, escaping, secrets, modes, writes.

Pages are built from :class:`support.sites.FakeSiteView` (runs with items, as the
ledger will hand them) into tmp_path and read back as text. The browser side
(layout, colour schemes, nothing executing) is tests/test_site_browser.py.
"""

from __future__ import annotations

import base64
import csv
import io
import os
import random
import re
import stat
import subprocess
import sys
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Dict, List, Optional
from urllib.parse import quote, quote_plus
from zoneinfo import ZoneInfo

import pytest

from support.sites import FakeSiteView, year_of_runs

from psabill import outcomes, site
from psabill.report import Approval, Email, Item, Run
from psabill.site import facts
from psabill.site.csvfile import COLUMNS
from psabill.site.pages import Renderer
from psabill.text import clean, redact

ZONE = ZoneInfo("America/New_York")
DAY0 = datetime(2026, 11, 1, 14, 0, 5, tzinfo=timezone.utc)  # 09:00:05 in New York (EST)
HOSTILE = ("<script>window.__pwned=1</script>", '"><img src=x onerror="window.__pwned=1">',
           "Evil\u202eCorp\x1b[31m", "=HYPERLINK(\"http://x\")", "javascript:alert(1)")


def item(customer: str, sku: str = "LastPass", outcome: str = outcomes.UNCHANGED, old: Optional[int] = 10,
         new: Optional[int] = 10, **extra: object) -> Item:
    fields: Dict[str, object] = dict(psa_company=customer.upper()[:10], agreement="Managed", line="1001")
    fields.update(extra)
    return Item(customer, sku, outcome, old=old, new=new, **fields)  # type: ignore[arg-type]


def run(run_id: int, day: int, items: List[Item], *, trigger: str = "scheduled", status: str = outcomes.SUCCESS,
        hour: int = 0, **extra: object) -> Run:
    started = DAY0 + timedelta(days=day, hours=hour)
    kwargs: Dict[str, object] = dict(id=run_id, occurrence=DAY0 + timedelta(days=day) if trigger == "scheduled" else None,
                                     finished_at=started + timedelta(seconds=95), host="cron-host", psa="connectwise",
                                     email=Email("sent", "sent to billing@example.com"))
    kwargs.update(extra)
    return Run(trigger, started, status, items=items, **kwargs)  # type: ignore[arg-type]


def steady(customers: int = 4) -> List[Item]:
    return [item(f"Customer {n}") for n in range(customers)]


def build(view: FakeSiteView, out: Path, now: Optional[datetime] = None, **kw: object) -> List[Path]:
    when = now or max(r.started_at for r in view._runs) + timedelta(hours=1)
    return site.build(view, out, zone=ZONE, now=when, account_name="Example MSP", **kw)  # type: ignore[arg-type]


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def every_file(root: Path) -> List[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


@pytest.fixture
def scenario() -> FakeSiteView:
    """Three days: day 2 has a held line, a failure, an unmapped customer, a change and unchanged lines."""
    runs = [run(1, 0, steady()), run(2, 1, steady())]
    day2 = [
        item("Customer 0", outcome=outcomes.UPDATED, old=10, new=12),
        item("Customer 1", outcome=outcomes.FAILED, old=10, new=11, message="PATCH answered 400: agreement cancelled",
             hint="reactivate the agreement"),
        item("Customer 2", outcome=outcomes.HELD, old=10, new=2000, rule="max_line_factor",
             message="10 -> 2000 grows the line more than 10-fold"),
        item("Customer 3"),
        item("Newcomer Ltd", outcome=outcomes.UNMAPPED, old=None, new=5, psa_company=None,
             message="no PSA company mapped", hint="add it to the mapping file"),
    ]
    runs.append(run(3, 2, day2, status=outcomes.PARTIAL))
    return FakeSiteView(runs)


# -- names and URLs ------------------------------------------------------------------------


def test_run_pages_and_urls_follow_one_naming_convention() -> None:
    assert site.run_page_path(42) == "runs/000042.html"
    assert site.run_csv_path(42) == "runs/000042.csv"
    assert site.run_page_path(1234567) == "runs/1234567.html"
    assert site.run_page_url("https://billing.example.com/psabill/", 42) == \
        "https://billing.example.com/psabill/runs/000042.html"
    assert site.run_page_url("https://billing.example.com/psabill", 42) == \
        "https://billing.example.com/psabill/runs/000042.html"
    assert site.run_page_url(None, 7) == "runs/000007.html"


@pytest.mark.parametrize("name", HOSTILE + ("", "   ", "../../etc/passwd", "Ácme Øre", "北京科技", "a" * 500, "CON",
                                            "x\x00y", "\ud800"))
def test_a_customer_slug_is_safe_for_any_name(name: str) -> None:
    path = site.customer_page_path(name)
    assert re.fullmatch(r"customers/[a-z0-9][a-z0-9-]{0,40}-[0-9a-f]{12}\.html", path), path
    assert path == site.customer_page_path(name)  # stable


def test_names_that_fold_alike_get_different_pages() -> None:
    paths = {site.customer_page_path(n) for n in ("Acme", "ACME", "Ácme", "acme ", "Acme\u200b")}
    assert len(paths) == 5
    assert site.customer_slug("Acme & Co. (Boston)").startswith("acme-co-boston-")


# -- the pages ---------------------------------------------------------------------------


def test_build_writes_the_index_a_page_and_csv_per_run_and_a_page_per_customer(scenario: FakeSiteView,
                                                                              tmp_path: Path) -> None:
    out = tmp_path / "site"
    written = build(scenario, out)
    names = {p.relative_to(out).as_posix() for p in written}
    assert "index.html" in names
    for run_id in (1, 2, 3):
        assert site.run_page_path(run_id) in names and site.run_csv_path(run_id) in names
    for customer in ("Customer 0", "Customer 3", "Newcomer Ltd"):
        assert site.customer_page_path(customer) in names
    assert set(written) == set(every_file(out))  # what it returns is what it wrote


def test_every_page_forbids_scripts_and_loads_nothing_from_elsewhere(scenario: FakeSiteView, tmp_path: Path) -> None:
    build(scenario, tmp_path)
    pages = [p for p in every_file(tmp_path) if p.suffix == ".html"]
    assert len(pages) > 5
    for page in pages:
        html = read(page)
        head = html.split("</head>", 1)[0]
        csp = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)">', head)
        assert csp, page
        policy = csp.group(1).replace("&#39;", "'")
        for directive in ("default-src 'none'", "style-src 'unsafe-inline'", "img-src data:"):
            assert directive in policy
        assert head.index("Content-Security-Policy") < head.index("<title>")  # before any text from outside
        assert "<script" not in html.lower()
        assert not re.search(r"\son[a-z]+\s*=", html, re.I), page  # no event handler attribute
        assert "javascript:" not in html.lower()
        assert not re.search(r'(src|href)="(https?:)?//', html), page  # nothing external
        assert "prefers-color-scheme: dark" in html
        assert 'name="viewport"' in html


def test_a_run_page_shows_what_needs_action_first_then_changes_then_unchanged_collapsed(
        scenario: FakeSiteView, tmp_path: Path) -> None:
    build(scenario, tmp_path)
    html = read(tmp_path / site.run_page_path(3))
    at = {word: html.index(f'id="o-{word}"') for word in ("held", "failed", "unmapped", "updated", "unchanged")}
    assert at["held"] < at["failed"] < at["unmapped"] < at["updated"] < at["unchanged"]
    unchanged = html[at["unchanged"]:]
    assert unchanged.index("<details>") < unchanged.index("Customer 3")
    assert "<details open" not in html
    failed = html[at["failed"]:at["unmapped"]]
    assert "PATCH answered 400: agreement cancelled" in failed and "reactivate the agreement" in failed
    assert "10 → 11" in failed and "+1" in failed
    held = html[at["held"]:at["failed"]]
    assert "max_line_factor" in held and "10 → 2,000" in held and "+1,990" in held
    # The filter: one anchor per outcome present, plus "All" and the CSV next to the page.
    for word in ("held", "failed", "unmapped", "updated", "unchanged"):
        assert f'href="#o-{word}"' in html
    assert 'href="#items"' in html and 'href="000003.csv" download' in html
    assert ":target" in html
    # Customers link to their pages.
    assert f'href="../{site.customer_page_path("Customer 1")}"' in html


def test_outcomes_the_site_does_not_know_are_still_shown_after_the_known_ones(tmp_path: Path) -> None:
    view = FakeSiteView([run(1, 0, [item("A", outcome="deferred"), item("B", outcome=outcomes.FAILED, old=1, new=2)])])
    build(view, tmp_path)
    html = read(tmp_path / site.run_page_path(1))
    assert html.index('id="o-failed"') < html.index('id="o-deferred"')


def test_the_index_lists_held_plans_first_then_failures_and_unmapped_customers(scenario: FakeSiteView,
                                                                             tmp_path: Path) -> None:
    build(scenario, tmp_path)
    html = read(tmp_path / "index.html")
    action = html[html.index('id="action"'):html.index('id="seats"')]
    assert action.index('id="held-3"') < action.index('id="latest-failed"') < action.index('id="latest-unmapped"')
    assert "Customer 2" in action and "max_line_factor" in action
    assert "agreement cancelled" in action and "reactivate the agreement" in action
    assert "Newcomer Ltd" in action
    assert html.index('id="action"') < html.index('id="seats"') < html.index('id="runs"')
    assert "3 held" not in action  # counts are items, and only one line was held
    kpis = html[html.index('id="kpis"'):html.index('id="action"')]
    assert "1 held · 1 failed · 1 unmapped" in kpis


def test_an_approved_plan_is_no_longer_listed_as_held(scenario: FakeSiteView, tmp_path: Path) -> None:
    runs = list(scenario._runs)
    held = next(r for r in runs if r.id == 3)
    held.approvals = [Approval("approved", "alice", "admin-laptop", held.started_at + timedelta(hours=2), 1)]
    runs.append(run(4, 2, [item("Customer 2", outcome=outcomes.UPDATED, old=10, new=2)], trigger="approval",
                    hour=2, of_run=3, host="admin-laptop"))
    build(FakeSiteView(runs), tmp_path)
    index = read(tmp_path / "index.html")
    assert 'id="held-3"' not in index
    page = read(tmp_path / site.run_page_path(3))
    attempts = page[page.index('id="attempts"'):page.index('id="filter"')]
    assert "Approved" in attempts and "alice" in attempts and "admin-laptop" in attempts
    assert ">1 item<" in attempts
    assert 'href="000004.html"' in attempts  # the approval run, linked


def test_a_run_page_lists_its_retries_and_approvals_with_times_and_hosts(tmp_path: Path) -> None:
    aborted = run(1, 0, [], status=outcomes.ABORTED, host="node-a", message="PSA unreachable: timed out")
    retry = run(2, 0, steady(), hour=1, attempt=2, host="node-b", late_seconds=3600)
    retry.occurrence = aborted.occurrence
    build(FakeSiteView([aborted, retry]), tmp_path)
    for run_id in (1, 2):
        html = read(tmp_path / site.run_page_path(run_id))
        attempts = html[html.index('id="attempts"'):html.index('id="filter"')]
        assert "node-a" in attempts and "node-b" in attempts
        assert "09:00:05" in attempts and "10:00:05" in attempts  # New York time, to the second
        assert "PSA unreachable: timed out" in attempts
        assert "(this page)" in attempts
    page1 = read(tmp_path / site.run_page_path(1))
    assert "no items" in page1 and "Problem:" in page1
    assert "Late" in read(tmp_path / site.run_page_path(2))


def test_recurring_problems_say_how_often_they_happened(tmp_path: Path) -> None:
    runs = []
    for n in range(9):
        runs.append(run(n + 1, n, [item("Fabrikam", outcome=outcomes.FAILED, old=3, new=4, message="403 forbidden",
                                        hint="give the API member the Finance rights"),
                                   item("Contoso"), item("Once Corp", outcome=outcomes.FAILED if n == 8 else
                                                         outcomes.UNCHANGED, old=1, new=2 if n == 8 else 1)],
                        status=outcomes.PARTIAL))
    build(FakeSiteView(runs), tmp_path)
    html = read(tmp_path / "index.html")
    assert "failed in 9 of the last 9 runs" in html
    assert "Once Corp" in html  # a failure of the last run...
    assert html.count("of the last 9 runs") == 1  # ...but not a recurring one


def test_recurring_counts_look_at_the_last_ten_real_runs_only() -> None:
    runs = [run(n + 1, n, [item("A", outcome=outcomes.FAILED, old=1, new=2)]) for n in range(15)]
    found = facts.recurring_lines(list(reversed(runs))[:facts.RECURRING_RUNS])
    assert [(r.customer, r.times, r.of) for r in found] == [("A", 10, 10)]
    assert facts.recurring_lines([runs[-1]]) == []  # once is not recurring


def test_a_run_that_keeps_failing_is_a_recurring_problem(tmp_path: Path) -> None:
    runs = [run(1, 0, steady())] + [run(n, n, [], status=outcomes.ABORTED, message="PSA login failed: 401")
                                    for n in range(2, 6)]
    build(FakeSiteView(runs), tmp_path)
    html = read(tmp_path / "index.html")
    assert "The run went wrong in 4 of the last 5 runs" in html and "PSA login failed: 401" in html


def test_the_index_shows_dates_in_the_account_zone_trigger_status_counts_and_email(scenario: FakeSiteView,
                                                                                 tmp_path: Path) -> None:
    runs = list(scenario._runs)
    runs[0].email = Email("failed", "SMTP 421 try again later")
    build(FakeSiteView(runs), tmp_path)
    html = read(tmp_path / "index.html")
    table = html[html.index('id="runs"'):]
    row3 = table[table.index('id="run-3"'):table.index('id="run-2"')]
    assert "Tue 3 Nov 2026 09:00" in row3  # 14:00 UTC in New York
    assert "scheduled" in row3 and "partial" in row3
    for count in ("1</b> held", "1</b> failed", "1</b> unmapped", "1</b> updated", "1</b> unchanged"):
        assert count in row3
    assert row3.index("held") < row3.index("failed") < row3.index("unchanged")
    assert "sent" in row3
    row1 = table[table.index('id="run-1"'):]
    assert "failed" in row1 and "SMTP 421 try again later" in row1
    assert "America/New_York" in html


def _polylines(html: str) -> List[int]:
    return [len(points.split()) for points in re.findall(r'<polyline class="line[^"]*" points="([^"]*)"', html)]


def test_the_seats_chart_has_one_point_per_run_and_every_chart_is_inline_svg(tmp_path: Path) -> None:
    runs = year_of_runs(customers=40, days=30, end=datetime(2026, 11, 30, 11, 0, 30, tzinfo=timezone.utc))
    view = FakeSiteView(runs)
    build(view, tmp_path, days=60)
    html = read(tmp_path / "index.html")
    seats = html[html.index('id="seats"'):html.index('id="changes"')]
    plan_runs = [r for r in runs if r.trigger != "approval" and r.items]
    lines = _polylines(seats)
    assert lines and all(n == len(plan_runs) for n in lines)
    assert seats.count("<title>") == len(lines) * len(plan_runs)  # a tooltip per point
    changes = html[html.index('id="changes"'):html.index('id="movers"')]
    assert changes.count("<g><title>Run ") == len(runs)  # a bar per run
    movers = html[html.index('id="movers"'):html.index('id="runs"')]
    assert "<svg" in movers and "seats" in movers
    assert "<img" not in html


def test_movers_are_the_customers_whose_seats_moved_most_this_month(tmp_path: Path) -> None:
    before = [item("Big Mover", new=10), item("Small Mover", new=10), item("Still", new=10)]
    after = [item("Big Mover", outcome=outcomes.UPDATED, old=10, new=40), item("Small Mover", outcome=outcomes.UPDATED,
                                                                              old=10, new=8), item("Still", new=10)]
    view = FakeSiteView([run(1, 0, before), run(2, 30, after)])  # 1 Nov and 1 Dec
    build(view, tmp_path)
    html = read(tmp_path / "index.html")
    movers = html[html.index('id="movers"'):html.index('id="runs"')]
    assert "December" in movers
    assert movers.index("Big Mover") < movers.index("Small Mover")
    assert "+30" in movers and "-2" in movers and "Still" not in movers


def test_a_customer_page_shows_its_lines_over_time_with_a_seats_chart(tmp_path: Path) -> None:
    runs = [run(1, 0, [item("Acme", new=10), item("Acme", "MFA", old=4, new=4)]),
            run(2, 1, [item("Acme", new=10), item("Acme", "MFA", old=4, new=4)]),
            run(3, 2, [item("Acme", outcome=outcomes.UPDATED, old=10, new=13), item("Acme", "MFA", old=4, new=4)]),
            run(4, 3, [item("Acme", outcome=outcomes.FAILED, old=13, new=15, message="503 unavailable"),
                       item("Acme", "MFA", old=4, new=4)]),
            run(5, 4, [item("Acme", new=15, old=15), item("Acme", "MFA", old=4, new=4)])]
    build(FakeSiteView(runs), tmp_path)
    html = read(tmp_path / site.customer_page_path("Acme"))
    assert "<h1 id=\"customer\">Acme</h1>" in html
    first = html[html.index('id="sku-1"'):html.index('id="sku-2"')]
    assert "LastPass" in first  # the larger SKU first
    rows = re.findall(r'<a href="\.\./runs/(\d+)\.html">', first)
    assert rows == ["000005", "000004", "000003", "000001"]  # events newest first; run 2 changed nothing
    assert "503 unavailable" in first and "10 → 13" in first and "The line at the start of this window." in first
    assert len(_polylines(first)) == 1
    mfa = html[html.index('id="sku-2"'):]
    assert "no change since" in mfa and re.findall(r'\.\./runs/(\d+)\.html', mfa) == ["000001"]
    run_page = read(tmp_path / site.run_page_path(4))
    assert f'href="../{site.customer_page_path("Acme")}"' in run_page


def test_dry_runs_are_not_part_of_a_customers_lines(tmp_path: Path) -> None:
    runs = [run(1, 0, [item("Acme")]),
            run(2, 0, [item("Acme", outcome=outcomes.PLANNED, old=10, new=20)], trigger="dry-run", hour=3,
                status=outcomes.PLANNED_RUN),
            run(3, 1, [item("Dry Only", outcome=outcomes.PLANNED, old=1, new=2)], trigger="dry-run",
                status=outcomes.PLANNED_RUN)]
    build(FakeSiteView(runs), tmp_path)
    assert "000002" not in read(tmp_path / site.customer_page_path("Acme"))
    assert "only in dry runs" in read(tmp_path / site.customer_page_path("Dry Only"))
    assert "Dry run:" in read(tmp_path / site.run_page_path(2))


# -- escaping and secrets ----------------------------------------------------------------


def test_hostile_names_show_as_text_and_run_nothing(tmp_path: Path) -> None:
    items = [item(name, sku=name, outcome=outcomes.FAILED, old=1, new=2, message=name, hint=name, rule=name,
                  agreement=name, line=name) for name in HOSTILE]
    hostile_run = run(1, 0, items, status=outcomes.PARTIAL, host=HOSTILE[1], message=HOSTILE[0],
                      email=Email("failed", HOSTILE[1]))
    hostile_run.approvals = [Approval("approved", HOSTILE[0], HOSTILE[1], hostile_run.started_at, 1)]
    written = site.build(FakeSiteView([hostile_run]), tmp_path, zone=ZONE, now=DAY0 + timedelta(hours=2),
                         account_name=HOSTILE[0])
    assert written
    for path in every_file(tmp_path):
        text = read(path)
        assert "\u202e" not in text and "\x1b" not in text, path
        if path.suffix == ".html":  # (the CSV is data: it holds the names as they are, cleaned)
            assert "<script" not in text.lower() and "<img" not in text.lower(), path
            assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in text, path
    run_page = read(tmp_path / site.run_page_path(1))
    assert "Evil\\u202eCorp\\x1b[31m" in run_page and "&#34;&gt;&lt;img src=x onerror=" in run_page
    assert "Evil\\u202eCorp\\x1b[31m" in read(tmp_path / site.customer_page_path(HOSTILE[2]))
    csv_text = read(tmp_path / site.run_csv_path(1))
    assert "'=HYPERLINK" in csv_text  # never a spreadsheet formula


def test_a_nul_in_a_name_cannot_cut_a_page(tmp_path: Path) -> None:
    build(FakeSiteView([run(1, 0, [item("Null\x00Corp", outcome=outcomes.FAILED, old=1, new=2), item("B")])]),
          tmp_path)
    html = read(tmp_path / site.run_page_path(1))
    assert "\x00" not in html and "Null\\x00Corp" in html and html.rstrip().endswith("</html>")


@pytest.fixture
def secret() -> str:
    value = "hunter2-S3cr3t/Tok+en=="
    redact.register(value)
    yield value
    redact.clear()


def test_no_page_holds_a_secret_in_any_form(secret: str, tmp_path: Path) -> None:
    leaky = f"Authorization: Basic {base64.b64encode(('msp+pub:' + secret).encode()).decode()} key={secret}"
    items = [item(f"Acme {secret}", outcome=outcomes.FAILED, old=1, new=2, message=leaky, hint=f"use {quote(secret)}",
                  psa_company=secret, agreement=quote_plus(secret), line=secret, rule=secret),
             item("Plain Ltd", message=secret)]
    leaky_run = run(1, 0, items, status=outcomes.PARTIAL, message=leaky, host=secret,
                    email=Email("failed", leaky), schedule_text=secret, source_digest=secret)
    leaky_run.approvals = [Approval("approved", secret, secret, leaky_run.started_at, 1)]
    site.build(FakeSiteView([leaky_run]), tmp_path, zone=ZONE, now=DAY0 + timedelta(hours=1), account_name=secret)
    forms = {secret, quote(secret, safe=""), quote_plus(secret), base64.b64encode(secret.encode()).decode().rstrip("="),
             base64.urlsafe_b64encode(secret.encode()).decode().rstrip("="), secret.replace("/", "&#x2F;"),
             secret.replace("+", "&#43;"), base64.b64encode(("msp+pub:" + secret).encode()).decode()[8:-4]}
    files = every_file(tmp_path)
    assert len(files) >= 5
    for path in files:
        data = path.read_bytes().decode("utf-8")
        for form in forms:
            assert form not in data, (path, form)
        assert secret not in path.name and "s3cr3t" not in path.name.lower()
    assert "[redacted]" in read(tmp_path / site.run_page_path(1))


# -- files ---------------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o077, 0o000, 0o022])
def test_pages_are_world_readable_and_never_writable_by_others(scenario: FakeSiteView, tmp_path: Path,
                                                              umask: int) -> None:
    old = os.umask(umask)
    try:
        build(scenario, tmp_path / "deep" / "site")
    finally:
        os.umask(old)
    root = tmp_path / "deep" / "site"
    for directory in [tmp_path / "deep", root, root / "runs", root / "customers"]:
        assert stat.S_IMODE(directory.stat().st_mode) == 0o755, directory
    for path in every_file(root):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    assert not [p for p in root.rglob(".psabill-*")]  # no temp file left behind


def test_a_site_dir_open_to_others_is_tightened_and_an_unchanged_page_gets_its_mode_back(
        scenario: FakeSiteView, tmp_path: Path) -> None:
    root = tmp_path / "site"
    build(scenario, root)
    os.chmod(root, 0o777)
    os.chmod(root / "index.html", 0o666)
    page = root / site.run_page_path(1)
    os.chmod(page, 0o600)
    build(scenario, root)
    assert stat.S_IMODE(root.stat().st_mode) == 0o755
    assert stat.S_IMODE((root / "index.html").stat().st_mode) == 0o644
    assert stat.S_IMODE(page.stat().st_mode) == 0o644


def test_a_site_dir_that_is_a_file_is_a_one_line_site_error(scenario: FakeSiteView, tmp_path: Path) -> None:
    (tmp_path / "site").write_text("not a dir")
    with pytest.raises(site.SiteError, match="not a directory") as caught:
        build(scenario, tmp_path / "site")
    assert "\n" not in caught.value.message
    assert isinstance(caught.value, site.SiteError)


def test_pages_are_written_atomically(scenario: FakeSiteView, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "site"
    build(scenario, root)
    before = {p: p.read_bytes() for p in every_file(root)}
    real_replace = os.replace

    def failing_replace(src: str, dst: str) -> None:
        if str(dst).endswith("index.html"):
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(site.SiteError, match="No space left on device"):
        build(scenario, root, now=DAY0 + timedelta(days=9))  # a later "now": the index changes
    assert (root / "index.html").read_bytes() == before[root / "index.html"]  # the old page, whole
    assert not [p for p in root.rglob(".psabill-*")]


def test_a_rebuild_rewrites_only_the_files_whose_bytes_change(scenario: FakeSiteView, tmp_path: Path) -> None:
    root = tmp_path / "site"
    now = DAY0 + timedelta(days=3)
    first = build(scenario, root, now=now)
    inodes = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in first}
    assert build(scenario, root, now=now) == []
    assert build(scenario, root, now=now + timedelta(minutes=5)) == [root / "index.html"]  # only it shows "now"
    for path, before in inodes.items():
        if path.name != "index.html":
            assert (path.stat().st_ino, path.stat().st_mtime_ns) == before


def _tree(root: Path) -> Dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in every_file(root)}


def test_update_after_a_run_writes_only_the_pages_that_run_changed(tmp_path: Path) -> None:
    customers = [f"Customer {n:02d}" for n in range(20)]
    runs = [run(n + 1, n, [item(c) for c in customers]) for n in range(5)]
    view = FakeSiteView(runs)
    root = tmp_path / "site"
    build(view, root, now=DAY0 + timedelta(days=6), days=60)
    latest = [item(c) for c in customers]
    latest[3] = item(customers[3], outcome=outcomes.UPDATED, old=10, new=11)
    latest[7] = item(customers[7], outcome=outcomes.FAILED, old=10, new=12, message="503")
    latest.append(item("Brand New Co", outcome=outcomes.UNMAPPED, old=None, new=4))
    view.add(run(6, 5, latest, status=outcomes.PARTIAL))
    now = DAY0 + timedelta(days=6)
    calls_before = dict(view.calls)
    written = site.update(view, root, 6, zone=ZONE, now=now, days=60, account_name="Example MSP")
    assert {p.relative_to(root).as_posix() for p in written} == {
        "index.html", site.run_page_path(6), site.run_csv_path(6), site.customer_page_path(customers[3]),
        site.customer_page_path(customers[7]), site.customer_page_path("Brand New Co")}
    assert view.calls["customers_lines"] - calls_before.get("customers_lines", 0) == 1  # one batched read
    assert sorted(view.customers_asked) == sorted([customers[3], customers[7], "Brand New Co"])
    # ...and the site is then exactly what a full build makes.
    fresh = tmp_path / "fresh"
    build(view, fresh, now=now, days=60)
    assert _tree(root) == _tree(fresh)
    # The next run changes nothing for anyone: only the index and its own page and CSV.
    view.add(run(7, 6, [replace(i, outcome=outcomes.UNCHANGED, old=i.new) if i.new is not None else i
                        for i in latest if i.customer != "Brand New Co"]))
    written = site.update(view, root, 7, zone=ZONE, now=now + timedelta(days=1), days=60)
    # Customer 3's update stays as it was; customer 7 recovered from its failure: an event.
    assert {p.relative_to(root).as_posix() for p in written} == {
        "index.html", site.run_page_path(7), site.run_csv_path(7), site.customer_page_path(customers[7])}


def test_update_after_an_approval_rewrites_the_held_runs_page_too(scenario: FakeSiteView, tmp_path: Path) -> None:
    root = tmp_path / "site"
    build(scenario, root)
    held = scenario.run(3)
    assert held is not None
    held.approvals = [Approval("approved", "alice", "laptop", held.started_at + timedelta(hours=1), 1)]
    scenario.add(run(4, 2, [item("Customer 2", outcome=outcomes.UPDATED, old=10, new=2)], trigger="approval", hour=1,
                     of_run=3))
    written = site.update(scenario, root, 4, zone=ZONE, now=DAY0 + timedelta(days=3))
    names = {p.relative_to(root).as_posix() for p in written}
    assert {site.run_page_path(3), site.run_page_path(4), "index.html"} <= names
    assert "alice" in read(root / site.run_page_path(3))


def test_update_on_a_fresh_dir_writes_every_customer_page_the_run_links_to(scenario: FakeSiteView,
                                                                        tmp_path: Path) -> None:
    written = site.update(scenario, tmp_path, 3, zone=ZONE, now=DAY0 + timedelta(days=3))
    names = {p.relative_to(tmp_path).as_posix() for p in written}
    for customer in ("Customer 0", "Customer 1", "Customer 2", "Customer 3", "Newcomer Ltd"):
        assert site.customer_page_path(customer) in names


# -- the CSV ---------------------------------------------------------------------------------


def test_the_run_csv_has_every_item_cleaned_and_safe_for_a_spreadsheet(tmp_path: Path) -> None:
    items = [item("Zeta", outcome=outcomes.UPDATED, old=Decimal("2.5"), new=3),
             item("alpha", outcome=outcomes.FAILED, old=5, new=2, message="=cmd|' /C calc'!A0 answered 403",
                  hint="@fix, \"it\"", rule="-rule"),
             item("Beta\nCorp\x1b", old=None, new=None, outcome=outcomes.UNMAPPED, psa_company=None, agreement=None,
                  line=None)]
    build(FakeSiteView([run(1, 0, items)]), tmp_path)
    data = (tmp_path / site.run_csv_path(1)).read_bytes()
    assert b"\r\n" in data
    rows = list(csv.reader(io.StringIO(data.decode("utf-8"))))
    assert rows[0] == list(COLUMNS)
    assert [r[0] for r in rows[1:]] == ["alpha", "Beta\\nCorp\\x1b", "Zeta"]  # item order: case-folded names
    alpha = dict(zip(COLUMNS, rows[1]))
    assert alpha["message"].startswith("'=cmd") and alpha["hint"] == "'@fix, \"it\"" and alpha["rule"] == "'-rule"
    assert (alpha["old"], alpha["new"], alpha["delta"], alpha["outcome"]) == ("5", "2", "-3", "failed")
    zeta = dict(zip(COLUMNS, rows[3]))
    assert (zeta["old"], zeta["new"], zeta["delta"]) == ("2.5", "3", "0.5")
    # Exactly what csv.writer makes of clean.cell() of each value.
    reference = io.StringIO()
    writer = csv.writer(reference, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for i in sorted(items, key=lambda i: (i.customer.casefold(), i.sku.casefold(), i.seq)):
        num = lambda v: float(v) if isinstance(v, Decimal) and v != v.to_integral_value() else (
            int(v) if isinstance(v, Decimal) else v)
        writer.writerow([clean.cell(v) for v in (i.customer, i.sku, i.psa_company, i.agreement, i.line, num(i.old),
                                                 num(i.new), num(i.delta), i.outcome, i.rule, i.message, i.hint)])
    assert data.decode("utf-8") == reference.getvalue()


# -- the fast path says what the plain path says ------------------------------------------------


def _random_items(rng: random.Random, n: int) -> List[Item]:
    words = [outcomes.UNCHANGED] * 6 + [outcomes.UPDATED, outcomes.FAILED, outcomes.HELD, outcomes.UNMAPPED]
    out = []
    for k in range(n):
        old = rng.choice([None, 1, 2, 3, Decimal("2.5")])
        word = rng.choice(words)
        new = old if word == outcomes.UNCHANGED else rng.choice([None, 1, 2, 4])
        out.append(Item(rng.choice(["acme", "Acme", "ACME", "beta", "Ça", "<b>x</b>"]), rng.choice(["A", "a", "B"]),
                        word, seq=k, old=old, new=new, message=rng.choice(["", "m", "=x"]),
                        hint=rng.choice(["", "h"]), psa_company=rng.choice([None, "P"])))
    return out


def test_memoised_records_render_exactly_what_each_item_renders() -> None:
    rng = random.Random(5)
    renderer = Renderer(ZONE)
    items: List[Item] = []
    for n in range(60):
        if n % 2 and items:  # the same lines again, a few of them changed: the positional shortcut
            fresh = _random_items(rng, len(items))
            items = [fresh[k] if rng.random() < 0.2 else replace(i) for k, i in enumerate(items)]
        else:
            items = _random_items(rng, rng.randrange(0, 25))
        lines = renderer.book.lines(items)
        expected = sorted(items, key=lambda i: (i.customer.casefold(), i.sku.casefold(), i.seq))
        assert [id(i) for i in lines.items] == [id(i) for i in expected]
        grouped = lines.html_by_outcome()
        assert set(grouped) == {i.outcome for i in items}
        for word in {i.outcome for i in items}:
            assert lines.html(word).decode() == "".join(renderer.row(i) for i in expected if i.outcome == word)
            assert grouped[word] == lines.html(word)
        assert lines.csv().decode() == "".join(renderer.csv.row(i) for i in expected)


def test_the_bulk_event_tracker_agrees_with_the_item_by_item_one() -> None:
    rng = random.Random(11)
    bulk, single = facts.Tracker(), facts.Tracker()
    for _ in range(200):
        items = _random_items(rng, rng.randrange(0, 12))
        assert bulk.see_all(items) == [single.see(i) for i in items]


# -- the package ---------------------------------------------------------------------------------


def test_importing_the_package_loads_no_renderer() -> None:
    code = "import sys, psabill.site; print(sorted(m for m in sys.modules if m.startswith(('jinja2', 'markupsafe', 'psabill.site.'))))"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert "jinja2" not in out and "markupsafe" not in out and "builder" not in out, out


def test_an_empty_ledger_builds_an_index_that_says_so(tmp_path: Path) -> None:
    written = site.build(FakeSiteView([]), tmp_path, zone=ZONE, now=DAY0)
    assert written == [tmp_path / "index.html"]
    html = read(tmp_path / "index.html")
    assert "No runs in the last 60 days" in html and "Nothing is held, failing or unmapped" in html


BUILD_SCRIPT = """
import sys
from datetime import timedelta
from pathlib import Path
from support.sites import FakeSiteView, year_of_runs, ZONE
from psabill import site
runs = year_of_runs(customers=80, days=20, seed=4)
site.build(FakeSiteView(runs), Path(sys.argv[1]), zone=ZONE, now=runs[-1].started_at + timedelta(hours=1), days=60)
"""


def test_a_build_is_the_same_bytes_whatever_the_hash_seed(tmp_path: Path) -> None:
    """So a later build (another cron run, another process) skips every page nothing changed."""
    trees = []
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed, PYTHONPATH=os.pathsep.join(sys.path))
        subprocess.run([sys.executable, "-c", BUILD_SCRIPT, str(tmp_path / seed)], env=env, check=True)
        trees.append(_tree(tmp_path / seed))
    assert len(trees[0]) > 50 and trees[0] == trees[1]


def test_a_rebuild_removes_the_temp_files_of_writes_that_never_finished(scenario: FakeSiteView,
                                                                       tmp_path: Path) -> None:
    build(scenario, tmp_path)
    stale, fresh, other = (tmp_path / "runs" / ".psabill-site-abc.tmp", tmp_path / ".psabill-site-new.tmp",
                           tmp_path / "customers" / "notes.tmp")
    for path in (stale, fresh, other):
        path.write_text("half a page")
    old = stale.stat().st_mtime - 3600
    os.utime(stale, (old, old))
    build(scenario, tmp_path)
    assert not stale.exists() and fresh.exists() and other.exists()  # a write in progress keeps its file
