"""Wall-clock timing with warm-ups and robust statistics.

Every figure in the report is a median over repeats with its min–max, because the machines this runs
on are shared and noisy: the median is stable where the mean is not, and the range shows the noise.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass
class Timing:
    """Seconds per call: median, min, max over ``n`` timed repeats (raw samples kept for the JSON)."""

    median: float
    min: float
    max: float
    n: int
    samples: list[float] = field(default_factory=list)

    @classmethod
    def from_samples(cls, samples: Iterable[float]) -> Timing:
        values = [float(s) for s in samples]
        if not values:
            raise ValueError("Timing.from_samples needs at least one sample")
        return cls(statistics.median(values), min(values), max(values), len(values), values)

    def scaled(self, factor: float) -> Timing:
        """The same timing divided per item (e.g. an epoch time divided by its sample count)."""
        return Timing.from_samples([s * factor for s in self.samples])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure(fn: Callable[[], Any], *, repeats: int, warmup: int = 1) -> Timing:
    """Time ``fn()`` ``repeats`` times after ``warmup`` untimed calls.

    The garbage collector is run before and disabled during each timed call so that a collection
    triggered by an earlier allocation does not land inside an unrelated measurement.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for _ in range(max(warmup, 0)):
        fn()
    samples: list[float] = []
    for _ in range(repeats):
        gc.collect()
        gc.disable()
        try:
            start = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - start)
        finally:
            gc.enable()
    return Timing.from_samples(samples)


def measure_each(fn: Callable[[T], Any], items: Iterable[T], *, warmup_items: Iterable[T] = ()) -> Timing:
    """Time one call per item (e.g. one dataset index each, in random order).

    Per-item timings are what a training loop sees; timing each call separately (instead of a loop
    divided by its length) keeps the min–max meaningful.
    """
    for item in warmup_items:
        fn(item)
    samples: list[float] = []
    gc.collect()
    gc.disable()
    try:
        for item in items:
            start = time.perf_counter()
            fn(item)
            samples.append(time.perf_counter() - start)
    finally:
        gc.enable()
    return Timing.from_samples(samples)


def time_once(fn: Callable[[], T]) -> tuple[float, T]:
    """Seconds taken by one call and its result (for one-time costs such as a cache build)."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result
