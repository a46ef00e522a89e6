"""Plain-text tables for the console and for text files.

    format_table(['set', 'mpjpe'], [['PW3D', 78.4]])
    ->  set   mpjpe
        ----  -----
        PW3D   78.4

Numbers are right-aligned with ``digits`` decimals (None: an empty cell, shown as ``-``),
text left-aligned; columns are separated by two spaces.
"""
import math


def format_cell(value, digits=2):
    """A cell's text: floats with ``digits`` decimals, None/NaN as ``-``, anything else ``str``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return '-'
    if isinstance(value, float):
        return f'{value:.{digits}f}'
    return str(value)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def format_table(header, rows, digits=2):
    """``header`` (column names) and ``rows`` (lists of cells) as aligned text lines joined by
    newlines (no trailing newline)."""
    cells = [[format_cell(v, digits) for v in row] for row in rows]
    widths = [max([len(str(h))] + [len(row[i]) for row in cells]) for i, h in enumerate(header)]
    numeric = [any(_is_number(row[i]) for row in rows) and all(_is_number(row[i]) or row[i] is None
                                                               for row in rows) for i in range(len(header))]

    def line(values):
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)]
        return '  '.join(parts).rstrip()

    lines = [line([str(h) for h in header]), line(['-' * w for w in widths])]
    lines.extend(line(row) for row in cells)
    return '\n'.join(lines)
