"""Contract: a full refresh against the Autotask stand-in, every request checked against the published schema.

260 companies × 2 services make more than one page of contract services and
unit rows (500 a page), so next pages are exercised; [products] names one
service by id (a TOML integer) and one by name; one period is posted, one
contract bills the service inside a service bundle (the item names the
bundle), and one SKU maps to a bundle ("bundle:88"), written through
ContractServiceBundleUnits / ContractServiceBundleAdjustments (v1.json).
"""

from __future__ import annotations

import random
from datetime import date, datetime, timezone
from typing import Dict, List
from urllib.parse import urlencode

from psabill.outcomes import FAILED, UNCHANGED, UPDATED
from psabill.psa.base import open_client
from psabill.report import Run
from psabill.sandbox.autotask import AutotaskStandin
from psabill.sources.rows import UsageRow
from support.env import settings_for
from support.runs import refresh
from support.psa_schema import autotask_problems

TODAY = date(2026, 12, 1)
COMPANIES = 260


def test_a_full_refresh_makes_only_requests_the_published_schema_allows(tmp_path, monkeypatch) -> None:
    with AutotaskStandin(today=TODAY) as at:
        at.add_catalog_service("LastPass MFA", 502)
        at.add_catalog_service("Other", 503)
        rng = random.Random(14)
        rows: List[UsageRow] = []
        csids: Dict[str, int] = {}
        for n in range(COMPANIES):
            contract = at.add_contract(at.add_company(f"Customer {n}", f"C{n:04d}"))
            for sku, service in (("LastPass", 501), ("LastPass+MFA", 502)):
                csids[f"C{n:04d}/{sku}"] = at.add_service(contract, service, 10)
                rows.append(UsageRow(f"C{n:04d}", sku, 10 + rng.choice((0, 0, 1, 3))))
        at.post_period(csids["C0000/LastPass"], TODAY)
        rows[0] = UsageRow("C0000", "LastPass", 12)
        bundled = at.add_contract(at.add_company("Bundled Ltd", "B0001"))
        at.add_catalog_bundle("LastPass Suite", 77, services=[501])
        at.add_bundle(bundled, 77, 3)
        rows.append(UsageRow("B0001", "LastPass", 5))
        suite = at.add_bundle(at.add_contract(at.add_company("Suite Ltd", "B0002")), 88, 4)
        rows.append(UsageRow("B0002", "Suite", 6))

        monkeypatch.setenv("AT_SECRET", at.secret)
        cfg = settings_for(tmp_path / "config.toml", {
            "products": {"LastPass": 501, "LastPass+MFA": "LastPass MFA", "Suite": "bundle:88"},
            "psa": {"kind": "autotask", "url": at.url + "/ATServicesRest/", "username": at.username,
                    "integration_code": at.integration_code, "secret_env": "AT_SECRET"}})
        assert cfg.product_map == {"LastPass": "501", "LastPass+MFA": "LastPass MFA", "Suite": "bundle:88"}
        client = open_client(cfg.psa, billing_date=TODAY)
        try:
            report = refresh(client, rows, products=cfg.product_map)
        finally:
            client.close()

        problems = [p for r in at.requests
                    for p in autotask_problems(r.method, at.url + r.path + ("?" + urlencode(r.query) if r.query else ""),
                                               r.headers, r.body)]
        assert problems == []
        nexts = [r for r in at.requests if r.path.endswith("/query/next")]
        assert {r.endpoint for r in nexts} >= {"ContractServices", "ContractServiceUnits"}
        assert all(r.method == "POST" for r in nexts)

        changed = [r for r in rows[:-2] if r.seats != 10]
        assert report.count(UPDATED) == len(changed) + 1 and report.count(UNCHANGED) == len(rows) - 2 - len(changed)
        posted = next(i for i in report.items if i.customer == "C0000" and i.sku == "LastPass")
        assert posted.outcome == UPDATED
        assert posted.message == "December is posted; the seats take effect 2027-01-01"
        bundle = next(i for i in report.items if i.customer == "B0001")
        assert bundle.outcome == FAILED and "service bundle #77 'LastPass Suite'" in bundle.message
        assert '"bundle:77"' in bundle.hint
        assert at.units(suite, bundle=True) == 6
        assert next(i for i in report.items if i.customer == "B0002").outcome == UPDATED
        assert [a["serviceBundleID"] for a in at.adjustments if "serviceBundleID" in a] == [88]
        for row in rows[1:-2]:
            assert at.units(csids[f"{row.customer}/{row.sku}"]) == row.seats
        assert at.units(csids["C0000/LastPass"], date(2027, 1, 1)) == 12
        assert all(a["effectiveDate"] in ("2026-12-01T00:00:00", "2027-01-01T00:00:00") for a in at.adjustments)
        assert len(at.adjustments) == len(changed) + 1
        # Cost: reads in bulk, one POST per changed service.
        assert at.total <= len(changed) + 40


def test_billing_date_is_the_date_on_the_account_calendar() -> None:
    from pathlib import Path

    from psabill.run.perform import billing_date
    from support.env import settings_for

    report = Run(trigger="manual", started_at=datetime(2026, 11, 30, 22, 0, tzinfo=timezone.utc))  # 09:00 1 Dec, Sydney
    sydney = settings_for(Path("/x/config.toml"), {"account": {"timezone": "Australia/Sydney"}})
    assert billing_date(sydney, report) == date(2026, 12, 1)
    assert billing_date(settings_for(Path("/x/config.toml"), {}), report) == date(2026, 11, 30)
