"""Line charts (common/utils/plot.py): lines land on the pixels the axis ranges put them at,
automatic ranges cover the data, ticks are round numbers, and gaps, single points and
empty series draw without errors."""
import math

import numpy as np
import pytest

from common.utils.plot import BACKGROUND, Series, draw_chart, log_ticks, nice_ticks, smooth

RED = (0, 0, 255)  # BGR


def red_mask(image):
    """Pixels drawn mostly in pure red (anti-aliased edges included)."""
    b, g, r = (image[..., i].astype(int) for i in range(3))
    return (r > 200) & (g < 150) & (b < 150)


def line_chart(series, width=900, height=360, **kwargs):
    """``(image, plot_box)``: a new ``width`` x ``height`` BGR image holding one ``draw_chart``."""
    canvas = np.full((height, width, 3), BACKGROUND, dtype=np.uint8)
    return canvas, draw_chart(canvas, (0, 0, width - 1, height - 1), series, **kwargs)


def chart(series, width=500, height=320, **kwargs):
    return line_chart(series, width, height, **kwargs)


def test_a_horizontal_line_lands_on_the_row_of_its_value():
    image, (x0, y0, x1, y1) = chart([Series('', [0, 10], [2.5, 2.5], RED, thickness=1)],
                                    x_range=(0, 10), y_range=(0, 10))
    expected_row = y1 - 0.25 * (y1 - y0)           # 2.5 is a quarter of the way up
    rows, cols = np.nonzero(red_mask(image))
    assert len(rows) and abs(rows.mean() - expected_row) <= 1.0
    assert rows.min() >= expected_row - 1.5 and rows.max() <= expected_row + 1.5
    assert cols.min() <= x0 + 1 and cols.max() >= x1 - 1   # from the left edge to the right one


def test_a_diagonal_passes_through_the_expected_pixels():
    image, (x0, y0, x1, y1) = chart([Series('', [0, 4], [0, 8], RED, thickness=1)], x_range=(0, 4), y_range=(0, 8))
    mask = red_mask(image)
    for x, y in ((1, 2), (2, 4), (3, 6)):
        column = x0 + x / 4 * (x1 - x0)
        row = y1 - y / 8 * (y1 - y0)
        window = mask[int(round(row)) - 1:int(round(row)) + 2, int(round(column)) - 1:int(round(column)) + 2]
        assert window.any(), (x, y)


def test_log_axis_puts_each_decade_at_equal_distances():
    image, (x0, y0, x1, y1) = chart([Series('', [0, 1], [10, 10], RED, thickness=1)], x_range=(0, 1),
                                    y_range=(1, 100), log_y=True)
    rows = np.nonzero(red_mask(image))[0]
    assert abs(rows.mean() - (y0 + y1) / 2) <= 1.0        # 10 is halfway between 1 and 100


def test_automatic_ranges_cover_the_data_with_a_margin():
    x = np.linspace(-3, 7, 50)
    y = 100 + 40 * np.sin(x)
    image, (x0, y0, x1, y1) = chart([Series('', x, y, RED, thickness=1)])
    rows, cols = np.nonzero(red_mask(image))
    # inside the data area, neither clipped at its edges nor squeezed into its middle
    assert y0 < rows.min() < y0 + 0.1 * (y1 - y0) and y1 - 0.1 * (y1 - y0) < rows.max() < y1
    assert x0 < cols.min() < x0 + 0.1 * (x1 - x0) and x1 - 0.1 * (x1 - x0) < cols.max() < x1


def test_gaps_single_points_and_empty_series_do_not_crash():
    x = np.arange(7.0)
    y = np.array([1.0, 2.0, np.nan, 4.0, np.inf, 6.0, -np.inf])
    image, (x0, y0, x1, y1) = chart([Series('gappy', x, y, RED, thickness=1),
                                     Series('empty', [], [], (0, 255, 0)),
                                     Series('all nan', [0, 1], [np.nan, np.nan], (255, 0, 0))])
    mask = red_mask(image)
    column = lambda v: x0 + (v - x[0] + 0.3) / 6.6 * (x1 - x0)  # auto range: 5 % padding on [0, 6]
    # No line crosses the gap between x = 1 and x = 3 (the NaN at x = 2).
    assert not mask[y0:y1, int(column(1.4)):int(column(2.6))].any()
    assert mask[y0:y1, int(column(0.2)):int(column(0.8))].any()   # the finite run 0..1 is drawn
    # A lone finite point (x = 5, between two infinities) is drawn as a dot.
    assert mask[y0:y1, int(column(5)) - 3:int(column(5)) + 4].any()

    single, _ = chart([Series('one', [3], [7], RED)])
    assert red_mask(single).any()
    blank, _ = chart([], title='nothing yet')
    assert blank.shape == (320, 500, 3) and blank.dtype == np.uint8


def test_log_axis_skips_values_that_have_no_logarithm():
    image, _ = chart([Series('', [0, 1, 2, 3], [1.0, 0.0, -5.0, 100.0], RED)], log_y=True)
    assert red_mask(image).any()


def test_ticks_are_round_numbers_inside_the_range():
    assert nice_ticks(0, 10, 6) == [0, 2, 4, 6, 8, 10]
    assert nice_ticks(0.013, 0.087, 5) == pytest.approx([0.02, 0.04, 0.06, 0.08])
    assert nice_ticks(-7, 7, 4) == [-5, 0, 5]
    assert log_ticks(0.01, 100) == pytest.approx([0.01, 0.1, 1, 10, 100])
    assert log_ticks(3, 40) == pytest.approx([5, 10, 20])


def test_smoothing_is_a_debiased_moving_average_that_skips_gaps():
    # weight 0.5: s1 = (0.25 * 1 + 0.5 * 3) / (1 - 0.25)
    out = smooth([1.0, 3.0, math.nan, 5.0], weight=0.5)
    assert out[0] == pytest.approx(1.0) and out[1] == pytest.approx(1.75 / 0.75)
    assert math.isnan(out[2])
    assert out[3] == pytest.approx((0.125 * 1 + 0.25 * 3 + 0.5 * 5) / 0.875)
    assert np.allclose(smooth([2.0, 2.0, 2.0], 0.9), 2.0)   # a constant stays constant from the start


def test_dense_lines_drawn_by_their_column_envelope_cover_the_same_pixels(monkeypatch):
    """The fast path (each pixel column's lowest and highest point) against drawing every
    point: every line pixel of either image has a line pixel of the other within one pixel."""
    import cv2

    import common.utils.plot as plot
    rng = np.random.default_rng(0)
    series = [Series('', np.arange(20000.0), np.cumsum(rng.normal(size=20000)), RED, thickness=1)]
    fast = red_mask(line_chart(series)[0])
    monkeypatch.setattr(plot, '_column_envelope', lambda cols, rows: (cols, rows))
    every_point = red_mask(line_chart(series)[0])
    near = lambda mask: cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    assert fast.sum() > 1000
    assert not (fast & ~near(every_point)).any() and not (every_point & ~near(fast)).any()
