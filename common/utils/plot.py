"""Line charts drawn with OpenCV and NumPy: axes, ticks, gridlines, legend.

    plot_box = draw_chart(canvas, (x0, y0, x1, y1), [Series('loss', x, y, PALETTE[0])],
                          title='Training loss', xlabel='epoch', log_y=True)

Charts are drawn into a box of an (H, W, 3) uint8 **BGR** image (``cv2.imwrite`` order), which
is first filled white.
``plot_box = (x0, y0, x1, y1)`` are the pixel columns/rows of the data area's edges: a
point ``(x, y)`` of the axis ranges ``[xlo, xhi] x [ylo, yhi]`` lands at column
``x0 + (x - xlo) / (xhi - xlo) * (x1 - x0)`` and row ``y1 - (y - ylo) / (yhi - ylo) * (y1 - y0)``
(``log10(y)`` and ``log10`` of the range on a log axis).  Non-finite values (and values <= 0
on a log axis) are gaps in a line; a series with one point is drawn as a dot; with no finite
value at all an axis spans [0, 1].
"""
import math
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

BACKGROUND = (255, 255, 255)
GRID = (232, 232, 232)
AXIS = (90, 90, 90)
TEXT = (40, 40, 40)
# Tableau-10 colours (BGR): distinct for most colour vision and in greyscale print.
PALETTE = ((180, 119, 31), (14, 127, 255), (44, 160, 44), (40, 39, 214), (189, 103, 148),
           (75, 86, 140), (194, 119, 227), (127, 127, 127), (34, 189, 188), (207, 190, 23))
FONT = cv2.FONT_HERSHEY_SIMPLEX
TICK_SCALE = 0.42
LABEL_SCALE = 0.48
TITLE_SCALE = 0.6
MARGINS = (78, 40, 22, 46)   # left, top, right, bottom (pixels around the data area; plus the legend)
SUBPIXEL = 4                 # fixed-point bits for anti-aliased drawing


@dataclass(frozen=True)
class Series:
    """One line: ``x``, ``y`` (same length), a BGR ``color``, line ``thickness`` in pixels,
    ``markers`` (a dot at each point) and whether it appears in the legend."""
    label: str
    x: Sequence[float]
    y: Sequence[float]
    color: tuple
    thickness: int = 2
    markers: bool = False
    in_legend: bool = True


def finite_range(values, log=False):
    """``(lo, hi)`` of the finite values (positive ones on a log axis), or None if there are none."""
    values = np.asarray(values, dtype=np.float64).ravel()
    keep = np.isfinite(values) & ((values > 0) if log else True)
    if not keep.any():
        return None
    return float(values[keep].min()), float(values[keep].max())


def padded_range(lo, hi, log=False, pad=0.05):
    """The axis range around data in ``[lo, hi]``: widened by ``pad`` of its span (a factor
    on a log axis); a single value gets a range around it."""
    if log:
        llo, lhi = math.log10(lo), math.log10(hi)
        if lhi - llo < 1e-9:
            llo, lhi = llo - 0.5, lhi + 0.5
        span = lhi - llo
        return 10 ** (llo - pad * span), 10 ** (lhi + pad * span)
    if hi - lo < 1e-12 * max(1.0, abs(lo)):
        half = 0.5 if lo == 0 else abs(lo) * 0.1
        return lo - half, hi + half
    span = hi - lo
    return lo - pad * span, hi + pad * span


