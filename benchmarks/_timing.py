"""Shared timing helpers for the benchmark scripts: medians of many timed batches."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable


def median_us(
    fn: Callable[[], object], *, reps: int = 2000, inner: int = 10, warmup: int | None = None
) -> float:
    """Median µs per call over ``reps`` batches of ``inner`` calls (GC off while timing)."""
    for _ in range(min(reps, 200) if warmup is None else warmup):
        fn()
    samples: list[float] = []
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for _ in range(reps):
            t0 = time.perf_counter_ns()
            for _ in range(inner):
                fn()
            samples.append((time.perf_counter_ns() - t0) / inner / 1000)
    finally:
        if gc_was:
            gc.enable()
    return statistics.median(samples)
