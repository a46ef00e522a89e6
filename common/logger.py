"""Run logger in the original's format.

Each line is ``<green %m-%d %H:%M:%S><reset> <message>``; the ANSI codes go to the
file too, as in the original.  Warnings, errors and critical messages carry
coloured ``WRN:`` / ``ERR:`` / ``CRI:`` prefixes.  Console output goes through
``tqdm.write`` so progress bars stay intact.
"""
import logging
import os

from tqdm import tqdm

GREEN = '\033[92m'
YELLOW = '\033[93m'
RED = '\033[91m'
BOLD = '\033[1m'
RESET = '\033[0m'

TIME_FORMAT = '%m-%d %H:%M:%S'


class _TqdmConsoleHandler(logging.Handler):
    """Console handler that prints above any active tqdm bar."""

    def emit(self, record):
        try:
            tqdm.write(self.format(record))
        except Exception:  # logging must never kill a run
            self.handleError(record)


class _ConsoleFilter(logging.Filter):
    """Drops records flagged ``file_only`` from the console."""

    def filter(self, record):
        return not getattr(record, 'file_only', False)


class ColorLogger:
    """Named INFO logger writing to ``<log_dir>/<log_name>`` (append) and the console.

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
        formatter = logging.Formatter(f'{GREEN}%(asctime)s{RESET} %(message)s', TIME_FORMAT)
        file_handler = logging.FileHandler(self.path, mode='a')
        file_handler.setFormatter(formatter)
        self._logger.addHandler(file_handler)
        if console:
            console_handler = _TqdmConsoleHandler()
            console_handler.setFormatter(formatter)
            console_handler.addFilter(_ConsoleFilter())
            self._logger.addHandler(console_handler)

    def debug(self, msg):
        self._logger.debug(msg)

    def info(self, msg, console=True):
        """Log ``msg``; ``console=False`` writes it to the file only (per-iteration lines)."""
        self._logger.info(msg, extra={'file_only': not console})

    def warning(self, msg):
        self._logger.warning(f'{YELLOW}WRN: {msg}{RESET}')

    def error(self, msg):
        self._logger.error(f'{RED}ERR: {msg}{RESET}')

    def critical(self, msg):
        self._logger.critical(f'{BOLD}{RED}CRI: {msg}{RESET}')

    def close(self):
        """Flush and detach this logger's handlers (closes the file)."""
        for handler in list(self._logger.handlers):
            handler.flush()
            handler.close()
            self._logger.removeHandler(handler)


# The original's class name.
colorlogger = ColorLogger
