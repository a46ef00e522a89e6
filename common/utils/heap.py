"""Keep freed CPU memory in the process instead of handing it back to the OS.

A training step frees and re-allocates the same large blocks every iteration: the gradients
(``zero_grad`` sets them to None; the stacked head weights' are 16-24 MB each), and the
backbone's activations (over 32 MB each at batch 8). glibc's ``malloc`` serves blocks above
its mmap threshold with a fresh ``mmap`` and returns them with ``munmap``, and trims the top
of its heap whenever more than its trim threshold lies free there; both thresholds move with
the sizes freed so far. Whether a step's blocks come back as already-mapped memory or as
fresh pages then depends on the heap's history, and every fresh 4 KiB page costs a page fault
(measured on a 2-core CPU: 16 000 faults, about 30 ms, in the heads + SMPL training step, and
50 000-270 000 faults, 0.1-0.7 s of system time, in the whole training step).

``keep_freed_memory`` fixes both thresholds (no ``mmap`` for single blocks, no trimming), so
from the second step on every block is served from memory the process already holds. The
process keeps its peak heap size, which a training or evaluation run reaches in its first
steps anyway. Numbers do not change; only where the bytes live.
"""
import ctypes
import ctypes.util
import platform

# glibc <malloc.h> parameter numbers
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_INT_MAX = 2 ** 31 - 1


def keep_freed_memory():
    """Tell glibc's malloc to keep freed memory for reuse (see the module docstring).

    Call once at the start of a process that trains or evaluates. Returns True when the
    settings were applied, False where the C library is not glibc (other allocators keep
    their own policy) or refuses them.
    """
    if platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc':
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _INT_MAX))
