"""``psabill check``: everything a run needs, tried without writing anything.

The config is ready; the source reads (with its rows per SKU, and what the
reader says, e.g. how many LastPass managed companies); the PSA answers with
the credentials; and the email path works as far as it can without sending
(SMTP up to the recipients, the mailer's program checked, the sender address
settled). Any problem raises the error a run would meet, naming the fix.
"""

from typing import Dict, List, NamedTuple, Optional

from psabill.config import addresses, readiness
from psabill.config.settings import Settings
from psabill.errors import AbortError
from psabill.net.errors import RemoteError
from psabill.psa.base import open_client
from psabill.sources import reader


class Checked(NamedTuple):
    rows: int
    customers: int
    seats: Dict[str, int]  # SKU -> total seats in the source
    source_note: str
    psa: str
    api_requests: int
    email: Optional[str]  # what the email path said; None: no addresses, so no report
    warnings: List[str]


def check(settings: Settings, *, outbox: object, send_email: bool = False) -> Checked:
    """Try every part of a run without writing; raises the first problem."""
    warnings = readiness.cron_env_warnings(settings)
    readiness.require(settings)
    assert settings.psa is not None
    addresses.check_configured(settings)
    usage = reader(settings.source.kind)(settings.source, set(settings.product_map), settings.path)
    seats: Dict[str, int] = {}
    for row in usage.rows:
        seats[row.sku] = seats.get(row.sku, 0) + row.seats
    client = open_client(settings.psa, zone=settings.zone)
    try:
        psa = client.check()
    except RemoteError as exc:
        raise AbortError(f"PSA check failed: {exc}") from None
    finally:
        client.close()
    email = None
    if settings.notify.emails:
        from psabill import notify  # the mailer: only a check that has addresses tries it

        email = notify.send_test(settings, outbox=outbox, dry=not send_email)  # type: ignore[arg-type]
    if usage.unterminated:
        warnings.append(f"{usage.origin}: the last row has no line end; an unattended run holds a source that "
                        "looks cut (end the file with a line break)")
    return Checked(len(usage.rows), len({row.customer for row in usage.rows}), seats, usage.note, psa,
                   client.request_count, email, warnings)
