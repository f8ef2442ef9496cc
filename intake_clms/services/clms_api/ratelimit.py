"""A process-wide request-rate limit per host (the CLMS auxiliary file servers allow ~10 requests/s).

One limiter per host is shared by every download thread and preload of the process;
its waits go through the lifecycle clock, so tests run it on a fake clock.
"""

from __future__ import annotations

import threading
from collections import deque
from urllib.parse import urlsplit

from ...net.clock import SYSTEM, Clock


class RateLimiter:
    """At most ``rate`` request starts in any window of ``period`` seconds (plus 5 % for network jitter)."""

    def __init__(self, rate: float, period: float = 1.0, clock: Clock = SYSTEM):
        self.rate = max(1, int(rate))
        self.period = period * 1.05
        self.clock = clock
        self._starts: deque[float] = deque()
        self._lock = threading.Lock()

    def acquire(self, cancel: threading.Event | None = None) -> None:
        while True:
            with self._lock:
                now = self.clock.monotonic()
                while self._starts and now - self._starts[0] >= self.period:
                    self._starts.popleft()
                if len(self._starts) < self.rate:
                    self._starts.append(now)
                    return
                wait = self.period - (now - self._starts[0])
            self.clock.sleep(wait, cancel)


_LIMITERS: dict[tuple[str, float], RateLimiter] = {}
_LIMITERS_LOCK = threading.Lock()


def limiter_for(url: str, rate: float, clock: Clock = SYSTEM) -> RateLimiter | None:
    """The process-wide limiter of a file host (shared by every download thread and preload); None if off."""
    if not rate or rate <= 0:
        return None
    key = (urlsplit(url).netloc.lower(), float(rate))
    with _LIMITERS_LOCK:
        return _LIMITERS.setdefault(key, RateLimiter(rate, clock=clock))