def nice_ticks(lo, hi, max_ticks=6):
    """Round tick values (steps of 1, 2 or 5 times a power of ten) inside ``[lo, hi]``."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else []
    raw = (hi - lo) / max(1, max_ticks - 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    value = first
    while value <= hi + 1e-9 * step:
        ticks.append(0.0 if abs(value) < 1e-12 * step else value)
        value = first + len(ticks) * step
    return ticks


def log_ticks(lo, hi):
    """Tick values for a log axis over ``[lo, hi]`` (lo > 0): powers of ten, plus 2x and 5x
    when fewer than three powers fall inside."""
    ticks = [10.0 ** k for k in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)]
    inside = [t for t in ticks if lo <= t <= hi]
    if len(inside) < 3:
        ticks = sorted(t * m for t in ticks for m in (1, 2, 5))
        inside = [t for t in ticks if lo <= t <= hi]
    return inside


def format_tick(value):
    """Short label: ``0.001``, ``25``, ``1.5e+04``."""
    if value == 0:
        return '0'
    magnitude = abs(value)
    if magnitude >= 1e5 or magnitude < 1e-3:
        return f'{value:.0e}'
    return f'{value:.6g}'


def _text(canvas, text, origin, scale=TICK_SCALE, color=TEXT, thickness=1):
    cv2.putText(canvas, text, (int(origin[0]), int(origin[1])), FONT, scale, color, thickness, cv2.LINE_AA)


def _text_size(text, scale=TICK_SCALE, thickness=1):
    (width, height), baseline = cv2.getTextSize(text, FONT, scale, thickness)
    return width, height, baseline


class _Axes:
    """Data -> pixel mapping of one chart (see the module docstring)."""

    def __init__(self, plot_box, x_range, y_range, log_y):
        self.x0, self.y0, self.x1, self.y1 = plot_box
        self.xlo, self.xhi = x_range
        self.log_y = log_y
        self.ylo, self.yhi = (math.log10(y_range[0]), math.log10(y_range[1])) if log_y else y_range

    def column(self, x):
        return self.x0 + (np.asarray(x, dtype=np.float64) - self.xlo) / (self.xhi - self.xlo) * (self.x1 - self.x0)

    def row(self, y):
        y = np.asarray(y, dtype=np.float64)
        if self.log_y:
            with np.errstate(divide='ignore', invalid='ignore'):
                y = np.where(y > 0, np.log10(np.where(y > 0, y, 1.0)), np.nan)
        return self.y1 - (y - self.ylo) / (self.yhi - self.ylo) * (self.y1 - self.y0)


def _finite_runs(mask):
    """``[(start, stop), ...]`` of the runs of True in ``mask``."""
    edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)))


def _column_envelope(cols, rows):
    """``(cols, rows)`` of a line with many points per pixel column reduced to each column's
    lowest and highest point (a vertical stroke per column): the same pixels at a fraction of
    the drawing cost.  Lines with fewer than two points per column are returned unchanged."""
    column = np.floor(cols)
    starts = np.flatnonzero(np.concatenate(([True], column[1:] != column[:-1])))
    if len(cols) < 2 * len(starts):
        return cols, rows
    counts = np.diff(np.concatenate((starts, [len(cols)])))
    middle = np.add.reduceat(cols, starts) / counts
    low, high = np.minimum.reduceat(rows, starts), np.maximum.reduceat(rows, starts)
    return np.repeat(middle, 2), np.stack([low, high], axis=1).ravel()


def _draw_series(canvas, axes, series):
    """Draw one series clipped to the data area (drawn into a view of that area)."""
    area = canvas[axes.y0:axes.y1 + 1, axes.x0:axes.x1 + 1]
    x = np.asarray(series.x, dtype=np.float64).ravel()
    y = np.asarray(series.y, dtype=np.float64).ravel()
    n = min(len(x), len(y))
    cols, rows = axes.column(x[:n]) - axes.x0, axes.row(y[:n]) - axes.y0
    ok = np.isfinite(cols) & np.isfinite(rows)
    # Far-off points (an explicit range) would overflow OpenCV's fixed-point coordinates.
    cols, rows = np.clip(np.where(ok, cols, 0), -1e4, 1e4), np.clip(np.where(ok, rows, 0), -1e4, 1e4)
    scale = 1 << SUBPIXEL
    for start, stop in _finite_runs(ok):
        if stop - start >= 2:
            line = np.stack(_column_envelope(cols[start:stop], rows[start:stop]), axis=1)
            cv2.polylines(area, [np.round(line * scale).astype(np.int32).reshape(-1, 1, 2)], False,
                          series.color, series.thickness, cv2.LINE_AA, SUBPIXEL)
        if stop - start == 1 or series.markers:
            for point in np.round(np.stack([cols[start:stop], rows[start:stop]], axis=1) * scale).astype(np.int32):
                cv2.circle(area, (int(point[0]), int(point[1])), (series.thickness + 2) << SUBPIXEL,
                           series.color, -1, cv2.LINE_AA, SUBPIXEL)


def _legend_entries(series):
    return [s for s in series if s.in_legend and s.label]


def legend_width(series):
    """Pixels the legend of ``series`` takes right of the data area (0 without entries)."""
    entries = _legend_entries(series)
    return max(_text_size(s.label)[0] for s in entries) + 52 if entries else 0


def _draw_legend(canvas, axes, series):
    """The legend in the column right of the data area, so it never hides a curve."""
    entries = _legend_entries(series)
    if not entries:
        return
    line_height = 20
    left, top = axes.x1 + 12, axes.y0
    for i, entry in enumerate(entries):
        middle = top + 4 + line_height * i + line_height // 2
        cv2.line(canvas, (left + 6, middle), (left + 28, middle), entry.color, max(2, entry.thickness), cv2.LINE_AA)
        _text(canvas, entry.label, (left + 34, middle + 5))


def draw_chart(canvas, box, series, title='', xlabel='', ylabel='', log_y=False, x_range=None, y_range=None,
               integer_x=False, legend_space=None):
    """Draw a line chart into the region ``box = (left, top, right, bottom)`` of ``canvas``.

    series: :class:`Series` list; ``log_y``: logarithmic y axis; ``x_range`` / ``y_range``:
    fixed ``(lo, hi)`` axis ranges (default: the finite data, padded by 5 %);
    ``integer_x``: x ticks at whole numbers only (epochs); ``legend_space``: pixels kept for
    the legend right of the data area (default: this legend's :func:`legend_width`; charts
    stacked in one figure pass their widest, so their data areas line up).  Returns the data area's
    ``(x0, y0, x1, y1)`` in canvas pixels.
    """
    left, top, right, bottom = box
    plot_box = (left + MARGINS[0], top + MARGINS[1], right - MARGINS[2] - (legend_width(series) if legend_space is None else legend_space),
                bottom - MARGINS[3])
    x_range = x_range or _auto_range([s.x for s in series], False)
    y_range = y_range or _auto_range([s.y for s in series], log_y)
    axes = _Axes(plot_box, x_range, y_range, log_y)
    x0, y0, x1, y1 = plot_box
    cv2.rectangle(canvas, (left, top), (right, bottom), BACKGROUND, -1)
    if x1 - x0 < 20 or y1 - y0 < 20:
        raise ValueError(f'Chart region {box} leaves no room for the data area.')

    x_ticks = nice_ticks(*x_range, max_ticks=max(2, (x1 - x0) // 90))
    if integer_x:
        x_ticks = [t for t in x_ticks if float(t).is_integer()] or [t for t in range(math.ceil(x_range[0]),
                                                                                      math.floor(x_range[1]) + 1)]
    y_ticks = log_ticks(*y_range) if log_y else nice_ticks(*y_range, max_ticks=max(3, (y1 - y0) // 35))
    for tick in x_ticks:
        column = int(round(float(axes.column(tick))))
        cv2.line(canvas, (column, y0), (column, y1), GRID, 1)
        label = format_tick(tick)
        _text(canvas, label, (column - _text_size(label)[0] // 2, y1 + 18))
    for tick in y_ticks:
        row = int(round(float(axes.row(tick))))
        cv2.line(canvas, (x0, row), (x1, row), GRID, 1)
        label = format_tick(tick)
        width, height, _ = _text_size(label)
        _text(canvas, label, (x0 - 8 - width, row + height // 2))
    cv2.rectangle(canvas, (x0, y0), (x1, y1), AXIS, 1)

    for entry in series:
        _draw_series(canvas, axes, entry)
    _draw_legend(canvas, axes, series)

    if title:
        _text(canvas, title, (left + MARGINS[0], top + 22), TITLE_SCALE, TEXT, 2)
    if ylabel:
        width = _text_size(title, TITLE_SCALE, 2)[0] if title else -12
        _text(canvas, ylabel, (left + MARGINS[0] + width + 14, top + 22), LABEL_SCALE, AXIS)
    if xlabel:
        width = _text_size(xlabel, LABEL_SCALE)[0]
        _text(canvas, xlabel, ((x0 + x1) // 2 - width // 2, bottom - 8), LABEL_SCALE, AXIS)
    return plot_box


def _auto_range(arrays, log):
    lows, highs = [], []
    for values in arrays:
        found = finite_range(values, log)
        if found:
            lows.append(found[0])
            highs.append(found[1])
    if not lows:
        return (1.0, 10.0) if log else (0.0, 1.0)
    return padded_range(min(lows), max(highs), log)


def smooth(values, weight=0.9):
    """Exponential moving average with the start-up bias removed (TensorBoard's smoothing):
    ``s_t = sum_k w^(t-k) (1-w) v_k / (1 - w^(t+1))`` over the finite values so far; non-finite
    values are skipped (their output is NaN).  ``weight`` in [0, 1)."""
    from scipy.signal import lfilter
    values = np.asarray(values, dtype=np.float64).ravel()
    out = np.full(values.shape, np.nan)
    finite = np.isfinite(values)
    if finite.any():
        # a_t = w a_(t-1) + (1 - w) v_t over the finite values; the same filter on ones gives the norm
        average = lfilter([1 - weight], [1, -weight], values[finite])
        norm = lfilter([1 - weight], [1, -weight], np.ones(int(finite.sum())))
        out[finite] = average / norm
    return out
