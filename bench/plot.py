"""A small SVG chart of scale curves, written by hand (no plotting dependency).

One panel per curve, side by side: size on a log x axis, the figure on a
linear y axis from zero, each point labelled with its value, and the target
(if any) as a dashed red line, so "flat and under the line" reads at a glance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

__all__ = ["Curve", "render", "write"]

PANEL_W, PANEL_H = 320, 230
LEFT, RIGHT, TOP, BOTTOM = 56, 34, 40, 42


@dataclass(frozen=True)
class Curve:
    """``points`` are (size, figure); ``limit`` draws the target line at that figure."""

    title: str
    x_label: str
    unit: str
    points: Sequence[tuple[float, float]]
    limit: float | None = None
    limit_label: str = ""
    notes: Sequence[str] = field(default_factory=tuple)


def _size(value: float) -> str:
    for factor, suffix in ((1e6, "M"), (1e3, "k")):
        if value >= factor:
            return f"{value / factor:g}{suffix}"
    return f"{value:g}"


def _number(value: float) -> str:
    """Three significant digits, thousands as k: 93.1, 2.56k, 163k."""
    if abs(value) >= 1_000:
        return f"{value / 1_000:.3g}k"
    return f"{value:.3g}"


def _panel(curve: Curve, x0: float) -> list[str]:
    width, height = PANEL_W - LEFT - RIGHT, PANEL_H - TOP - BOTTOM
    left, top = x0 + LEFT, TOP
    out = [f'<text x="{x0 + PANEL_W / 2}" y="18" text-anchor="middle" font-weight="bold">{escape(curve.title)}</text>']
    points = [(x, y) for x, y in curve.points if x > 0]
    if not points:
        return out + [f'<text x="{left}" y="{top + 20}">no data</text>']
    xs = [math.log10(x) for x, _ in points]
    x_lo, x_hi = min(xs), max(xs)
    x_span = (x_hi - x_lo) or 1.0
    y_hi = max([y for _, y in points] + [curve.limit or 0.0]) * 1.15 or 1.0

    def at(x: float, y: float) -> tuple[float, float]:
        return left + (math.log10(x) - x_lo) / x_span * width, top + height - y / y_hi * height

    out.append(f'<rect x="{left}" y="{top}" width="{width}" height="{height}" fill="none" stroke="#999"/>')
    for tick in (0.0, y_hi / 2, y_hi):
        _, ty = at(points[0][0], tick)
        out.append(f'<text x="{left - 4}" y="{ty + 4:.1f}" text-anchor="end">{_number(tick)}</text>')
    for x, _ in points:
        tx, _ = at(x, 0)
        out.append(f'<text x="{tx:.1f}" y="{top + height + 14}" text-anchor="middle">{_size(x)}</text>')
    out.append(f'<text x="{left + width / 2}" y="{top + height + 30}" text-anchor="middle">'
               f'{escape(curve.x_label)} (log)</text>')  # fmt: skip
    out.append(f'<text x="{left}" y="{top - 6}" fill="#555">{escape(curve.unit)}</text>')
    if curve.limit is not None:
        _, ly = at(points[0][0], curve.limit)
        out.append(f'<line x1="{left}" y1="{ly:.1f}" x2="{left + width}" y2="{ly:.1f}" stroke="#c33" '
                   f'stroke-dasharray="5,4"/>')  # fmt: skip
        out.append(f'<text x="{left + width - 2}" y="{ly + 13:.1f}" text-anchor="end" fill="#c33">'
                   f'{escape(curve.limit_label)}</text>')  # fmt: skip
    coords = [at(x, y) for x, y in points]
    path = " ".join(f"{cx:.1f},{cy:.1f}" for cx, cy in coords)
    out.append(f'<polyline points="{path}" fill="none" stroke="#2a6fb0" stroke-width="2"/>')
    for (cx, cy), (_, y) in zip(coords, points):
        out.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="3" fill="#2a6fb0"/>')
        out.append(f'<text x="{cx:.1f}" y="{cy - 7:.1f}" text-anchor="middle">{_number(y)}</text>')
    for index, note in enumerate(curve.notes):
        out.append(f'<text x="{left + 4}" y="{top + 14 + 13 * index}" fill="#555">{escape(note)}</text>')
    return out


def render(curves: Sequence[Curve], title: str = "") -> str:
    """The SVG document for ``curves``, one panel each."""
    width, height = PANEL_W * max(1, len(curves)), PANEL_H + (20 if title else 0)
    body: list[str] = []
    for index, curve in enumerate(curves):
        body.extend(_panel(curve, index * PANEL_W))
    shift = 20 if title else 0
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">')  # fmt: skip
    caption = f'<text x="8" y="14" font-size="12">{escape(title)}</text>' if title else ""
    return "\n".join([head, '<rect width="100%" height="100%" fill="white"/>', caption,
                      f'<g transform="translate(0,{shift})">', *body, "</g>", "</svg>", ""])  # fmt: skip


def write(path: Path, curves: Sequence[Curve], title: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(curves, title), encoding="utf-8")
    return path
