"""The bridge between a ClmsSource and the engine: settings -> options, service connection, engine.

``preload(source)`` is all a source calls; which service, which store, which
options are decided here once, so every service gets ``to_dask()`` and
``preload()`` the same way.

With ``service="auto"`` a read tries the services of
:func:`~intake_clms.services.service_chain` in turn: when one says the product is
not (or no longer) there (its search finds nothing, or the product is gone: a
:class:`~intake_clms.services.ProductNotThereError`), the next one is asked and
the log says why.  Products already stored stay: the next service reuses them.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from ..errors import ClmsError, PreloadError
from ..services import ProductNotThereError, connector
from ..store import Store
from ..net.clock import SYSTEM
from .core import Engine, Options
from .events import Progress
from .handle import PreloadHandle
from ..net.polling import PollPolicy

log = logging.getLogger(__name__)


def _flag(value: Any) -> bool:
    """A yes/no keyword as intake may render it: False, "false", "0", "no", "off" are no."""
    return str(value).strip().lower() not in ("false", "0", "no", "off")


_OPTION_NAMES = {"workers": int, "chunk": int, "chunks": None, "max_products": int, "decode": _flag}
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


class _Refusing:
    """A service whose empty search says "not there" (so auto can ask the next service)."""

    def __init__(self, service: Any):
        self._service = service

    def __getattr__(self, name: str) -> Any:
        return getattr(self._service, name)

    def search(self, request: Any, limit: int | None = None) -> Any:
        hits = self._service.search(request, limit=limit)
        if not hits:
            raise ProductNotThereError(self._service.name, None, f"no product matches {request.canonical()}")
        return hits


def refused(exc: BaseException) -> bool:
    """Whether an error means "the product is not there" (every failed product, for a partial preload)."""
    if isinstance(exc, ProductNotThereError):
        return True
    return isinstance(exc, PreloadError) and bool(exc.failures) and all(
        isinstance(e, ProductNotThereError) for e in exc.failures.values())


class FallbackEngine(Engine):
    """An engine for the first service of an ``auto`` chain that hands over to the next when refused."""

    def __init__(self, engines: list[tuple[str, Any]]):
        first = engines[0][1]()
        super().__init__(first.request, first.make_service, service_name=first.service_name, store=first.store,
                         options=first.options, clock=first.clock)
        self._next = engines[1:]
        self.tried: list[tuple[str, str]] = []  # (service, why it was passed over)

    def run(self, progress: Progress, cancel: threading.Event) -> Any:
        engine: Engine = self
        rest = list(self._next)
        while True:
            try:
                return Engine.run(engine, progress, cancel)
            except ClmsError as exc:
                if not rest or not refused(exc):
                    raise
                name, make = rest.pop(0)
                self.tried.append((engine.service_name, str(exc)))
                log.warning("auto: %s does not have the product (%s); trying %s", engine.service_name,
                            str(exc).splitlines()[0], name)
                engine = make()


def engine_for(source: Any, chain: list[str], **overrides: Any) -> Engine:
    """The engine of a read through ``chain`` (the services :func:`~intake_clms.services.service_chain` chose
    once, for the source): one service, or an ``auto`` chain that falls back when a service lacks the product."""
    settings = {**(getattr(source, "options", None) or {}), **overrides}
    if len(chain) == 1:
        return _engine(source, chain[0], settings, refuse_empty=False)
    return FallbackEngine([(name, lambda name=name: _engine(source, name, settings, refuse_empty=True))
                           for name in chain])


def _engine(source: Any, service: str, settings: dict[str, Any], refuse_empty: bool) -> Engine:
    clock = settings.get("clock") or SYSTEM
    connect = connector(service)
    store = Store(settings.get("cache_dir") or getattr(source, "cache_dir", None))
    name = getattr(source, "name", "")  # intake sets the entry's name on the sources it builds
    entry = settings.get("entry") or (name if name and name != getattr(type(source), "name", None) else "")

    def make(cancel: threading.Event) -> Any:
        found = connect({**settings, "cache_dir": store.base}, cancel, clock)
        return _Refusing(found) if refuse_empty else found

    return Engine(source.request, make, service_name=service, store=store,
                  options=options_from({**settings, "entry": entry}), clock=clock)


def preload(source: Any, chain: list[str], blocking: bool = True, progress_bar: bool | None = None,
            **overrides: Any) -> PreloadHandle:
    """Run the lifecycle; blocking returns a finished handle (errors raised), else a running one."""
    handle = engine_for(source, chain, **overrides).start(blocking=blocking, progress_bar=progress_bar)
    if blocking and handle.error is not None:
        raise handle.error
    return handle
