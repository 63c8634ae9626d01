"""Contract: a full refresh against the ConnectWise sandbox, every request checked against the
published schema (tests/support/schemas/connectwise.json, from cw-api.json).

The client pages at 1000 (ConnectWise's maximum); the test lowers that constant so
every list the refresh reads (companies, agreements, additions) spans several pages
without a book of thousands.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date
from pathlib import Path
from typing import Dict, List, Set

import pytest

from psabill.outcomes import UNCHANGED, UPDATED
from psabill.psa import connectwise
from psabill.psa.base import open_client
from psabill.sandbox.connectwise import FUTURE_EFFECTIVE, Sandbox
from psabill.sources.rows import UsageRow
from support.env import connectwise_log_problems, settings_for
from support.runs import refresh

PAGE = 10
CUSTOMERS = 45  # > 4 pages of companies and of agreements
EXTRA = 25  # additions on one agreement: > 2 pages of additions


def test_a_full_refresh_sends_only_requests_the_published_schema_allows(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connectwise, "PAGE_SIZE", PAGE)
    with Sandbox.sample(customers=CUSTOMERS, seed=5, codebase="v2025_1/") as sb:
        big = next(a for a, row in sb.agreements.items() if row["company"]["identifier"] == "CUST00001")
        for n in range(EXTRA):
            sb.add_addition(big, f"EXTRA-{n:02d}", 1)
            sb.add_addition(big, f"EXTRA-{n:02d}", 1, effective_date=FUTURE_EFFECTIVE)  # not billing yet
        (tmp_path / "cw.key").write_text(sb.private_key)
        (tmp_path / "cw.key").chmod(0o600)
        cfg = settings_for(tmp_path / "config.toml", {
            "products": {"LastPass": "SEATS-STD", "LastPass+MFA": "SEATS-MFA", "Extra": "EXTRA-07"},
            "psa": {**sb.config_section(), "private_key_file": "cw.key", "max_retries": 0, "timeout": 10}})
        rows: List[UsageRow] = []
        for n in range(1, CUSTOMERS + 1):
            # half by identifier, half by name: both condition forms are sent
            customer = f"CUST{n:05d}" if n % 2 else f"Customer {n:05d} Ltd"
            rows.append(UsageRow(customer, "LastPass", n))
            rows.append(UsageRow(customer, "LastPass+MFA", n + 1))
        rows.append(UsageRow("CUST00001", "Extra", 3))
        psa = open_client(cfg.psa, billing_date=date(2026, 12, 1), backoff=0.001, max_wait=0.01)
        try:
            report = refresh(psa, rows, products=cfg.product_map)
        finally:
            psa.close()

        outcomes = {item.outcome for item in report.items}
        assert outcomes <= {UPDATED, UNCHANGED}, [i.message for i in report.items if i.message]
        assert sum(item.outcome == UPDATED for item in report.items) > CUSTOMERS

        pages: Dict[str, Set[str]] = defaultdict(set)
        for request in sb.requests:
            assert request.status == 200, request
            if request.method == "GET" and "page" in request.query:
                pages[request.endpoint].add(request.query["page"])
                assert request.query["pageSize"] == str(PAGE)
        for endpoint in ("GET company/companies", "GET finance/agreements",
                         "GET finance/agreements/{id}/additions"):
            assert {"1", "2"} <= pages[endpoint], f"{endpoint} read only pages {sorted(pages[endpoint])}"
        assert sb.counts["GET login/companyinfo"] == 1
        assert sb.counts["PATCH finance/agreements/{id}/additions/{id}"] == \
            sum(item.outcome == UPDATED for item in report.items)

        assert connectwise_log_problems(sb) == []
