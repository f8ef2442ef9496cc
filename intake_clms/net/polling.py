"""Waiting for a server-side job: short first checks, then a growing interval, under a deadline.

A queue wait can last seconds or hours; polling at a fixed short interval hammers
the service, a fixed long one wastes time on quick jobs.  x1.5 growth up to a cap
keeps a 10-minute wait under ~20 status calls.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from ..errors import CancelledError, ServiceError
from .clock import SYSTEM, Clock

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class PollPolicy:
    """First interval, growth factor, cap (seconds) and overall deadline (seconds)."""

    first: float = 2.0
    factor: float = 1.5
    cap: float = 60.0
    deadline: float = 6 * 3600.0

    def intervals(self):
        """The successive waits between checks."""
        wait = self.first
        while True:
            yield wait
            wait = min(self.cap, wait * self.factor)


def poll(
    check: Callable[[], tuple[str, T | None]],
    *,
    policy: PollPolicy,
    cancel: threading.Event,
    what: str,
    service: str,
    clock: Clock = SYSTEM,
) -> T:
    """Call ``check`` until it says ``("done", value)``; returns value.

    ``check`` returns (state, value) and raises for a terminal failure.  Logs only
    when the state changes; raises CancelledError on cancel, ServiceError at the deadline.
    ``clock`` (a :class:`~.clock.FakeClock` in tests and benchmarks) simulates a long queue
    wait without sleeping.
    """
    start = clock.monotonic()
    last = None
    for interval in policy.intervals():
        if cancel.is_set():
            raise CancelledError("cancelled")
        state, value = check()
        if state != last:
            log.info("%s: %s is %s", service, what, state)
            last = state
        if state == "done":
            return value  # type: ignore[return-value]
        left = policy.deadline - (clock.monotonic() - start)
        if left <= 0:
            raise ServiceError(service, None, f"{what} still {state} after {policy.deadline:.0f} s (the deadline); try again later")
        clock.sleep(min(interval, left), cancel)
    raise AssertionError("unreachable")
