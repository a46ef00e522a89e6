"""The two CSV files that record a run in its log folder: one definition of each schema.

* ``train_losses.csv`` (training, rank 0): one row per logged iteration,
  ``epoch, iteration, step, lr, <loss term>..., total``: ``iteration`` counts within the
  epoch, ``step`` over the run, ``lr`` is the learning rate the original logs (the last
  optimizer group's), the terms are the batch means the trainer logs and ``total`` their sum.
  Rows are appended once per epoch, so a crash loses at most the epoch in progress.
* ``metrics.csv`` (evaluation): one row per (evaluated epoch, evaluation set, metric),
  ``epoch, testset, metric, value_mm, checkpoint``: the snapshot's epoch, the evaluation
  set's name (e.g. ``PW3D-crowd``), the metric's key (``mpjpe``, ``pa_mpjpe``, ``mpvpe``), its
  mean over the set in millimetres and the snapshot file evaluated.  Every evaluation adds its
  rows; the file is rewritten atomically, so a crash never loses earlier rows.

Readers skip rows they cannot parse (e.g. a last line cut short by a crash).
"""
import csv
import io
import math
import os
from collections import namedtuple

import numpy as np

from common.utils.files import atomic_write_text

LOSS_FILE = 'train_losses.csv'
LOSS_INDEX_COLUMNS = ('epoch', 'iteration', 'step', 'lr')
TOTAL_COLUMN = 'total'

METRICS_FILE = 'metrics.csv'
METRIC_COLUMNS = ('epoch', 'testset', 'metric', 'value_mm', 'checkpoint')
MetricRow = namedtuple('MetricRow', METRIC_COLUMNS)


def loss_columns(terms):
    """The header of ``train_losses.csv`` for the loss ``terms`` (in logging order)."""
    return LOSS_INDEX_COLUMNS + tuple(terms) + (TOTAL_COLUMN,)


def _csv_text(rows):
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator='\n').writerows(rows)
    return buffer.getvalue()


class LossCsv:
    """Writer of ``train_losses.csv``: :meth:`add` buffers a row, :meth:`flush` appends the
    buffered rows to the file (and fsyncs it).

    ``path``: the file; ``carried``: ``(columns, rows)`` of an earlier run to start the file
    with (a resumed run: its curves continue), written at the first flush.  An existing file
    is never overwritten: rows are appended below its header.
    """

    def __init__(self, path, carried=None):
        self.path = str(path)
        self.columns = None
        self.pending = []
        self.carried = carried

    def add(self, epoch, iteration, step, lr, losses):
        """Buffer one iteration: ``losses`` is ``{term: float}`` in logging order."""
        if self.columns is None:
            self.columns = loss_columns(losses)
        values = [losses.get(term, math.nan) for term in self.columns[len(LOSS_INDEX_COLUMNS):-1]]
        self.pending.append([int(epoch), int(iteration), int(step), repr(float(lr))]
                            + [repr(float(v)) for v in values] + [repr(float(sum(values)))])

    def flush(self):
        """Append the buffered rows; a new file starts with the header and the carried rows."""
        if not self.pending and not self.carried:
            return
        new_file = not os.path.exists(self.path) or os.path.getsize(self.path) == 0
        lines = []
        if new_file:
            header = self.columns or (self.carried[0] if self.carried else None)
            if header is None:
                return
            lines.append(list(header))
            if self.carried:
                lines.extend(_carried_rows(self.carried, header))
        self.carried = None
        lines.extend(self.pending)
        with open(self.path, 'a', encoding='utf-8') as f:
            f.write(_csv_text(lines))
            f.flush()
            os.fsync(f.fileno())
        self.pending = []


def _carried_rows(carried, header):
    """The carried ``(columns, rows)`` re-ordered to ``header`` (missing values empty)."""
    columns, rows = carried
    index = {name: i for i, name in enumerate(columns)}
    return [[row[index[name]] if name in index else '' for name in header] for row in rows]


