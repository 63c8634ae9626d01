"""The static billing-history site (issue 25): plain HTML files a web server, or a browser, shows as they are.

Pages (paths relative to the site dir; :mod:`psabill.site.paths` names them)::

    index.html                    runs of the window, what needs action first, charts
    runs/000042.html              one run: every item (held, failed, unmapped first;
                                  unchanged collapsed), its attempts and approvals
    runs/000042.csv               that run's items as CSV, next to its page
    customers/<slug>.html         one customer's lines over time, with its seats chart

No page holds a script, loads anything from elsewhere, or can run anything
(a Content-Security-Policy forbids scripts); every outside text is cleaned by
:mod:`psabill.text.clean` and HTML-escaped. Files are written atomically, 0644
in directories 0755, and only when their bytes change.

The API (stable; the ledger, the run and ``psabill history site`` call it)::

    class SiteView(Protocol):   # psabill.site.view: what the site reads; the ledger implements it
        def runs(self, since: datetime) -> List[Run]: ...            # newest first, .tally, no items
        def run(self, run_id: int) -> Optional[Run]: ...             # with items and approvals
        def attempts(self, run: Run) -> List[Run]: ...               # the occurrence's runs + approval runs, oldest first
        def customers_lines(self, customers: Sequence[str], since: datetime
                            ) -> Dict[str, List[Tuple[Run, Item]]]: ...              # each oldest first
        def sku_totals(self, since: datetime) -> List[Tuple[Run, Dict[str, int]]]: ...           # oldest first

    build(view, out_dir, *, zone, now, days=60, account_name="") -> List[Path]
        Every page of the last ``days`` days; returns the files written (unchanged ones are not).
    update(view, out_dir, run_id, *, zone, now, days=60, account_name="") -> List[Path]
        After one run: the index, that run's page and CSV, its other attempts' pages, and the
        pages of the customers it touched; returns the files written.
    run_page_path(run_id) -> "runs/000042.html"     run_csv_path(run_id) -> "runs/000042.csv"
    run_page_url(site_url, run_id) -> site_url + "/runs/000042.html" (the email's link)
    customer_page_path(customer) -> "customers/<readable>-<sha256 prefix>.html"
    SiteError   # raised (a one-line message) when a file or directory cannot be written

``zone`` is the account's zone (every time is shown in it), ``now`` an aware
datetime (the window is ``now - days`` .. ``now``; only the index shows
``now`` itself, so run and customer pages do not change when nothing
happened). Errors: :class:`SiteError` for the file system; whatever the view
raises passes through. A run must not fail because of the site: the caller
catches, and reports once.

Importing this package is cheap: Jinja2 and the renderers load on the first
:func:`build` or :func:`update`.
"""

from __future__ import annotations

from datetime import datetime, tzinfo
from pathlib import Path
from typing import List

from psabill.site.errors import SiteError
from psabill.site.paths import customer_page_path, customer_slug, run_csv_path, run_page_path, run_page_url
from psabill.site.view import SiteView

__all__ = ["SiteView", "SiteError", "build", "update", "run_page_path", "run_page_url", "run_csv_path",
           "customer_page_path", "customer_slug"]


def build(view: SiteView, out_dir: Path, *, zone: tzinfo, now: datetime, days: int = 60,
          account_name: str = "") -> List[Path]:
    """Rebuild every page of the last ``days`` days under ``out_dir``; return the files written."""
    from psabill.site import builder  # Jinja and the pages: not for a caller that wants only the paths

    return builder.build(view, out_dir, zone=zone, now=now, days=days, account_name=account_name)


def update(view: SiteView, out_dir: Path, run_id: int, *, zone: tzinfo, now: datetime, days: int = 60,
           account_name: str = "") -> List[Path]:
    """Write the pages run ``run_id`` changed under ``out_dir``; return the files written."""
    from psabill.site import builder  # as in build

    return builder.update(view, out_dir, run_id, zone=zone, now=now, days=days, account_name=account_name)

