"""common/utils/heap.py: re-allocating a freed large block costs no page faults once
``keep_freed_memory`` has run (each case in its own process, so the test process keeps its
allocator policy)."""
import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# A 64 MiB float32 tensor written twice; prints the minor page faults of the second write
# (fresh pages fault on first touch, 16384 of them for 64 MiB).
CHILD = """
import resource, sys
sys.path.insert(0, {root!r})
import torch
from common.utils.heap import keep_freed_memory
applied = keep_freed_memory() if {keep} else None
torch.empty(16 * 2 ** 20).fill_(1.0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
torch.empty(16 * 2 ** 20).fill_(2.0)
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""

glibc_only = pytest.mark.skipif(platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc',
                                reason='glibc malloc only')


def second_write_faults(keep):
    """(keep_freed_memory's return value or None, page faults of the second 64 MiB block)."""
    code = CHILD.format(root=str(ROOT), keep=keep)
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    applied, faults = out.stdout.split()[-2:]
    return applied, int(faults)


@pytest.mark.slow
@glibc_only
def test_default_malloc_faults_every_large_block_again():
    # the control: glibc maps blocks over 32 MiB afresh, so all 16384 pages fault again
    _, faults = second_write_faults(keep=False)
    assert faults >= 16384 * 0.9


@pytest.mark.slow
@glibc_only
def test_kept_memory_is_reused_without_faults():
    applied, faults = second_write_faults(keep=True)
    assert applied == 'True'
    assert faults < 16384 * 0.05