def read_loss_csv(path):
    """``(columns, rows)`` of a ``train_losses.csv``: the header and each complete row as a
    list of strings.  A missing file gives ``((), [])``."""
    if not os.path.isfile(path):
        return (), []
    with open(path, newline='', encoding='utf-8') as f:
        table = list(csv.reader(f))
    if not table:
        return (), []
    columns = tuple(table[0])
    rows = [row for row in table[1:] if len(row) == len(columns) and _is_loss_row(row)]
    return columns, rows


def _is_loss_row(row):
    try:
        int(row[0]), int(row[1]), int(row[2])
        return True
    except ValueError:
        return False


def loss_rows_before(path, epoch):
    """``(columns, rows)`` of the ``train_losses.csv`` at ``path`` with epochs before ``epoch``
    (what a run resumed at ``epoch`` carries over)."""
    columns, rows = read_loss_csv(path)
    return columns, [row for row in rows if int(row[0]) < int(epoch)]


def loss_table(path):
    """The ``train_losses.csv`` at ``path`` as ``{column: list of float}`` (empty or
    unparsable cells: NaN); ``{}`` without a file."""
    columns, rows = read_loss_csv(path)
    try:
        table = np.asarray(rows, dtype=np.float64).reshape(len(rows), len(columns))
    except ValueError:   # an empty or odd cell somewhere: cell by cell
        table = np.array([[_to_float(cell) for cell in row] for row in rows], dtype=np.float64)
        table = table.reshape(len(rows), len(columns))
    return {name: table[:, i].tolist() for i, name in enumerate(columns)}


def _to_float(text):
    try:
        return float(text)
    except ValueError:
        return math.nan


def summary_metrics(summary):
    """``{metric: value}`` of every top-level number of ``summary`` (a dataset's ``summarize()``
    dict, millimetres) except the sample count, in the summary's order."""
    return {str(key): float(value) for key, value in summary.items()
            if key != 'num_samples' and not isinstance(value, bool) and isinstance(value, (int, float))}


def metric_rows(epoch, testset, summary, checkpoint):
    """The ``metrics.csv`` rows of one evaluation (:func:`summary_metrics` of ``summary``)."""
    return [MetricRow(int(epoch), str(testset), metric, value, str(checkpoint))
            for metric, value in summary_metrics(summary).items()]


def latest_metrics(rows, table=None):
    """``{(testset, epoch): {metric: value_mm}}`` of :class:`MetricRow` s, later rows winning (an
    epoch evaluated twice keeps its last value); the rows are added to ``table`` when given."""
    table = {} if table is None else table
    for row in rows:
        table.setdefault((row.testset, row.epoch), {})[row.metric] = row.value_mm
    return table


def append_metrics(path, rows):
    """Add ``rows`` (:class:`MetricRow`) to the ``metrics.csv`` at ``path`` (created with its
    header), rewriting the file atomically.  Returns ``path``."""
    header = [] if os.path.isfile(path) and os.path.getsize(path) else [list(METRIC_COLUMNS)]
    old = ''
    if not header:
        with open(path, encoding='utf-8') as f:
            old = f.read()
        if not old.endswith('\n'):
            old += '\n'
    body = [[r.epoch, r.testset, r.metric, repr(float(r.value_mm)), r.checkpoint] for r in rows]
    return atomic_write_text(path, old + _csv_text(header + body))


def read_metrics(path):
    """The :class:`MetricRow` s of the ``metrics.csv`` at ``path`` in file order (``[]``
    without a file)."""
    if not os.path.isfile(path):
        return []
    with open(path, newline='', encoding='utf-8') as f:
        table = list(csv.reader(f))
    rows = []
    for row in table[1:]:
        if len(row) != len(METRIC_COLUMNS):
            continue
        try:
            rows.append(MetricRow(int(row[0]), row[1], row[2], float(row[3]), row[4]))
        except ValueError:
            continue
    return rows
