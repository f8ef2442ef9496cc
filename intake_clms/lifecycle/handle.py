"""What a caller holds while a preload runs: status, per-product progress, wait, cancel."""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass
from typing import Any

from .errors import CancelledError


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

    def __init__(self, progress_bar: bool | None = None):
        self.cancel_event = threading.Event()
        self.products: dict[str, ProductStatus] = {}
        self.stage = "pending"
        self.status = "pending"
        self.error: BaseException | None = None
        self._result: Any = None
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.show_progress = sys.stderr.isatty() if progress_bar is None else progress_bar
        self._bar: Any = None

    # -- read side

    @property
    def progress(self) -> tuple[int, int | None]:
        """(bytes downloaded, bytes expected or None while unknown), over every product."""
        with self._lock:
            done = sum(p.bytes for p in self.products.values())
            totals = [p.total for p in self.products.values()]
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
        """Stop polling and downloads (the cache stays consistent: partial files are resumable); True once stopped."""
        self.cancel_event.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        return self._done.wait(0 if self._thread is None else timeout)

    def __repr__(self) -> str:
        done, total = self.progress
        return f"<PreloadHandle {self.status} stage={self.stage} products={len(self.products)} bytes={done}/{total}>"

    # -- engine side

    def _set_stage(self, stage: str) -> None:
        self.stage = stage
        if self.status == "pending":
            self.status = "running"

    def _product(self, pid: str, name: str) -> ProductStatus:
        with self._lock:
            return self.products.setdefault(pid, ProductStatus(pid, name))

    def _bytes(self, pid: str, done: int, total: int | None) -> None:
        with self._lock:
            p = self.products[pid]
            delta = done - p.bytes
            p.bytes, p.total = done, total if total is not None else p.total
            bar = self._bar
        if bar is not None:
            if total is not None and p.total is not None:
                bar.total = sum(q.total or 0 for q in self.products.values()) or None
            bar.update(delta)

    def _open_bar(self) -> None:
        if self.show_progress and self._bar is None:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=None, unit="B", unit_scale=True, unit_divisor=1024, desc="preload", file=sys.stderr)

    def _finish(self, result: Any = None, error: BaseException | None = None) -> None:
        self._result, self.error = result, error
        if error is None:
            self.status, self.stage = "done", "open"
        elif isinstance(error, CancelledError):
            self.status = "cancelled"
        else:
            self.status = "failed"
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self._done.set()
