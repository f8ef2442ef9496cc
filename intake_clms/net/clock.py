"""One clock for the lifecycle: wall time, monotonic time and a cancellable sleep, injectable.

HTTP retries, polling, token renewal and rate limits all wait.  Tests and benchmarks
replace the clock with :class:`FakeClock`, whose sleeps return at once and move its
time forward, so a ten-minute queue or a token that lives one second is simulated
without a real-time sleep or a wall-clock assertion.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

from ..errors import CancelledError


class Clock(Protocol):
    def time(self) -> float:
        """Epoch seconds (token expiry, quota resets, record timestamps)."""

    def monotonic(self) -> float:
        """Seconds for measuring intervals (deadlines, rate limits)."""

    def sleep(self, seconds: float, cancel: threading.Event | None = None) -> None:
        """Wait ``seconds``; raise CancelledError as soon as ``cancel`` is set."""


class SystemClock:
    """The real clock; a sleep wakes up early on cancel."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float, cancel: threading.Event | None = None) -> None:
        if cancel is None:
            time.sleep(max(0.0, seconds))
        elif cancel.wait(max(0.0, seconds)):
            raise CancelledError("cancelled")


class FakeClock:
    """A clock that only moves when slept on (or advanced): every wait is instant, time is exact.

    ``slept`` lists every sleep, so tests can assert on the waits a client chose.
    """

    def __init__(self, start: float = 1_800_000_000.0):
        self._now = float(start)
        self._lock = threading.Lock()
        self.slept: list[float] = []

    def time(self) -> float:
        with self._lock:
            return self._now

    def monotonic(self) -> float:
        return self.time()

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += max(0.0, seconds)

    def sleep(self, seconds: float, cancel: threading.Event | None = None) -> None:
        if cancel is not None and cancel.is_set():
            raise CancelledError("cancelled")
        with self._lock:
            self.slept.append(seconds)
            self._now += max(0.0, seconds)


SYSTEM = SystemClock()
