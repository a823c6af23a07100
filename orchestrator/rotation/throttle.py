"""A bytes-per-second budget for a whole run, shared by all its batches and workers.

Before reading on, a reader books a slice of bytes (about a fifth of a second's worth) on the
budget and waits until its slot starts. In a run the bookings go to the run's record (one
small UPDATE per slice), so the lanes together keep to the budget whatever their number and
wherever they run; a lane that finishes early leaves the whole budget to the others. Budget
left idle (no lane reading) is credited up to ``burst`` seconds: a token bucket of that depth.
What a batch booked but did not read is given back.
"""

from __future__ import annotations

import time
from collections.abc import Callable

SLICE_SECONDS = 0.2
MIN_SLICE = 16 * 1024
BURST_SECONDS = 0.5

Reserve = Callable[[int], float]


class Throttle:
    def __init__(self, bytes_per_second: float | None, reserve: Reserve | None = None,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep,
                 burst: float = BURST_SECONDS) -> None:
        self.rate = bytes_per_second if bytes_per_second and bytes_per_second > 0 else None
        self._clock, self._sleep, self.burst = clock, sleep, burst
        self._reserve = reserve or self._reserve_here
        self._booked_to: float | None = None
        self.slice = max(MIN_SLICE, int((self.rate or 0) * SLICE_SECONDS))
        self.allowance = 0
        self.spent = 0

    def spend(self, count: int) -> None:
        """``count`` bytes were read: book more slices (and wait for them) when needed."""
        self.spent += count
        if self.rate is None:
            return
        while self.allowance < count:
            wait = self._reserve(self.slice) - self._clock()
            if wait > 0:
                self._sleep(wait)
            self.allowance += self.slice
        self.allowance -= count

    def close(self) -> None:
        """Give back what was booked and not read."""
        if self.rate is not None and self.allowance > 0:
            self._reserve(-self.allowance)
            self.allowance = 0

    def _reserve_here(self, count: int) -> float:
        moment = self._clock()
        booked = self._booked_to if self._booked_to is not None else moment
        start = max(booked, moment - self.burst) if count > 0 else booked
        self._booked_to = start + count / self.rate  # type: ignore[operator]
        return start
