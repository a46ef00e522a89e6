"""Wall-clock timer with the original's warm-up rule (the first calls are not averaged)."""
import time


class Timer:
    """``tic()`` / ``toc()`` stopwatch whose average ignores the first ``warm_up`` calls.

    During warm-up ``toc()`` returns the measured difference and ``average_time``
    stays 0; afterwards ``total_time`` and ``calls`` accumulate and ``toc()``
    returns the running average (or the last difference with ``average=False``).
    Times are seconds.
    """

    def __init__(self, warm_up=10):
        self.warm_up = int(warm_up)
        self.reset()

    def reset(self):
        self.total_time = 0.0
        self.calls = 0
        self.start_time = 0.0
        self.diff = 0.0
        self.average_time = 0.0
        self.warm_up_calls = 0

    def tic(self):
        self.start_time = time.time()

    def toc(self, average=True):
        self.diff = time.time() - self.start_time
        if self.warm_up_calls < self.warm_up:
            self.warm_up_calls += 1
            return self.diff
        self.total_time += self.diff
        self.calls += 1
        self.average_time = self.total_time / self.calls
        return self.average_time if average else self.diff
