"""The timing rule of the PyTorch benchmark scripts: warm-up calls, then the median of timed ones."""
import statistics
import time


def median_ms(f, runs, warmup=1):
    """Median wall time of `runs` calls of `f` in milliseconds, after `warmup` untimed calls."""
    for _ in range(warmup):
        f()
    ms = []
    for _ in range(runs):
        t = time.perf_counter()
        f()
        ms.append((time.perf_counter() - t) * 1e3)
    return statistics.median(ms)
