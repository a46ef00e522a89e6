"""The ``--gpu`` string: one id ('0'), a comma list ('0,1') or an inclusive range ('0-3').

Kept free of torch so that the command line and the configuration can check it before any
heavy import (``--help`` answers at once); the device itself is chosen in
``common/utils/device.py``.
"""
import re

_GPU_RANGE = re.compile(r'^(\d+)-(\d+)$')
_GPU_LIST = re.compile(r'^\d+(,\d+)*$')


def parse_gpu_ids(gpu_ids):
    """Normalise a ``--gpu`` string: ``'0'``, ``'0,1'`` or the inclusive range ``'0-3'``.

    Returns the comma-separated id list as a string (``'0-3'`` -> ``'0,1,2,3'``).
    Raises ``ValueError`` for anything else.
    """
    text = str(gpu_ids).strip() if gpu_ids is not None else ''
    match = _GPU_RANGE.match(text)
    if match:
        first, last = int(match.group(1)), int(match.group(2))
        if last < first:
            raise ValueError(f"Invalid --gpu range '{gpu_ids}': the end {last} is below the start {first}.")
        return ','.join(str(i) for i in range(first, last + 1))
    if _GPU_LIST.match(text):
        return text
    raise ValueError(
        f"Invalid --gpu value '{gpu_ids}'. Use one id ('0'), a comma list ('0,1') "
        "or an inclusive range ('0-3').")
