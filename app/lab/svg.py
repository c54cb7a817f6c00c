"""Small, self-contained SVG charts for the lab: line plots, box plots, histograms and tuning-curve grids.

Drawn by hand rather than with matplotlib: a few kilobytes of text, crisp at any size, no fonts or scripts to
load, and only presentation attributes (no ``style``), so a strict Content-Security-Policy allows them inline
or as ``<img>``. Every chart has a ``<title>`` and a ``<desc>`` for screen readers. Colours are Okabe & Ito's
palette, distinguishable with the common colour-vision deficiencies.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape

import numpy as np

PALETTE = ("#0072B2", "#D55E00", "#009E73", "#E69F00", "#CC79A7", "#56B4E9", "#000000")
_FONT = 'font-family="system-ui, sans-serif"'
_INK = "#222222"
_GRID = "#dddddd"
_MUTED = "#666666"


@dataclass(frozen=True)
class Series:
    """One line of a line plot; ``None`` values leave a gap."""

    name: str
    values: Sequence[float | None]
    colour: str = PALETTE[0]
    dashed: bool = False


@dataclass(frozen=True)
class _Frame:
    width: float
    height: float
    left: float
    right: float
    top: float
    bottom: float

    @property
    def inner_width(self) -> float:
        return self.width - self.left - self.right

    @property
    def inner_height(self) -> float:
        return self.height - self.top - self.bottom


def _number(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".") if math.isfinite(value) else "0"


def _text(
    x: float,
    y: float,
    content: str,
    *,
    size: int = 12,
    anchor: str = "start",
    colour: str = _INK,
    rotate: float | None = None,
    weight: str | None = None,
) -> str:
    transform = f' transform="rotate({_number(rotate)} {_number(x)} {_number(y)})"' if rotate is not None else ""
    bold = f' font-weight="{weight}"' if weight else ""
    return (
        f'<text x="{_number(x)}" y="{_number(y)}" font-size="{size}" text-anchor="{anchor}" fill="{colour}"'
        f"{bold}{transform}>{escape(content)}</text>"
    )


def _line(x1: float, y1: float, x2: float, y2: float, colour: str, width: float = 1.0, dashed: bool = False) -> str:
    dash = ' stroke-dasharray="6 4"' if dashed else ""
    return (
        f'<line x1="{_number(x1)}" y1="{_number(y1)}" x2="{_number(x2)}" y2="{_number(y2)}" '
        f'stroke="{colour}" stroke-width="{_number(width)}"{dash}/>'
    )


def _label_room(labels: Sequence[str]) -> tuple[float, float]:
    # Category labels are drawn rotated by 35°, ending under their tick: (height below the axis, width to its left).
    longest = max((len(label) for label in labels), default=0) * 0.56 * 11
    return 24 + longest * math.sin(math.radians(35)), longest * math.cos(math.radians(35))


def _wrap(text: str | None, width_px: float, size: int = 11) -> list[str]:
    # About 0.56 em per character in a sans-serif face: enough to keep notes inside the picture.
    if not text:
        return []
    limit = max(20, int(width_px / (0.56 * size)))
    lines: list[str] = []
    current = ""
    for word in text.split():
        if current and len(current) + 1 + len(word) > limit:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    return [*lines, current] if current else lines


def _notes(frame: _Frame, lines: list[str]) -> list[str]:
    first = frame.height - 8 - 15 * (len(lines) - 1)
    return [_text(frame.left, first + 15 * index, line, size=11, colour=_MUTED) for index, line in enumerate(lines)]


def _legend(x: float, y: float, label: str, colour: str, dashed: bool = False) -> list[str]:
    return [_line(x, y, x + 22, y, colour, 2, dashed), _text(x + 28, y + 4, label, size=11)]


def _document(frame: _Frame, title: str, description: str, body: list[str]) -> str:
    return "".join(
        [
            f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_number(frame.width)} {_number(frame.height)}" '
            f'width="{_number(frame.width)}" height="{_number(frame.height)}" role="img" {_FONT}>',
            f"<title>{escape(title)}</title><desc>{escape(description)}</desc>",
            f'<rect width="{_number(frame.width)}" height="{_number(frame.height)}" fill="#ffffff"/>',
            _text(frame.left, 20, title, size=14, weight="600"),
            *body,
            "</svg>",
        ]
    )


def _y_axis(
    frame: _Frame, low: float, high: float, label: str, ticks: int = 5
) -> tuple[list[str], Callable[[float], float]]:
    span = (high - low) or 1.0

    def to_y(value: float) -> float:
        return frame.top + frame.inner_height * (1 - (value - low) / span)

    parts = []
    for index in range(ticks + 1):
        value = low + span * index / ticks
        y = to_y(value)
        parts.append(
            f'<line x1="{_number(frame.left)}" y1="{_number(y)}" x2="{_number(frame.width - frame.right)}" '
            f'y2="{_number(y)}" stroke="{_GRID}" stroke-width="1"/>'
        )
        parts.append(_text(frame.left - 6, y + 4, _number(value), size=11, anchor="end", colour=_MUTED))
    middle = frame.top + frame.inner_height / 2
    parts.append(_text(14, middle, label, size=12, anchor="middle", rotate=-90))
    return parts, to_y


def _x_labels(frame: _Frame, labels: Sequence[str], positions: Sequence[float]) -> list[str]:
    base = frame.height - frame.bottom + 12
    return [
        _text(x, base, label, size=11, anchor="end", rotate=-35, colour=_INK)
        for x, label in zip(positions, labels, strict=True)
    ]


def line_plot(
    x_labels: Sequence[str],
    series: Sequence[Series],
    *,
    title: str,
    y_label: str,
    y_range: tuple[float, float] = (0.0, 1.0),
    note: str | None = None,
) -> str:
    """Values against ordered categories (layers, stem to head), one polyline per series, with a legend."""
    below, left_of = _label_room(x_labels[:1])
    below = max(below, _label_room(x_labels)[0])
    left = max(64.0, left_of + 16)
    notes = _wrap(note, 720 - left - 16)
    frame = _Frame(720, 310 + below + 15 * len(notes), left, 210, 36, below + 15 * len(notes) + 8)
    low, high = y_range
    body, to_y = _y_axis(frame, low, high, y_label)
    count = len(x_labels)
    step = frame.inner_width / max(count - 1, 1)
    xs = [frame.left + step * index for index in range(count)]
    body += _x_labels(frame, x_labels, xs)
    for number, line in enumerate(series):
        dash = ' stroke-dasharray="6 4"' if line.dashed else ""
        segment: list[str] = []
        segments: list[list[str]] = []
        for x, value in zip(xs, line.values, strict=True):
            if value is None or not math.isfinite(value):
                if segment:
                    segments.append(segment)
                segment = []
                continue
            clipped = min(max(value, low), high)
            segment.append(f"{_number(x)},{_number(to_y(clipped))}")
            body.append(
                f'<circle cx="{_number(x)}" cy="{_number(to_y(clipped))}" r="3.5" fill="{line.colour}">'
                f"<title>{escape(line.name)}: {escape(_number(value))}</title></circle>"
            )
        if segment:
            segments.append(segment)
        for points in segments:
            body.append(
                f'<polyline points="{" ".join(points)}" fill="none" stroke="{line.colour}" stroke-width="2"{dash}/>'
            )
        body += _legend(
            frame.width - frame.right + 14, frame.top + 10 + 20 * number, line.name, line.colour, line.dashed
        )
    body += _notes(frame, notes)
    description = "; ".join(
        f"{line.name}: "
        + ", ".join(
            f"{label} {_number(v) if v is not None else 'n/a'}" for label, v in zip(x_labels, line.values, strict=True)
        )
        for line in series
    )
    return _document(frame, title, description, body)


def box_plot(
    groups: Sequence[tuple[str, Sequence[float]]],
    *,
    title: str,
    y_label: str,
    y_range: tuple[float, float] = (0.0, 1.0),
    threshold: float | None = None,
    threshold_label: str | None = None,
    captions: Sequence[str] | None = None,
    note: str | None = None,
) -> str:
    """One box (quartiles, median, whiskers to the 5th and 95th percentiles) per group, with every value drawn as
    a faint dot beside it, an optional dashed threshold line and a caption under each box."""
    labels = [label for label, _ in groups]
    below = _label_room(labels)[0]
    step = 64.0
    left = max(64.0, _label_room(labels[:1])[1] - step / 2 + 16)
    width = max(640.0, left + 24 + step * len(groups))
    notes = _wrap(note, width - 80)
    frame = _Frame(width, 340 + below + 15 * len(notes), left, 24, 76, below + 15 * len(notes) + 8)
    low, high = y_range
    body, to_y = _y_axis(frame, low, high, y_label)
    step = frame.inner_width / max(len(groups), 1)
    centres = [frame.left + step * (index + 0.5) for index in range(len(groups))]
    half = min(16.0, step * 0.3)
    summaries = []
    for index, ((label, raw), x) in enumerate(zip(groups, centres, strict=True)):
        values = np.asarray([v for v in raw if v is not None and math.isfinite(v)], dtype=float)
        colour = PALETTE[0]
        if values.size:
            p5, q1, median, q3, p95 = np.percentile(values, [5, 25, 50, 75, 95])
            summaries.append(f"{label}: median {_number(float(median))}, n {values.size}")
            body.append(
                f'<line x1="{_number(x)}" y1="{_number(to_y(p5))}" x2="{_number(x)}" y2="{_number(to_y(p95))}" '
                f'stroke="{_INK}" stroke-width="1"/>'
            )
            body.append(
                f'<rect x="{_number(x - half)}" y="{_number(to_y(q3))}" width="{_number(2 * half)}" '
                f'height="{_number(max(1.0, to_y(q1) - to_y(q3)))}" fill="{colour}" fill-opacity="0.25" '
                f'stroke="{colour}" stroke-width="1.5"/>'
            )
            body.append(
                f'<line x1="{_number(x - half)}" y1="{_number(to_y(median))}" x2="{_number(x + half)}" '
                f'y2="{_number(to_y(median))}" stroke="{_INK}" stroke-width="2.5"/>'
            )
            # Dots beside the box, spread deterministically so the picture is the same on every request.
            offsets = (np.arange(values.size) * 0.618034) % 1.0
            for value, offset in zip(values[:400], offsets[:400], strict=False):
                y = to_y(min(max(value, low), high))
                body.append(
                    f'<circle cx="{_number(x + half + 4 + 10 * offset)}" cy="{_number(y)}" '
                    f'r="1.6" fill="{colour}" fill-opacity="0.45"/>'
                )
        else:
            summaries.append(f"{label}: no values")
        base = frame.height - frame.bottom + 14
        body.append(_text(x, base, label, size=11, anchor="end", rotate=-35))
        if captions is not None:
            body.append(_text(x, frame.top - 8, captions[index], size=11, anchor="middle", colour=_INK))
    if threshold is not None:
        y = to_y(threshold)
        body.append(_line(frame.left, y, frame.width - frame.right, y, PALETTE[1], 1.5, dashed=True))
        if threshold_label:
            body += _legend(frame.left, 42, threshold_label, PALETTE[1], dashed=True)
    body += _notes(frame, notes)
    return _document(frame, title, "; ".join(summaries), body)


def histogram(
    values: Sequence[float],
    *,
    title: str,
    x_label: str,
    x_range: tuple[float, float] = (0.0, 1.0),
    bins: int = 20,
    threshold: float | None = None,
    threshold_label: str | None = None,
    note: str | None = None,
) -> str:
    """Counts of ``values`` in equal bins over ``x_range`` (values outside are put in the end bins)."""
    notes = _wrap(note, 560 - 72)
    frame = _Frame(560, 340 + 15 * len(notes), 56, 24, 56, 64 + 15 * len(notes))
    low, high = x_range
    clean = np.clip(np.asarray([v for v in values if math.isfinite(v)], dtype=float), low, high)
    counts, edges = np.histogram(clean, bins=bins, range=(low, high))
    top = max(1, int(counts.max()) if counts.size else 1)
    body, to_y = _y_axis(frame, 0, top, "channels", ticks=min(top, 5))

    def to_x(value: float) -> float:
        return frame.left + frame.inner_width * (value - low) / ((high - low) or 1.0)

    for count, start, stop in zip(counts, edges[:-1], edges[1:], strict=True):
        if count:
            body.append(
                f'<rect x="{_number(to_x(start) + 0.5)}" y="{_number(to_y(count))}" '
                f'width="{_number(max(0.5, to_x(stop) - to_x(start) - 1))}" '
                f'height="{_number(to_y(0) - to_y(count))}" fill="{PALETTE[0]}" fill-opacity="0.8">'
                f"<title>{_number(start)}–{_number(stop)}: {int(count)}</title></rect>"
            )
    for tick in np.linspace(low, high, 6):
        body.append(
            _text(
                to_x(tick),
                frame.height - frame.bottom + 16,
                _number(float(tick)),
                size=11,
                anchor="middle",
                colour=_MUTED,
            )
        )
    body.append(
        _text(frame.left + frame.inner_width / 2, frame.height - frame.bottom + 34, x_label, size=12, anchor="middle")
    )
    if threshold is not None:
        x = to_x(threshold)
        body.append(_line(x, frame.top, x, to_y(0), PALETTE[1], 1.5, dashed=True))
        if threshold_label:
            body += _legend(frame.left, 40, threshold_label, PALETTE[1], dashed=True)
    body += _notes(frame, notes)
    description = f"{clean.size} values; " + ", ".join(
        f"{_number(a)}–{_number(b)}: {int(c)}" for c, a, b in zip(counts, edges[:-1], edges[1:], strict=True) if c
    )
    return _document(frame, title, description, body)


def polar_grid(
    panels: Sequence[tuple[str, Sequence[float], Sequence[float]]],
    *,
    title: str,
    columns: int = 6,
    note: str | None = None,
) -> str:
    """Small polar plots of orientation tuning curves, one per (caption, orientations in degrees, responses).

    Orientation repeats every 180°, so each curve is drawn at θ and θ + 180° (a symmetric "bow tie"); each
    panel is scaled to its own peak. Angles follow the stimulus convention: 0° horizontal, counter-clockwise.
    """
    size = 118
    rows = max(1, math.ceil(len(panels) / columns))
    notes = _wrap(note, columns * size)
    frame = _Frame(columns * size + 16, rows * (size + 18) + 48 + 15 * len(notes), 8, 8, 36, 8)
    body: list[str] = []
    radius = size / 2 - 12
    summaries = []
    for index, (caption, orientations, responses) in enumerate(panels):
        row, column = divmod(index, columns)
        cx = frame.left + column * size + size / 2
        cy = frame.top + row * (size + 18) + size / 2 + 4
        body.append(
            f'<circle cx="{_number(cx)}" cy="{_number(cy)}" r="{_number(radius)}" fill="none" stroke="{_GRID}"/>'
        )
        body.append(_line(cx - radius, cy, cx + radius, cy, _GRID))
        body.append(_line(cx, cy - radius, cx, cy + radius, _GRID))
        peak = max((float(r) for r in responses), default=0.0)
        if peak > 0:
            points = []
            for turn in (0.0, 180.0):
                for angle, response in zip(orientations, responses, strict=True):
                    theta = math.radians(float(angle) + turn)
                    length = radius * float(response) / peak
                    points.append((cx + length * math.cos(theta), cy - length * math.sin(theta)))
            path = " ".join(f"{_number(x)},{_number(y)}" for x, y in points)
            body.append(
                f'<polygon points="{path}" fill="{PALETTE[0]}" fill-opacity="0.2" stroke="{PALETTE[0]}" '
                f'stroke-width="1.5"/>'
            )
        body.append(_text(cx, cy + size / 2 + 6, caption, size=10, anchor="middle"))
        summaries.append(caption)
    body += _notes(frame, notes)
    return _document(frame, title, "; ".join(summaries), body)
