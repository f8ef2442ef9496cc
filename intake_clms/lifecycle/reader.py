"""The bridge between a ClmsSource and the engine: what ``services.BACKENDS`` points at.

A service module subclasses :class:`LifecycleReader` and implements
``make_backend``; the source then gets ``to_dask()`` and ``preload()`` for free.
"""

from __future__ import annotations

import threading
from typing import Any

import xarray as xr

from .backend import Backend
from .engine import Engine, Options
from .handle import PreloadHandle
from .polling import PollPolicy

_OPTION_NAMES = {"workers", "chunk", "chunks"}
_POLL_NAMES = {"poll_first": "first", "poll_factor": "factor", "poll_cap": "cap", "poll_deadline": "deadline"}


def options_from(values: dict[str, Any]) -> Options:
    """Engine options from user keywords (``workers=8``, ``poll_deadline=3600``, ...); unknown keys are ignored."""
    opts = Options(**{k: values[k] for k in _OPTION_NAMES if values.get(k) is not None})
    poll = {_POLL_NAMES[k]: float(values[k]) for k in _POLL_NAMES if values.get(k) is not None}
    if poll:
        opts.poll = PollPolicy(**{**opts.poll.__dict__, **poll})
    return opts


class LifecycleReader:
    """Reads a source through the preload lifecycle; subclasses say how to build their backend."""

    service = "?"

    def __init__(self, source: Any, **overrides: Any):
        self.source = source
        self.settings = {**(getattr(source, "options", None) or {}), **overrides}

    def make_backend(self, cancel: threading.Event) -> Backend:
        raise NotImplementedError

    def engine(self, **overrides: Any) -> Engine:
        settings = {**self.settings, **overrides}
        return Engine(
            self.source.request,
            self.make_backend,
            cache_root=settings.get("cache_dir") or getattr(self.source, "cache_dir", None),
            options=options_from(settings),
        )

    def preload(self, blocking: bool = True, progress_bar: bool | None = None, **overrides: Any) -> PreloadHandle:
        """Run the lifecycle; blocking returns a finished handle (errors raised), else a running one."""
        self.settings.update(overrides)
        handle = self.engine().start(blocking=blocking, progress_bar=progress_bar)
        if blocking and handle.error is not None:
            raise handle.error
        return handle

    def to_dask(self) -> xr.Dataset:
        """The lazy Dataset (from the cache when published, after a blocking preload otherwise)."""
        return self.preload(blocking=True).result()
