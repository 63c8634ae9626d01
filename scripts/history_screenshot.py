#!/usr/bin/env python3
"""Build a demo history site and save a screenshot of its index (docs/history.png) with Chromium.

The site is made from ``tests/support/sites.year_of_runs``: an MSP's last 90 days
of daily runs at 400 customers, with a plan held for approval on the last day,
a customer whose cancelled agreement fails every run, a new customer not mapped
yet, and earlier held plans approved. It is written to a temp dir (nothing of
yours is touched) and photographed in headless Chromium (Debian's ``chromium``
package) through Playwright; without Playwright it falls back to
``chromium --headless --screenshot``.

    .venv/bin/python scripts/history_screenshot.py                       # docs/history.png
    .venv/bin/python scripts/history_screenshot.py --scheme dark --width 375 --out /tmp/phone.png
    .venv/bin/python scripts/history_screenshot.py --page run --keep /tmp/demo-site
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

from psabill import site  # noqa: E402
from support.sites import ZONE, FakeSiteView, year_of_runs  # noqa: E402

CHROMIUM = os.environ.get("PSABILL_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def demo_site(out: Path, customers: int, days: int) -> Path:
    """Build the demo site into ``out``; return the index."""
    runs = year_of_runs(customers=customers, days=days, seed=11)
    view = FakeSiteView(runs)
    now = runs[-1].started_at + timedelta(minutes=4)
    site.build(view, out, zone=ZONE, now=now, days=60, account_name="Example MSP")
    return out / "index.html"


def pick(out: Path, which: str) -> Path:
    if which == "index":
        return out / "index.html"
    newest = sorted((out / "runs").glob("*.html"))[-1]
    if which == "run":
        return newest
    html = newest.read_text(encoding="utf-8")
    start = html.index('id="o-failed"') if 'id="o-failed"' in html else html.index('id="items"')
    href = html[html.index('href="../customers/', start) + len('href="../'):]
    return out / href[:href.index('"')]


def shoot(page_path: Path, png: Path, width: int, height: int, scheme: str) -> None:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        flags = [f"--window-size={width},{height}", f"--screenshot={png}", "--hide-scrollbars"]
        if scheme == "dark":
            flags.append("--force-dark-mode")
        subprocess.run([CHROMIUM, *ARGS, *flags, page_path.as_uri()], check=True, capture_output=True)
        return
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            context = browser.new_context(viewport={"width": width, "height": height}, java_script_enabled=False,
                                          device_scale_factor=1)
            page = context.new_page()
            page.emulate_media(color_scheme=scheme)
            page.goto(page_path.as_uri(), wait_until="load")
            page.screenshot(path=str(png))
        finally:
            browser.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "history.png")
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--height", type=int, default=1800, help="the first screens only: keeps the PNG small")
    parser.add_argument("--scheme", choices=("light", "dark"), default="light")
    parser.add_argument("--page", choices=("index", "run", "customer"), default="index")
    parser.add_argument("--customers", type=int, default=400)
    parser.add_argument("--days", type=int, default=90, help="days of runs in the demo ledger (the site shows 60)")
    parser.add_argument("--keep", type=Path, default=None, help="build the site here and keep it")
    options = parser.parse_args()
    options.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="psabill-history-shot-") as tmp:
        out = options.keep or Path(tmp) / "site"
        demo_site(out, options.customers, options.days)
        shoot(pick(out, options.page), options.out.resolve(), options.width, options.height, options.scheme)
    print(f"wrote {options.out} ({options.out.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
