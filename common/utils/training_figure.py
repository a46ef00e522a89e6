"""``<log>/training.png``: the picture of a run, drawn from its two CSV files
(``common.utils.run_csv``).

Panels, top to bottom: the total loss per iteration (raw in a light shade, smoothed in a
strong one; log scale when it spans more than a factor of ten), each loss term smoothed,
and, when evaluations exist, every metric of every evaluation set per evaluated epoch (mm).
The loss panels' x axis is the fractional epoch ``epoch + iteration / iterations in that
epoch``; the evaluation panel's is the snapshot's epoch.
"""
import os

import cv2
import numpy as np

from common.utils import run_csv
from common.utils.files import atomic_write
from common.utils.plot import BACKGROUND, PALETTE, Series, draw_chart, finite_range, legend_width, smooth

FIGURE_FILE = 'training.png'
WIDTH = 1100
PANEL_HEIGHT = 330


def fractional_epochs(epochs, iterations):
    """``epoch + iteration / n_epoch`` per row, ``n_epoch`` the largest iteration + 1 seen in
    that epoch: the rows of epoch e spread over [e, e + 1)."""
    epochs = np.asarray(epochs, dtype=np.float64)
    iterations = np.asarray(iterations, dtype=np.float64)
    out = epochs.copy()
    for epoch in np.unique(epochs[np.isfinite(epochs)]):
        pick = epochs == epoch
        out[pick] = epoch + iterations[pick] / (np.nanmax(iterations[pick]) + 1)
    return out


def smoothing_weight(count):
    """The :func:`common.utils.plot.smooth` weight for ``count`` points: none for a few
    points, about a 1/30 of the run's length as the averaging window, at most 0.98."""
    return float(min(0.98, max(0.0, 1.0 - 30.0 / max(count, 1))))


def lighter(color, amount=0.65):
    """``color`` blended with white (the raw curve under its smoothed line)."""
    return tuple(int(round(c + (255 - c) * amount)) for c in color)


def wants_log_scale(values):
    """Log scale when every finite value is positive and they span more than a factor of ten."""
    found = finite_range(values)
    return bool(found and found[0] > 0 and found[1] / found[0] > 10)


def loss_panels(table):
    """``[(title, series, log_y), ...]`` of the loss panels of a ``loss_table`` dict."""
    if not table.get('epoch'):
        return []
    x = fractional_epochs(table['epoch'], table['iteration'])
    total = np.asarray(table[run_csv.TOTAL_COLUMN], dtype=np.float64)
    weight = smoothing_weight(len(total))
    panels = [('Total loss', [Series('raw', x, total, lighter(PALETTE[0]), thickness=1),
                              Series('smoothed', x, smooth(total, weight), PALETTE[0], thickness=2)],
               wants_log_scale(total))]
    terms = [name for name in table if name not in run_csv.LOSS_INDEX_COLUMNS + (run_csv.TOTAL_COLUMN,)]
    if terms:
        series = [Series(name, x, smooth(table[name], weight), PALETTE[i % len(PALETTE)])
                  for i, name in enumerate(terms)]
        drawn = np.concatenate([np.asarray(s.y) for s in series])
        panels.append(('Loss terms (smoothed)', series, wants_log_scale(drawn)))
    return panels


def metric_series(rows):
    """One :class:`Series` per (evaluation set, metric) of ``metrics.csv`` rows, by epoch; an
    epoch evaluated twice shows its last value."""
    latest = run_csv.latest_metrics(rows)
    keys = sorted({(testset, metric) for (testset, _), values in latest.items() for metric in values})
    series = []
    for i, (testset, metric) in enumerate(keys):
        epochs = sorted(epoch for (name, epoch), values in latest.items() if name == testset and metric in values)
        values = [latest[(testset, epoch)][metric] for epoch in epochs]
        series.append(Series(f'{testset} {metric}', epochs, values, PALETTE[i % len(PALETTE)], markers=True))
    return series


def training_figure(table, metrics):
    """The figure as a BGR uint8 image: :func:`loss_panels` of ``table`` (a
    ``run_csv.loss_table``) and, with ``metrics`` (``run_csv.read_metrics`` rows), the
    evaluation panel.  With neither, one empty panel saying so."""
    panels = [(title, series, log_y, 'epoch', False) for title, series, log_y in loss_panels(table)]
    if metrics:
        panels.append(('Evaluation', metric_series(metrics), False, 'snapshot epoch', True))
    if not panels:
        panels = [('No losses logged yet', [], False, 'epoch', False)]
    canvas = np.full((PANEL_HEIGHT * len(panels), WIDTH, 3), BACKGROUND, dtype=np.uint8)
    legend_space = max(legend_width(series) for _, series, _, _, _ in panels)
    for i, (title, series, log_y, xlabel, integer_x) in enumerate(panels):
        box = (0, i * PANEL_HEIGHT, WIDTH - 1, (i + 1) * PANEL_HEIGHT - 1)
        ylabel = ('mm' if integer_x else 'loss') + (' (log scale)' if log_y else '')
        draw_chart(canvas, box, series, title=title, xlabel=xlabel, ylabel=ylabel, log_y=log_y,
                   integer_x=integer_x, legend_space=legend_space)
    return canvas


def write_training_figure(log_dir, path=None):
    """Draw ``<log_dir>/training.png`` (or ``path``) from the folder's ``train_losses.csv`` and
    ``metrics.csv``, written atomically; returns the path."""
    table = run_csv.loss_table(os.path.join(log_dir, run_csv.LOSS_FILE))
    metrics = run_csv.read_metrics(os.path.join(log_dir, run_csv.METRICS_FILE))
    ok, encoded = cv2.imencode('.png', training_figure(table, metrics))
    if not ok:
        raise RuntimeError('OpenCV could not encode the training figure as PNG.')
    path = path or os.path.join(log_dir, FIGURE_FILE)
    return atomic_write(path, lambda f: f.write(encoded.tobytes()), durable=False)
