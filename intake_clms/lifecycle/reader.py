"""The bridge between a ClmsSource and the engine: settings -> options, service connection, engine.

``preload(source)`` is all a source calls; which service, which store, which
options are decided here once, so every service gets ``to_dask()`` and
``preload()`` the same way.
"""

from __future__ import annotations

from typing import Any

from ..services import connector
from ..store import Store
from .clock import SYSTEM
from .engine import Engine, Options
from .handle import PreloadHandle
from .polling import PollPolicy

_OPTION_NAMES = {"workers": int, "chunk": int, "chunks": None, "max_products": int}
_POLL_NAMES = {"poll_first": "first", "poll_factor": "factor", "poll_cap": "cap", "poll_deadline": "deadline"}


def options_from(values: dict[str, Any]) -> Options:
    """Engine options from user keywords (``workers=8``, ``poll_deadline=3600``, ``max_products=50``, ...)."""
    opts = Options(**{k: (cast(values[k]) if cast else values[k]) for k, cast in _OPTION_NAMES.items()
                      if values.get(k) is not None})
    poll = {_POLL_NAMES[k]: float(values[k]) for k in _POLL_NAMES if values.get(k) is not None}
    if poll:
        opts.poll = PollPolicy(**{**opts.poll.__dict__, **poll})
    if values.get("entry"):
        opts.entry = str(values["entry"])
    return opts


def engine_for(source: Any, service: str, **overrides: Any) -> Engine:
    settings = {**(getattr(source, "options", None) or {}), **overrides}
    clock = settings.get("clock") or SYSTEM
    connect = connector(service)
    store = Store(settings.get("cache_dir") or getattr(source, "cache_dir", None))
    name = getattr(source, "name", "")  # intake sets the entry's name on the sources it builds
    entry = settings.get("entry") or (name if name and name != getattr(type(source), "name", None) else "")
    return Engine(
        source.request,
        lambda cancel: connect({**settings, "cache_dir": store.base}, cancel, clock),
        service_name=service,
        store=store,
        options=options_from({**settings, "entry": entry}),
        clock=clock,
    )


def preload(source: Any, service: str, blocking: bool = True, progress_bar: bool | None = None,
            **overrides: Any) -> PreloadHandle:
    """Run the lifecycle; blocking returns a finished handle (errors raised), else a running one."""
    handle = engine_for(source, service, **overrides).start(blocking=blocking, progress_bar=progress_bar)
    if blocking and handle.error is not None:
        raise handle.error
    return handle
