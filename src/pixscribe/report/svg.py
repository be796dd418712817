"""Histograms as inline SVG: a few bars with axis labels, no plotting library in the page."""

from __future__ import annotations

from typing import Any

from markupsafe import Markup, escape

W, H, PAD_L, PAD_B, PAD_T = 420, 170, 44, 34, 10


def _fmt(x: float) -> str:
    if x >= 100 or float(x).is_integer():
        return f"{x:.0f}"
    return f"{x:.2g}" if x < 1 else f"{x:.1f}"


def histogram(h: dict[str, Any] | None, xlabel: str, title: str) -> Markup:
    """``h`` from :func:`pixscribe.report.stats._histogram` as an SVG bar chart."""
    if not h or not h["counts"]:
        return Markup("")
    counts, width = h["counts"], h["width"]
    peak = max(counts) or 1
    n = len(counts)
    bw = (W - PAD_L - 6) / n
    plot_h = H - PAD_B - PAD_T
    bars = []
    for i, c in enumerate(counts):
        lo = i * width
        last = h["overflow"] and i == n - 1
        rng = f"≥ {_fmt(lo)}" if last else (_fmt(lo) if h["integer"] and width == 1 else f"{_fmt(lo)}–{_fmt(lo + width)}")
        bh = plot_h * c / peak
        bars.append(
            f'<rect class="bar" x="{PAD_L + i * bw + 1:.1f}" y="{PAD_T + plot_h - bh:.1f}" width="{max(bw - 2, 1):.1f}" '
            f'height="{bh:.1f}"><title>{escape(rng)}: {c}</title></rect>')
    ticks = [f'<text class="tick" x="{PAD_L - 4}" y="{PAD_T + 4}" text-anchor="end">{peak}</text>',
             f'<text class="tick" x="{PAD_L - 4}" y="{PAD_T + plot_h}" text-anchor="end">0</text>']
    for i in (0, n // 2, n - 1) if n > 2 else range(n):
        label = f"≥{_fmt(i * width)}" if (h["overflow"] and i == n - 1) else _fmt(i * width)
        ticks.append(f'<text class="tick" x="{PAD_L + (i + 0.5) * bw:.1f}" y="{H - PAD_B + 14}" '
                     f'text-anchor="middle">{escape(label)}</text>')
    return Markup(
        f'<svg class="hist" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{escape(title)}">'
        f'<line class="axis" x1="{PAD_L}" y1="{PAD_T + plot_h}" x2="{W - 4}" y2="{PAD_T + plot_h}"/>'
        + "".join(bars) + "".join(ticks)
        + f'<text class="xlabel" x="{(W + PAD_L) / 2:.0f}" y="{H - 4}" text-anchor="middle">{escape(xlabel)}</text>'
        "</svg>")
