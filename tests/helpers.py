"""Helpers shared by several test modules (fixtures stay in conftest.py)."""
from main.config import cfg


def run_in_process(entry, argv):
    """Run an entry script's ``main(argv)`` in this process and return the run's
    ``cfg.output_dir``; ``cfg`` is left as it was before the call."""
    state = cfg.snapshot()
    try:
        entry(argv)
        return cfg.output_dir
    finally:
        cfg.restore(state)
