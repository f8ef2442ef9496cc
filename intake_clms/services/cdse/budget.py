"""One process-wide connection budget for CDSE: OData, downloads and S3/GDAL reads share it.

Why one budget: CDSE allows a user 4 concurrent connections across its catalogue,
download service and S3 ("Max session number 4 exceeded" answers 429 beyond).  A
preload with 8 workers, two preloads in one process, or GDAL reading COG tiles
beside a download must never together open more than the budget, so every CDSE
request takes a slot first and gives it back when its last byte is read (a
streamed download holds its slot until its response is closed: see
:func:`hold_until_closed`).

The limit: ``max_connections`` (a source keyword), else ``CDSE_MAX_CONNECTIONS``,
else 4.  There is one budget per process whatever the limit; a later explicit
limit resizes it (slots in use are never taken back: the budget only shrinks as
they are returned).  The window reader takes a slot around each GDAL read with
:meth:`Budget.slot`.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import os
import threading
from collections.abc import Iterator
from typing import Any

from ...errors import CancelledError, ParameterError

DEFAULT = 4
ENV = "CDSE_MAX_CONNECTIONS"
_POLL = 0.1  # seconds between looks at the cancel event while waiting for a slot (real time: no clock involved)


def limit_from(settings: dict[str, Any] | None = None, env: dict[str, str] | None = None) -> int:
    """The configured limit: the ``max_connections`` setting, else ``CDSE_MAX_CONNECTIONS``, else 4."""
    env = os.environ if env is None else env
    value: Any = (settings or {}).get("max_connections")
    name = "max_connections"
    if value in (None, ""):
        value, name = env.get(ENV), ENV
    if value in (None, ""):
        return DEFAULT
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ParameterError(name, f"got {value!r}; expected a whole number of connections (CDSE allows 4)") from None
    if number < 1:
        raise ParameterError(name, f"got {number}; expected at least 1 connection")
    return number


class Budget:
    """A counting semaphore whose size can change, with cancellable waits, a peak counter, and slots given in
    order: callers that open a file first, then the others, each first come, first served.

    Why: a window read is two requests by one thread, the file's header (the open), then its pixels.  With a
    plain semaphore the thread that just gave its slot back takes it again for its pixels before a woken
    waiter runs, so products go through in fixed waves of ``limit`` and the last, partial wave leaves slots
    idle (18 products through 4 slots: 10 rounds instead of 9).  Openings first start every product as early
    as the worker threads allow, so pixel reads are left to fill the last rounds and every slot carries a
    request while any is asked for.
    """

    def __init__(self, limit: int = DEFAULT):
        self._limit = int(limit)
        self._used = 0
        self.peak = 0  # most slots held at once since the last reset_peak (tests and benchmarks read it)
        self._lock = threading.Lock()
        # waiting callers, sorted: (0 for an opening else 1, arrival, the caller's own condition); only the
        # head is woken when a slot frees (waking every waiter cost each release a burst of thread switches)
        self._waiting: list[tuple[int, int, threading.Condition]] = []
        self._arrivals = itertools.count()

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def in_use(self) -> int:
        with self._lock:
            return self._used

    def resize(self, limit: int) -> None:
        with self._lock:
            self._limit = int(limit)
            self._wake()

    def reset_peak(self) -> None:
        with self._lock:
            self.peak = self._used

    def acquire(self, cancel: threading.Event | None = None, opening: bool = False) -> None:
        """Take a slot, waiting for one (after the openings, then the others, that asked before); raises
        CancelledError as soon as ``cancel`` is set."""
        with self._lock:
            me = (0 if opening else 1, next(self._arrivals), threading.Condition(self._lock))
            bisect.insort(self._waiting, me)
            try:
                while self._waiting[0] is not me or self._used >= self._limit:
                    if cancel is not None and cancel.is_set():
                        raise CancelledError("cancelled while waiting for a CDSE connection")
                    me[2].wait(_POLL)
            except BaseException:
                self._waiting.remove(me)
                self._wake()  # the next in line may be free to go now
                raise
            self._waiting.pop(0)
            self._used += 1
            self.peak = max(self.peak, self._used)
            self._wake()  # a slot is still free: the next in line goes too

    def release(self) -> None:
        with self._lock:
            if self._used <= 0:
                raise RuntimeError("CDSE connection budget released more often than acquired")
            self._used -= 1
            self._wake()

    def _wake(self) -> None:
        """Wake the first in line if a slot is free (called with the lock held)."""
        if self._waiting and self._used < self._limit:
            self._waiting[0][2].notify()

    @contextlib.contextmanager
    def slot(self, cancel: threading.Event | None = None, opening: bool = False) -> Iterator[None]:
        """``with budget().slot(cancel): ...``: one connection for the duration of the block."""
        self.acquire(cancel, opening)
        try:
            yield
        finally:
            self.release()


_BUDGET: Budget | None = None
_BUDGET_LOCK = threading.Lock()


def budget(limit: int | None = None) -> Budget:
    """The process's budget (created at the configured limit on first use; ``limit`` resizes it)."""
    global _BUDGET
    with _BUDGET_LOCK:
        if _BUDGET is None:
            _BUDGET = Budget(limit if limit is not None else limit_from())
        elif limit is not None and limit != _BUDGET.limit:
            _BUDGET.resize(limit)
        return _BUDGET


def hold_until_closed(response: Any, held: Budget) -> Any:
    """Tie one slot (already taken) to a streamed response: it is released when the response is closed, once."""
    original = response.close
    lock = threading.Lock()
    open_ = [True]

    def close() -> None:
        try:
            original()
        finally:
            with lock:
                release, open_[0] = open_[0], False
            if release:
                held.release()

    response.close = close
    return response
