"""The history site from real runs (issue 25): the ledger's side of the SiteView contract and the wiring.

tests/test_site.py builds pages from a fake view. Here the runs are real (the CLI
against the ConnectWise sandbox on loopback), the view is the ledger's
(:class:`psabill.notify.site.LedgerView`), on SQLite and on PostgreSQL, and the
site is written by the run itself and by ``psabill history site``.
"""

from __future__ import annotations

import json
import os
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import pytest
import tomli_w

from psabill import outcomes
from psabill.config.paths import Paths
from psabill.config.settings import load
from psabill.ledger.history import open_store
from psabill.notify.site import LedgerView
from psabill.sandbox.connectwise import Sandbox
from support.book import Book
from support.env import Env, tomllib

EPOCH = datetime(2000, 1, 1, tzinfo=timezone.utc)


def _site(env: Env, directory: Path) -> None:
    data = tomllib.loads(env.config.read_text())
    data["history"] = {"site_dir": str(directory)}
    env.config.write_text(tomli_w.dumps(data))
    os.chmod(env.config, 0o600)


@pytest.fixture
def book(env: Env, ledger_url: Optional[str]) -> Any:
    with Sandbox() as sandbox:
        yield Book(env, sandbox, customers=5, seats=25)


def _view(env: Env) -> Any:
    settings = load(env.config)
    store = open_store(Paths(config=env.config, state_dir=env.state_dir, crontab_file=env.crontab),
                       settings.state_url, settings.account_id)
    return store.ledger, LedgerView(store.ledger)


def test_every_run_updates_the_site_and_history_site_rebuilds_it(env: Env, book: Book, tmp_path: Path) -> None:
    site = tmp_path / "www"
    _site(env, site)
    book.source({**{c: 26 for c in book.lines}, "CUST0001": 25})
    code, first, _ = book.run("--yes")
    assert code == 0 and first["status"] == "success"
    index = (site / "index.html").read_text()
    page = site / "runs" / f"{first['id']:06d}.html"
    assert page.is_file() and f"runs/{first['id']:06d}.html" in index
    text = page.read_text()
    assert text.index("CUST0002") < text.index("CUST0001")  # changes before the unchanged line
    book.source({c: 0 for c in book.lines})  # held: everyone to 0
    code, held, _ = book.run("--yes")
    assert held["status"] == "held" and code == 8
    index = (site / "index.html").read_text()
    assert "psabill approve" in index and f"{held['id']}" in index
    for page in site.rglob("*.html"):
        page.unlink()
    rebuilt = env.run("history", "site", "--json")
    assert rebuilt.exit_code == 0, rebuilt.output
    written = json.loads(rebuilt.output)["written"]
    assert str(site / "index.html") in written and (site / "runs" / f"{held['id']:06d}.html").is_file()


def test_the_ledger_view_keeps_the_order_and_fields_the_site_reads(env: Env, book: Book) -> None:
    book.source({c: 27 for c in book.lines})
    book.run("--yes")
    book.source({c: 0 for c in book.lines})
    _, held, _ = book.run("--yes")
    assert env.run("approve", str(held["id"]), "--yes").exit_code == 0
    ledger, view = _view(env)
    try:
        runs = view.runs(EPOCH)
        assert [r.id for r in runs] == sorted((r.id for r in runs), reverse=True)  # newest first
        assert all(not r.items and r.tally is not None and r.host for r in runs)
        # An approval writes the held plan within its own run: the held items become updated, so the
        # index no longer lists the plan as held, and the run carries the decision.
        approved = runs[0]
        assert approved.id == held["id"] and approved.tally == {"updated": len(book.lines)}
        attempts = view.attempts(view.run(held["id"]))
        assert [r.id for r in attempts] == [held["id"]]  # a manual run: itself
        full = view.run(held["id"])
        assert full.items and [a.action for a in full.approvals] == ["approved"]
        lines = view.customers_lines(["CUST0001", "NOBODY"], EPOCH)["CUST0001"]
        assert view.customers_lines(["NOBODY"], EPOCH) == {"NOBODY": []}
        assert lines and len(lines) == len(view.customers_lines(["CUST0001"], EPOCH)["CUST0001"])
        assert [run.id for run, _ in lines] == sorted(run.id for run, _ in lines)  # oldest first
        assert all(item.customer == "CUST0001" for _, item in lines)
        totals = view.sku_totals(EPOCH)
        assert [run.id for run, _ in totals] == sorted(run.id for run, _ in totals)
        assert totals[0][1] == {"LastPass": 27 * len(book.lines)}
    finally:
        ledger.close()


def test_a_site_that_cannot_be_written_never_fails_the_run_and_is_said_once(env: Env, book: Book,
                                                                           tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the site should go\n")
    _site(env, blocker)
    book.source({c: 28 for c in book.lines})
    code, run, out = book.run("--yes")
    assert code == 0 and run["status"] == "success"
    warnings = [line for line in out.splitlines() if "history site" in line]
    assert len(warnings) == 1 and str(blocker) in warnings[0], out
    assert "Traceback" not in out
    assert book.quantities() == {c: 28.0 for c in book.lines}


def test_the_email_links_to_the_run_page_under_site_url(env: Env, book: Book, tmp_path: Path) -> None:
    data = tomllib.loads(env.config.read_text())
    data["history"] = {"site_dir": str(tmp_path / "www"), "site_url": "https://billing.msp.example/psabill/"}
    env.config.write_text(tomli_w.dumps(data))
    os.chmod(env.config, 0o600)
    book.source({c: 29 for c in book.lines})
    code, run, _ = book.run("--yes")
    assert code == 0
    [eml] = sorted((env.tmp / "outbox").glob("*.eml"))
    body = eml.read_bytes().decode("utf-8", "replace")
    assert re.search(rf"https://billing\.msp\.example/psabill/runs/{run['id']:06d}\.html", body), body[:2000]
    assert outcomes.UPDATED in json.dumps(run)
