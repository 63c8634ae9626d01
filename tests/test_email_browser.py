"""The results email's HTML in a real browser: headless Chromium (Debian's package) via Playwright.

A large run (1,500 customers x 2 SKUs, 2 failures, 1 unmapped) at phone and
desktop widths, in light and dark colour schemes: nothing scrolls sideways,
what needs action is on the first screen above the change table, and every
piece of text is readable against the background it is actually drawn on
(WCAG contrast >= 4.5). .ci/run installs chromium; without it this is skipped (and fails
under CI).
"""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from support.browser import launch
from support.reports import large_report

from psabill.notify import templates


# Every element with its own text: its colour against the first opaque background
# found walking up the tree (the canvas is white, or the page's own dark colour).
CONTRAST_JS = """
() => {
  const parse = (c) => { const m = c.match(/rgba?\\(([^)]+)\\)/); if (!m) return null;
    const p = m[1].split(/[ ,\\/]+/).filter(Boolean).map(Number);
    return {r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1}; };
  const lum = (c) => { const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(c.r) + 0.7152 * f(c.g) + 0.0722 * f(c.b); };
  const background = (el) => { for (let e = el; e; e = e.parentElement) {
      const c = parse(getComputedStyle(e).backgroundColor); if (c && c.a > 0) return c; }
    return null; };
  const out = [];
  for (const el of document.body.querySelectorAll('*')) {
    const own = Array.from(el.childNodes).some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!own) continue;
    const fg = parse(getComputedStyle(el).color);
    const bg = background(el);
    if (!bg) { out.push({tag: el.tagName, text: el.textContent.slice(0, 40), ratio: 0, why: 'no background'}); continue; }
    const [hi, lo] = [lum(fg), lum(bg)].sort((a, b) => b - a);
    out.push({tag: el.tagName, text: el.textContent.trim().slice(0, 40), ratio: (hi + 0.05) / (lo + 0.05),
              fg: getComputedStyle(el).color, bg: `rgb(${bg.r}, ${bg.g}, ${bg.b})`});
  }
  return out;
}
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from launch()  # fails, never skips, under CI when Playwright or Chromium is missing


@pytest.fixture(scope="module")
def html() -> str:
    return templates.render(large_report()).html


def open_page(browser: Any, html: str, width: int, scheme: str) -> Any:
    page = browser.new_page(viewport={"width": width, "height": 800})
    page.emulate_media(color_scheme=scheme)
    page.set_content(html, wait_until="load")
    assert page.evaluate("matchMedia('(prefers-color-scheme: dark)').matches") == (scheme == "dark")
    return page


def assert_fits_and_readable(page: Any, width: int, scheme: str) -> None:
    scroll, inner = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert scroll <= inner, f"sideways scrolling at {width}px: {scroll}px of content"
    checked = page.evaluate(CONTRAST_JS)
    assert len(checked) > 5
    poor = [c for c in checked if c["ratio"] < 4.5]
    assert not poor, poor[:5]
    page_bg = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert page_bg == ("rgb(13, 17, 23)" if scheme == "dark" else "rgb(255, 255, 255)")


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("width", [375, 1024])
def test_large_run_email_is_readable_in_a_real_browser(browser: Any, html: str, width: int, scheme: str) -> None:
    page = open_page(browser, html, width, scheme)
    try:
        assert_fits_and_readable(page, width, scheme)
        top = "(sel) => document.querySelector(sel).getBoundingClientRect().top + window.scrollY"
        failures, changes = page.evaluate(top, "#failures"), page.evaluate(top, "#changes")
        assert failures < changes
        assert failures < 700, f"the failures start {failures}px down: below the first screen"
        assert len(page.evaluate(CONTRAST_JS)) > 50  # headings, lists, every table row, details
    finally:
        page.close()


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_an_aborted_dry_run_is_readable_on_a_phone(browser: Any, scheme: str) -> None:
    """The action and dry-run blocks have their own colours: check them too."""
    report = large_report(customers=10)
    report.trigger, report.status, report.items = "dry-run", "aborted", []
    report.message = "PSA login failed: " + "https://msp.example.com/v4_6_release/apis/3.0/" + "y" * 200
    page = open_page(browser, templates.render(report, history_url="https://billing.example.com/" + "z" * 150 + "/{run_id}").html,
                     375, scheme)
    try:
        assert_fits_and_readable(page, 375, scheme)
        assert page.evaluate("document.querySelector('#action').getBoundingClientRect().top") < 300
    finally:
        page.close()
