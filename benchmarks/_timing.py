"""Shared timing helpers for the benchmark scripts: medians of many timed batches."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def gc_off() -> Iterator[None]:
    """The garbage collector off for the block (on again after, if it was on)."""
    gc_was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if gc_was:
            gc.enable()


def batch_us(fn: Callable[[], object], inner: int) -> float:
    """Mean µs per call over one batch of ``inner`` calls (the caller handles GC)."""
    t0 = time.perf_counter_ns()
    for _ in range(inner):
        fn()
    return (time.perf_counter_ns() - t0) / inner / 1000


def median_us(
    fn: Callable[[], object], *, reps: int = 2000, inner: int = 10, warmup: int | None = None
) -> float:
    """Median µs per call over ``reps`` batches of ``inner`` calls (GC off while timing)."""
    for _ in range(min(reps, 200) if warmup is None else warmup):
        fn()
    with gc_off():
        samples = [batch_us(fn, inner) for _ in range(reps)]
    return statistics.median(samples)


def pct(samples: list[float], q: float) -> float:
    """The ``q`` quantile of ``samples`` (nearest rank: ``pct(xs, 0.99)`` is the p99)."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
