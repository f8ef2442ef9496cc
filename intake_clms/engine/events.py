"""Progress events: the small public interface through which the engine reports what it does.

The engine knows nothing of who listens.  The :class:`~.handle.PreloadHandle`, its
tqdm bar and the cross-process status file (``intake-clms status``) are listeners;
a notebook widget or a test can be one too.  Listeners must be quick and must not
raise: a failing listener is logged and dropped from nothing else.
"""

from __future__ import annotations

import logging
from typing import Protocol

log = logging.getLogger(__name__)


class ProgressListener(Protocol):
    def on_stage(self, stage: str) -> None:
        """The request's stage: resolve, search, order, download, publish, open."""

    def on_product(self, key: str, name: str, stage: str) -> None:
        """One product's stage: pending, cached, ordering, queued, downloading, extracting, ready, failed."""

    def on_bytes(self, key: str, done: int, total: int | None) -> None:
        """Bytes of one product transferred so far (and expected, once known)."""


class Progress:
    """Fans events out to listeners; what the engine holds."""

    def __init__(self, *listeners: ProgressListener):
        self.listeners = [item for item in listeners if item is not None]

    def add(self, listener: ProgressListener) -> None:
        self.listeners.append(listener)

    def _each(self, method: str, *args: object) -> None:
        for listener in self.listeners:
            try:
                getattr(listener, method)(*args)
            except Exception:  # noqa: BLE001 - progress display must never break a download
                log.debug("progress listener %r failed on %s", listener, method, exc_info=True)

    def stage(self, stage: str) -> None:
        self._each("on_stage", stage)

    def product(self, key: str, name: str, stage: str) -> None:
        self._each("on_product", key, name, stage)

    def bytes(self, key: str, done: int, total: int | None) -> None:
        self._each("on_bytes", key, done, total)
