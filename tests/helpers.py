"""Helpers shared by several test modules (fixtures stay in conftest.py)."""
import os
import signal
import subprocess

import pytest

from main.config import cfg


def run_in_process(entry, argv, **kwargs):
    """Run an entry script's ``main(argv, **kwargs)`` in this process and return the run's
    ``cfg.output_dir``; ``cfg`` is left as it was before the call."""
    state = cfg.snapshot()
    try:
        entry(argv, **kwargs)
        return cfg.output_dir
    finally:
        cfg.restore(state)


def run_command(command, timeout, **kwargs):
    """``subprocess.run(command, capture_output=True, text=True, **kwargs)`` that fails the test
    if it has not finished after ``timeout`` seconds; the command and every process it started
    (its own process group) are then killed."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True, **kwargs)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f'{command} did not finish within {timeout} s:\n{(stdout + stderr)[-3000:]}')
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
