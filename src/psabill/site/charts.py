"""The site's charts: hand-written inline SVG, no script, no external asset.

Each chart is an ``<svg>`` that stretches to its box (``preserveAspectRatio="none"``,
strokes kept ``non-scaling``), coloured by the page's CSS variables so it
follows the light and dark schemes; its labels are HTML around it, so text
never stretches. Every point, bar or step has a ``<title>`` (the browser's
tooltip) and every chart an ``aria-label`` saying what it shows. Each
function returns markup built from numbers and from text the caller already
cleaned and escaped (:class:`psabill.site.fmt.Texts`).

* :func:`seats_chart`: one line per SKU, one point per run (``<polyline>``).
* :func:`changes_chart`: one stacked bar per run (updated, planned, held, failed).
* :func:`mover_bar`: one diverging bar (a customer's change this month).
* :func:`step_chart`: a customer's seats of one SKU at each of its events.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

W = 1000  # the viewBox width every chart is drawn in
H = 100


def _y(value: float, low: float, high: float, top: float = 6, bottom: float = 94) -> float:
    if high == low:
        return (top + bottom) / 2
    return bottom - (value - low) / (high - low) * (bottom - top)


def _xs(count: int) -> List[float]:
    """Evenly spaced x positions, one per run (runs are the unit of this axis, not hours)."""
    if count == 1:
        return [W / 2]
    return [i * W / (count - 1) for i in range(count)]


def _r(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def scale(values: Sequence[float]) -> Tuple[float, float]:
    """A y range around ``values`` with a little headroom; a flat series sits mid-height."""
    low, high = min(values), max(values)
    if high == low:
        return low - 1, high + 1
    pad = (high - low) * 0.08
    return low - pad, high + pad


def seats_chart(values: Sequence[float], tips: Sequence[str], colour: int, label: str) -> str:
    """One SKU's seats: a ``<polyline>`` with exactly one point per value (per run), an area under it,
    and a hit column per run whose ``<title>`` is ``tips[i]`` (escaped HTML)."""
    low, high = scale(values)
    xs = _xs(len(values))
    points = " ".join(f"{_r(x)},{_r(_y(v, low, high))}" for x, v in zip(xs, values))
    area = f"{_r(xs[0])},{H} {points} {_r(xs[-1])},{H}"
    step = W / max(len(values), 1)
    hits = "".join(
        f'<rect x="{_r(max(x - step / 2, 0))}" y="0" width="{_r(step)}" height="{H}"><title>{tip}</title></rect>'
        for x, tip in zip(xs, tips))
    return (f'<svg class="chart seats" viewBox="0 0 {W} {H}" preserveAspectRatio="none" role="img" '
            f'aria-label="{label}">'
            f'<line class="grid" x1="0" y1="6" x2="{W}" y2="6" vector-effect="non-scaling-stroke"/>'
            f'<line class="grid" x1="0" y1="50" x2="{W}" y2="50" vector-effect="non-scaling-stroke"/>'
            f'<line class="grid" x1="0" y1="94" x2="{W}" y2="94" vector-effect="non-scaling-stroke"/>'
            f'<polygon class="area s{colour}" points="{area}"/>'
            f'<polyline class="line s{colour}" points="{points}" vector-effect="non-scaling-stroke"/>'
            f'<g class="hits">{hits}</g></svg>')


#: The stacks of a bar of :func:`changes_chart`, bottom first: (outcome words, CSS class).
STACKS = (("updated", "k-updated"), ("planned", "k-planned"), ("held", "k-held"), ("failed", "k-failed"))


def changes_chart(bars: Sequence[Tuple[Sequence[int], bool, str]], label: str) -> str:
    """Stacked bars, one per run: ``(counts per STACKS entry, run went bad, tip)``; a bad run with
    nothing to stack shows as a short red mark on the baseline."""
    top = max([sum(counts) for counts, _, _ in bars] + [1])
    n = max(len(bars), 1)
    slot = W / n
    width = max(slot * 0.72, 0.6)
    parts: List[str] = [f'<svg class="chart changes" viewBox="0 0 {W} {H}" preserveAspectRatio="none" '
                        f'role="img" aria-label="{label}">',
                        f'<line class="grid" x1="0" y1="{H}" x2="{W}" y2="{H}" vector-effect="non-scaling-stroke"/>']
    for i, (counts, bad, tip) in enumerate(bars):
        x = i * slot + (slot - width) / 2
        parts.append(f"<g><title>{tip}</title>")
        parts.append(f'<rect class="hit" x="{_r(i * slot)}" y="0" width="{_r(slot)}" height="{H}"/>')
        y = float(H)
        for count, (_, css) in zip(counts, STACKS):
            if count <= 0:
                continue
            height = count / top * (H - 4)
            y -= height
            parts.append(f'<rect class="{css}" x="{_r(x)}" y="{_r(y)}" width="{_r(width)}" height="{_r(height)}"/>')
        if bad and sum(counts) == 0:
            parts.append(f'<rect class="k-bad" x="{_r(x)}" y="{H - 8}" width="{_r(width)}" height="8"/>')
        parts.append("</g>")
    parts.append("</svg>")
    return "".join(parts)


def mover_bar(change: int, largest: int, tip: str) -> str:
    """A diverging bar from the middle: right (up) for seats gained, left (down) for seats lost."""
    half = W / 2
    length = abs(change) / max(largest, 1) * (half - 4)
    x = half if change >= 0 else half - length
    css = "k-up" if change >= 0 else "k-down"
    return (f'<svg class="chart mover" viewBox="0 0 {W} 20" preserveAspectRatio="none" role="img" '
            f'aria-label="{tip}"><title>{tip}</title>'
            f'<line class="axis" x1="{_r(half)}" y1="0" x2="{_r(half)}" y2="20" vector-effect="non-scaling-stroke"/>'
            f'<rect class="{css}" x="{_r(x)}" y="3" width="{_r(max(length, 2))}" height="14" rx="2"/></svg>')


def step_chart(points: Sequence[Tuple[float, float]], tips: Sequence[str], colour: int, label: str) -> str:
    """A customer's seats of one SKU: ``(time as a number, seats)`` per event, as steps (seats stay
    what they were until the next event); one hit column per event with its ``<title>``."""
    times = [t for t, _ in points]
    low, high = scale([v for _, v in points])
    first, last = min(times), max(times)
    span = (last - first) or 1.0
    xs = [W / 2] if len(points) == 1 else [(t - first) / span * W for t in times]
    coords: List[str] = []
    for i, ((_, v), x) in enumerate(zip(points, xs)):
        y = _y(v, low, high)
        if i:
            coords.append(f"{_r(x)},{_r(_y(points[i - 1][1], low, high))}")
        coords.append(f"{_r(x)},{_r(y)}")
    if len(points) == 1:
        flat = _r(_y(points[0][1], low, high))
        coords = [f"0,{flat}", f"{W},{flat}"]
    bounds = xs + [W]
    hits = []
    for i, (x, tip) in enumerate(zip(xs, tips)):
        left = 0.0 if i == 0 else (xs[i - 1] + x) / 2
        right = W if i == len(xs) - 1 else (x + bounds[i + 1]) / 2
        hits.append(f'<rect x="{_r(left)}" y="0" width="{_r(max(right - left, 1))}" height="{H}"><title>{tip}</title></rect>')
    return (f'<svg class="chart steps" viewBox="0 0 {W} {H}" preserveAspectRatio="none" role="img" '
            f'aria-label="{label}">'
            f'<line class="grid" x1="0" y1="6" x2="{W}" y2="6" vector-effect="non-scaling-stroke"/>'
            f'<line class="grid" x1="0" y1="94" x2="{W}" y2="94" vector-effect="non-scaling-stroke"/>'
            f'<polyline class="line s{colour}" points="{" ".join(coords)}" vector-effect="non-scaling-stroke"/>'
            f'<g class="hits">{"".join(hits)}</g></svg>')
