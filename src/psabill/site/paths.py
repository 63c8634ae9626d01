"""Where each page of the history site lives: the one naming convention, and the URL the email links to.

* ``index.html``: the runs of the window and what needs action.
* ``runs/000042.html`` and ``runs/000042.csv``: one run's page and its items as CSV
  (the id zero-padded to six digits, wider when it needs more).
* ``customers/<readable>-<hash>.html``: one customer's lines over time.

A customer slug is safe for any name, hostile ones included: a readable part
(the cleaned name folded to lower-case ASCII letters and digits, at most 40
characters, ``customer`` when nothing is left) and the first 12 hex digits of
the SHA-256 of the exact name, so names that fold alike ("ACME", "Acme",
"Ácme") still get distinct files, on case-insensitive file systems too. The
readable part comes from the cleaned name, so a registered secret inside a
name is never spelled into a file name.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from typing import Optional

from psabill.text import clean

INDEX = "index.html"
RUNS_DIR = "runs"
CUSTOMERS_DIR = "customers"
SLUG_READABLE = 40
SLUG_HASH = 12

_NOT_SLUG = re.compile(r"[^a-z0-9]+")


def run_page_path(run_id: int) -> str:
    """The run's page, relative to the site dir: ``runs/000042.html``."""
    return f"{RUNS_DIR}/{int(run_id):06d}.html"


def run_csv_path(run_id: int) -> str:
    """The run's items as CSV, next to its page: ``runs/000042.csv``."""
    return f"{RUNS_DIR}/{int(run_id):06d}.csv"


def run_page_url(site_url: Optional[str], run_id: int) -> str:
    """The URL of the run's page under ``[history] site_url`` (the URL the site dir is served at).

    ``run_page_url("https://billing.example.com/psabill/", 42)`` is
    ``https://billing.example.com/psabill/runs/000042.html``. Without a
    ``site_url`` it is the relative path (``runs/000042.html``).
    """
    path = run_page_path(run_id)
    if not site_url:
        return path
    return site_url.rstrip("/") + "/" + path


def customer_slug(customer: str) -> str:
    """A file-name-safe, collision-free slug for ``customer``: ``acme-co-1f2e3d4c5b6a``."""
    digest = hashlib.sha256(str(customer).encode("utf-8", "surrogatepass")).hexdigest()[:SLUG_HASH]
    folded = unicodedata.normalize("NFKD", clean.clean(customer)).encode("ascii", "ignore").decode("ascii")
    readable = _NOT_SLUG.sub("-", folded.lower()).strip("-")[:SLUG_READABLE].strip("-") or "customer"
    return f"{readable}-{digest}"


def customer_page_path(customer: str) -> str:
    """The customer's page, relative to the site dir: ``customers/acme-co-1f2e3d4c5b6a.html``."""
    return f"{CUSTOMERS_DIR}/{customer_slug(customer)}.html"
