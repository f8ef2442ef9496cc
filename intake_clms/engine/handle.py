"""What a caller holds while a preload runs: status, per-product progress, wait, cancel.

The handle listens to the engine's progress events (:mod:`.events`) like any other
listener; :class:`ProgressBar` is another (a tqdm bar, shown when stderr is a terminal
or when asked).  The engine never reaches into either.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import CancelledError


@dataclass
class ProductStatus:
    """Where one product stands; ``error`` is kept, never swallowed."""

    id: str
    name: str
    stage: str = "pending"
    bytes: int = 0
    total: int | None = None
    error: BaseException | None = None


class PreloadHandle:
    """A running (or finished) preload.  ``status``: pending, running, done, failed or cancelled."""

    def __init__(self) -> None:
        self.cancel_event = threading.Event()
        self.products: dict[str, ProductStatus] = {}
        self.stage = "pending"
        self.status = "pending"
        self.error: BaseException | None = None
        self._result: Any = None
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    # -- read side

    @property
    def progress(self) -> tuple[int, int | None]:
        """(bytes downloaded, bytes expected or None while unknown), over every product."""
        with self._lock:
            done = sum(p.bytes for p in self.products.values())
            totals = [p.total for p in self.products.values() if p.stage != "cached"]
        return done, (sum(totals) if totals and all(t is not None for t in totals) else None)  # type: ignore[arg-type]

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> Any:
        """Block until finished; returns the Dataset, raises the preload's error, TimeoutError if still running."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"preload still {self.stage} after {timeout} s")
        if self.error is not None:
            raise self.error
        return self._result

    def result(self) -> Any:
        return self.wait()

    def cancel(self, timeout: float = 2.0) -> bool:
        """Stop polling and downloads (the store stays consistent: partial files are resumable); True once stopped."""
        self.cancel_event.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        return self._done.wait(0 if self._thread is None else timeout)

    def __repr__(self) -> str:
        done, total = self.progress
        return f"<PreloadHandle {self.status} stage={self.stage} products={len(self.products)} bytes={done}/{total}>"

    # -- running

    def run(self, job: Callable[[threading.Event], Any], *, blocking: bool, on_exit: Callable[[], None] | None = None
            ) -> PreloadHandle:
        """Run ``job(cancel_event)`` here or in a daemon thread; its result or error finishes the handle."""

        def target() -> None:
            try:
                result, error = job(self.cancel_event), None
            except BaseException as exc:  # reported through the handle, raised by wait()
                result, error = None, exc
            if on_exit is not None:
                on_exit()
            self.finish(result, error)

        if blocking:
            target()
        else:
            self._thread = threading.Thread(target=target, name="intake-clms-preload", daemon=True)
            self._thread.start()
        return self

    def finish(self, result: Any = None, error: BaseException | None = None) -> None:
        self._result, self.error = result, error
        if error is None:
            self.status, self.stage = "done", "open"
        elif isinstance(error, CancelledError):
            self.status = "cancelled"
        else:
            self.status = "failed"
        self._done.set()

    # -- progress listener

    def on_stage(self, stage: str) -> None:
        if stage == "closed":
            return
        self.stage = stage
        if self.status == "pending":
            self.status = "running"

    def on_product(self, key: str, name: str, stage: str) -> None:
        with self._lock:
            self.products.setdefault(key, ProductStatus(key, name)).stage = stage

    def on_bytes(self, key: str, done: int, total: int | None) -> None:
        with self._lock:
            p = self.products.setdefault(key, ProductStatus(key, key))
            p.bytes, p.total = done, total if total is not None else p.total


class ProgressBar:
    """A tqdm bar over the bytes of every product (``tqdm.auto``: a widget in notebooks)."""

    def __init__(self) -> None:
        self._bar: Any = None
        self._seen: dict[str, tuple[int, int | None]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def wanted(progress_bar: bool | None) -> bool:
        return sys.stderr.isatty() if progress_bar is None else bool(progress_bar)

    def on_stage(self, stage: str) -> None:
        if stage == "download" and self._bar is None:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=None, unit="B", unit_scale=True, unit_divisor=1024, desc="preload", file=sys.stderr)
        elif stage == "closed" and self._bar is not None:
            self._bar.close()
            self._bar = None

    def on_product(self, key: str, name: str, stage: str) -> None:
        pass

    def on_bytes(self, key: str, done: int, total: int | None) -> None:
        with self._lock:
            bar = self._bar
            before, _ = self._seen.get(key, (0, None))
            self._seen[key] = (done, total)
            if bar is None:
                return
            totals = [t for _, t in self._seen.values()]
            if all(t is not None for t in totals):
                bar.total = sum(totals)  # type: ignore[arg-type]
            bar.update(done - before)
