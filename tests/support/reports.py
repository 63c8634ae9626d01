"""A large run report, as a mid-size MSP would get it: 1,500 customers x 2 SKUs."""

from __future__ import annotations

from datetime import datetime, timezone

from psabill.outcomes import FAILED, PARTIAL, UNMAPPED, UPDATED
from psabill.report import Item, Run

LONG_URL = "https://msp.example.com/connectwise/v4_6_release/apis/3.0/finance/agreements/" + "x" * 120


def large_report(customers: int = 1500) -> Run:
    """Every line changed, except 2 failures (long error text and URL) and 1 unmapped customer."""
    items = []
    for n in range(1, customers + 1):
        for sku, base in (("LastPass", 10), ("LastPass+MFA", 5)):
            old = base + n % 17
            items.append(Item(
                f"Customer {n:05d} Holdings and Managed Services Ltd", sku, UPDATED, seq=len(items) + 1,
                psa_company=f"CUST{n:05d}", agreement="Managed Services", line=str(100000 + 2 * n),
                old=old, new=old + 1 + n % 3,
            ))
    items[10] = Item(
        "Contoso Pharmaceuticals International", "LastPass", FAILED, seq=11, psa_company="CONTOSO",
        agreement="Managed Services", old=30, new=31,
        message=f"PATCH {LONG_URL} answered 400: agreementStatusInvalidForAddition_agreement_is_cancelled",
        hint="reactivate the agreement in ConnectWise or map another one",
    )
    items[11] = Item(
        "Fabrikam", "LastPass+MFA", FAILED, seq=12, old=3, new=4,
        message="=cmd|' /C calc'!A0 answered 403", hint="give the API member the Finance > Agreements edit right",
    )
    items.append(Item("Northwind Traders (new)", "LastPass", UNMAPPED, seq=len(items) + 1,
                      message="no PSA company mapped"))
    return Run(
        trigger="scheduled", id=42, status=PARTIAL,
        started_at=datetime(2026, 12, 1, 14, 0, 5, tzinfo=timezone.utc),
        finished_at=datetime(2026, 12, 1, 14, 9, 40, tzinfo=timezone.utc),
        psa="connectwise", account_name="Example MSP", zone="America/New_York",
        schedule_text="Every month on day 1 at 09:00 (America/New_York)",
        next_run=datetime(2027, 1, 1, 14, 0, tzinfo=timezone.utc),
        items=items,
    )
