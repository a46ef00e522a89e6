"""Defaults of the demo's options, importable without torch or OpenCV (the demo's ``--help``
reads them before anything heavy is loaded)."""

AUTO = 'auto'                   # --pose value (and default) selecting the built-in 2D pose estimator
DEFAULT_BATCH_SIZE = 16         # people per network batch, across pictures
DEFAULT_RENDER_MAX_SIDE = 1920  # longer side of drawn pictures and videos, pixels (0: full size)
