"""Timing loops of the benchmark scripts: calls timed side by side, CUDA synchronised, with the
process's minor page faults per call."""
import statistics
import time

import torch


def minor_page_faults():
    """Minor page faults of this process so far (0 where ``resource`` is missing)."""
    try:
        import resource
    except ImportError:  # not on Windows
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def time_alternating(fns, runs, warmup, device, clock=time.perf_counter):
    """Time several callables side by side: every run calls each once, the order alternating
    between runs, so slow phases of a shared machine hit all of them alike.

    fns: {name: callable}; clock: seconds (wall clock by default).  Returns
    {name: {"median_ms", "min_ms", "max_ms", "runs", "faults"}}, ``faults`` the median number
    of minor page faults per call (the process's first touches of fresh memory: on the CPU the
    main source of spread between runs).
    """
    def sync():
        if device.type == 'cuda':
            torch.cuda.synchronize(device)

    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    sync()
    times = {name: [] for name in names}
    faults = {name: [] for name in names}
    for run in range(runs):
        for name in (names if run % 2 == 0 else names[::-1]):
            first_faults = minor_page_faults()
            start = clock()
            fns[name]()
            sync()
            times[name].append((clock() - start) * 1000.0)
            faults[name].append(minor_page_faults() - first_faults)
    return {name: {'median_ms': statistics.median(values), 'min_ms': min(values),
                   'max_ms': max(values), 'runs': runs, 'faults': statistics.median(faults[name])}
            for name, values in times.items()}


def time_callable(fn, runs, warmup, device):
    """Run ``fn`` ``warmup`` times, then time ``runs`` calls; returns the stats dict in ms."""
    return time_alternating({'fn': fn}, runs, warmup, device)['fn']
