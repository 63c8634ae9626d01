#!/usr/bin/env python3
"""Render the demo results email's HTML and save a screenshot (docs/email.png) with Chromium.

Runs ``psabill demo`` in a temp dir (sandbox PSA on loopback; nothing of yours
is touched), takes the HTML part of the email it wrote, and photographs it in
headless Chromium (Debian's ``chromium`` package) through Playwright; without
Playwright it falls back to ``chromium --headless --screenshot``.

    .venv/bin/python scripts/email_screenshot.py                 # docs/email.png
    .venv/bin/python scripts/email_screenshot.py --scheme dark --width 375 --out /tmp/phone.png
"""

from __future__ import annotations

import argparse
import email
import os
import shutil
import subprocess
import sys
import tempfile
from email import policy
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("PSABILL_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def demo_html(work: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PSABILL_")}
    env["HOME"] = str(work / "home")  # the demo must not see (or touch) a real config
    subprocess.run([sys.executable, "-m", "psabill", "demo", "--dir", str(work / "demo")],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    (eml,) = sorted((work / "demo" / "outbox").glob("*.eml"))
    message = email.message_from_bytes(eml.read_bytes(), policy=policy.default)
    body = message.get_body(("html",))
    assert body is not None, "the demo email has no HTML part"
    return str(body.get_content())


def shoot(html: str, out: Path, width: int, height: int, scheme: str, work: Path) -> None:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        page = work / "email.html"
        page.write_text(html, encoding="utf-8")
        flags = [f"--window-size={width},{height}", f"--screenshot={out}", "--hide-scrollbars"]
        if scheme == "dark":
            flags.append("--force-dark-mode")
        subprocess.run([CHROMIUM, *ARGS, *flags, page.as_uri()], check=True, capture_output=True)
        return
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.emulate_media(color_scheme=scheme)
            page.set_content(html, wait_until="load")
            page.screenshot(path=str(out))
        finally:
            browser.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "email.png")
    parser.add_argument("--width", type=int, default=720)
    parser.add_argument("--height", type=int, default=600, help="the first screen only: keeps the PNG small")
    parser.add_argument("--scheme", choices=("light", "dark"), default="light")
    options = parser.parse_args()
    options.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="psabill-shot-") as tmp:
        work = Path(tmp)
        shoot(demo_html(work), options.out.resolve(), options.width, options.height, options.scheme, work)
    print(f"wrote {options.out} ({options.out.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
