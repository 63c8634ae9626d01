"""Headless Chromium for the page tests: Debian's package driven by Playwright (never `playwright install`).

:func:`launch` yields a browser; without chromium or Playwright the test is
skipped, except under CI (``CI`` set, as .ci/run sets it), where it fails: a
browser test that silently skips on the CI box proves nothing.
"""

from __future__ import annotations

import os
import shutil
from typing import Any, Iterator

import pytest

CHROMIUM = os.environ.get("PSABILL_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run"]

# Every element with its own text: its colour against the first opaque background found walking up
# the tree (the same check as tests/test_email_browser.py).
CONTRAST_JS = """
() => {
  const parse = (c) => { const m = c.match(/rgba?\\(([^)]+)\\)/); if (!m) return null;
    const p = m[1].split(/[ ,\\/]+/).filter(Boolean).map(Number);
    return {r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1}; };
  const lum = (c) => { const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(c.r) + 0.7152 * f(c.g) + 0.0722 * f(c.b); };
  const background = (el) => { for (let e = el; e; e = e.parentElement) {
      const c = parse(getComputedStyle(e).backgroundColor); if (c && c.a > 0) return c; }
    return parse(getComputedStyle(document.documentElement).backgroundColor) || {r: 255, g: 255, b: 255, a: 1}; };
  const out = [];
  for (const el of document.body.querySelectorAll('*')) {
    if (el.closest('svg') || !el.getClientRects().length) continue;
    const own = Array.from(el.childNodes).some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!own) continue;
    const fg = parse(getComputedStyle(el).color);
    const bg = background(el);
    const [hi, lo] = [lum(fg), lum(bg)].sort((a, b) => b - a);
    out.push({tag: el.tagName, text: el.textContent.trim().slice(0, 40), ratio: (hi + 0.05) / (lo + 0.05),
              fg: getComputedStyle(el).color, bg: `rgb(${bg.r}, ${bg.g}, ${bg.b})`});
  }
  return out;
}
"""


def missing(why: str) -> None:
    """Skip the test, or fail it under CI."""
    if os.environ.get("CI"):
        pytest.fail(f"{why} (CI is set, so browser tests must run)", pytrace=False)
    pytest.skip(why)


def launch() -> Iterator[Any]:
    """A Chromium browser for a module-scoped fixture (``yield from launch()``)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("playwright is not installed (pip install playwright; never `playwright install`)")
        return
    if not os.path.exists(CHROMIUM):
        missing(f"chromium is not installed at {CHROMIUM} (apt-get install chromium; .ci/run does)")
        return
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            yield browser
        finally:
            browser.close()
