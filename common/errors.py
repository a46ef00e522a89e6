"""Errors a user can fix: a bad option, a missing or malformed file, a refused run folder.

Entry scripts end such an error with one line, ``ERROR: <message>``, and exit status 1
(``common.utils.cli.exit_on_expected_errors``); anything else keeps its traceback, since it
is a bug.  The message must name the thing to fix (option and value, file and record, path).
"""


class UserError(Exception):
    """Base of the expected errors: the message is all the user needs."""


class ConfigError(UserError, ValueError):
    """An option (from the command line, a ``--cfg`` YAML or the code) that is not allowed."""


class DataError(UserError, ValueError):
    """A data, annotation or model file whose content cannot be used."""


class ImageFileError(UserError, OSError):
    """An image that cannot be decoded (corrupt, unsupported, truncated)."""


class RunDirError(UserError):
    """An experiment or result folder that the run may not or cannot write into."""
