"""Run logger in the original's line format: ``<%m-%d %H:%M:%S> <message>``.

Warnings, errors and critical messages carry ``WRN:`` / ``ERR:`` / ``CRI:`` prefixes.  The
log file is plain text; the console gets the original's colours (green timestamp, yellow
warnings, red errors) only when it is a terminal.  Console output goes through
``tqdm.write`` so progress bars stay intact.
"""
import logging
import os
import sys

from tqdm import tqdm

GREEN = '\033[92m'
YELLOW = '\033[93m'
RED = '\033[91m'
BOLD = '\033[1m'
RESET = '\033[0m'

TIME_FORMAT = '%m-%d %H:%M:%S'

# Prefix and console colour of each level above INFO.
LEVEL_STYLES = {
    logging.WARNING: ('WRN: ', YELLOW),
    logging.ERROR: ('ERR: ', RED),
    logging.CRITICAL: ('CRI: ', BOLD + RED),
}


class LineFormatter(logging.Formatter):
    """``<time> [WRN: |ERR: |CRI: ]<message>``; ``colour`` wraps the time and the prefixed
    message in ANSI colour codes (for a terminal only)."""

    def __init__(self, colour=False):
        super().__init__(datefmt=TIME_FORMAT)
        self.colour = colour

    def format(self, record):
        stamp = self.formatTime(record, self.datefmt)
        prefix, level_colour = LEVEL_STYLES.get(record.levelno, ('', ''))
        message = prefix + record.getMessage()
        if not self.colour:
            return f'{stamp} {message}'
        if level_colour:
            message = f'{level_colour}{message}{RESET}'
        return f'{GREEN}{stamp}{RESET} {message}'


class _TqdmConsoleHandler(logging.Handler):
    """Console handler that prints above any active tqdm bar (on stdout, as ``tqdm.write``)."""

    def emit(self, record):
        try:
            tqdm.write(self.format(record))
        except Exception:  # logging must never kill a run
            self.handleError(record)


class _ConsoleFilter(logging.Filter):
    """Drops records flagged ``file_only`` from the console."""

    def filter(self, record):
        return not getattr(record, 'file_only', False)


def stream_is_terminal(stream):
    """Whether ``stream`` is an interactive terminal (colour codes would be shown, not stored)."""
    isatty = getattr(stream, 'isatty', None)
    try:
        return bool(isatty and isatty())
    except (ValueError, OSError):  # a closed or detached stream
        return False


class ColorLogger:
    """Named INFO logger writing to ``<log_dir>/<log_name>`` (append, plain text) and the
    console (coloured when stdout is a terminal).

    Creating a second logger for the same file (e.g. in tests) replaces the first
    one's handlers instead of duplicating every line.
    """

    def __init__(self, log_dir, log_name='train_logs.txt', console=True):
        os.makedirs(log_dir, exist_ok=True)
        self.path = os.path.join(log_dir, log_name)
        self._logger = logging.getLogger(f'sgre.{os.path.abspath(self.path)}')
        self._logger.setLevel(logging.INFO)
        self._logger.propagate = False
        self.close()
        file_handler = logging.FileHandler(self.path, mode='a')
        file_handler.setFormatter(LineFormatter(colour=False))
        self._logger.addHandler(file_handler)
        if console:
            console_handler = _TqdmConsoleHandler()
            console_handler.setFormatter(LineFormatter(colour=stream_is_terminal(sys.stdout)))
            console_handler.addFilter(_ConsoleFilter())
            self._logger.addHandler(console_handler)

    def debug(self, msg):
        self._logger.debug(msg)

    def info(self, msg, console=True):
        """Log ``msg``; ``console=False`` writes it to the file only (per-iteration lines)."""
        self._logger.info(msg, extra={'file_only': not console})

    def warning(self, msg):
        self._logger.warning(msg)

    def error(self, msg):
        self._logger.error(msg)

    def critical(self, msg):
        self._logger.critical(msg)

    def close(self):
        """Flush and detach this logger's handlers (closes the file)."""
        for handler in list(self._logger.handlers):
            handler.flush()
            handler.close()
            self._logger.removeHandler(handler)


# The original's class name.
colorlogger = ColorLogger
