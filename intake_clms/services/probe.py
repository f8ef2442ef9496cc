"""Which service of a read's chain would answer a request, and the newest products it holds: asked before the read.

A read with ``service="auto"`` learns service by service who has the product (see
:mod:`intake_clms.services`): when the first services find nothing it falls
through to the next, and a service that *orders* (WEkEO's queue, the CLMS
download API) then spends quota; the CLMS API even orders dates it has no data
for (its cut-to-order search lists no products), to end in "no data found" after
its queue.  An interface that proposes a request (the GUI) must propose dates the
services have and say when a read would fall through to an ordering service
*before* it happens: this module searches the chain as a read would, orders
nothing, and never retries long (an unreachable service is reported, not waited for).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ClmsError, TooManyProductsError
from ..params import Request
from . import connector
from .base import Hit

#: Services whose search lists the products the server holds.  The CLMS download API's cut-to-order
#: search turns any request into orders, so it cannot tell which dates exist.
CATALOGUES = ("cdse", "wekeo")
#: Services that place orders (a queue, quota) when the products they found are not known one by one.
ORDERING = ("wekeo", "clms")
#: How services are called in messages.
LABELS = {"cdse": "CDSE", "wekeo": "WEkEO", "clms": "the CLMS download API"}
#: A probe is a look, not a read: one retry, short waits, and short listings (a range with more products
#: is halved, the newer half first: a few counts instead of a long listing).
PROBE_SETTINGS = {"attempts": 2, "backoff": 0.2}
PROBE_LIMIT = 12


def label(service: str) -> str:
    return LABELS.get(service, service)


@dataclass(frozen=True)
class Answer:
    """What a chain says about a request: the service a read would use, what it found, who had nothing."""

    service: str | None  # the service a read would end with; None when the chain could not be asked
    hits: list[Hit] = field(default_factory=list)  # its products (for an ordering-only service: its orders)
    passed: list[str] = field(default_factory=list)  # services before it that found nothing
    problem: str = ""  # why the chain could not be asked (offline, refused credentials, ...)

    @property
    def orders(self) -> bool:
        """Whether reading through the answering service places orders (a queue, quota)."""
        return any(h.ordered for h in self.hits) if self.hits else self.service in ORDERING

    @property
    def falls_through(self) -> bool:
        """Whether ``auto`` would pass over services (they found nothing) before this one."""
        return bool(self.passed) and self.service is not None

    def newest(self) -> Hit | None:
        """The newest product found (by its end, else its start); None for orders or nothing found."""
        if self.service not in CATALOGUES:
            return None
        dated = [h for h in self.hits if h.end or h.start]
        return max(dated, key=lambda h: str(h.end or h.start)[:19], default=None)

    def notice(self) -> str:
        """One sentence for a user when the read would fall through to a service that orders; else ''."""
        if not (self.falls_through and self.orders):
            return ""
        nothing = " and ".join(label(s) for s in self.passed)
        return (f"{nothing} found no product for this request, so `auto` would fall through to "
                f"{label(self.service or '')}, which **orders** it (a wait in its queue, your quota)")


def windows(end: dt.date, days: int, first: dt.date | None = None, steps: int = 3) -> list[tuple[dt.date, dt.date]]:
    """Date ranges back from ``end``, each 8 times longer than the last (``days`` first), not before ``first``."""
    out: list[tuple[dt.date, dt.date]] = []
    top, span = end, max(1, days)
    for _ in range(steps):
        low = top - dt.timedelta(days=span - 1)
        if first is not None and low < first:
            low = first
        if low > top:
            break
        out.append((low, top))
        if first is not None and low <= first:
            break
        top, span = low - dt.timedelta(days=1), span * 8
    return out


def _search(service: Any, request: Request, start: dt.date | None, end: dt.date | None) -> tuple[bool, list[Hit]]:
    """(any product?, the products) of [start, end]; the products are left out (``[]``) past PROBE_LIMIT."""
    try:
        hits = list(service.search(dataclasses.replace(request, start=start, end=end), limit=PROBE_LIMIT))
    except TooManyProductsError:
        return True, []
    return bool(hits), hits if len(hits) <= PROBE_LIMIT else []


def _newest(service: Any, request: Request, start: dt.date | None, end: dt.date | None) -> tuple[bool, list[Hit]]:
    """:func:`_search` of [start, end], or of its newest part holding at most PROBE_LIMIT products (the
    range halved, newer half first: a few short searches instead of a long listing)."""
    found, hits = _search(service, request, start, end)
    if not found or hits or start is None or end is None or end <= start:
        return found, hits
    middle = start + (end - start) / 2
    newer = _newest(service, request, middle + dt.timedelta(days=1), end)
    return newer if newer[0] else _newest(service, request, start, middle)


def answer(request: Request, chain: Sequence[str], settings: dict[str, Any] | None = None,
           ranges: Iterable[tuple[dt.date | None, dt.date | None]] | None = None) -> Answer:
    """Ask the services of ``chain`` in turn, as a read would, which one has products for ``request``.

    ``ranges`` (newest first) replaces the request's dates: a catalogue service is asked
    for each in turn until one has products (the newest products it holds); a service
    that only orders is asked for the first range.  Nothing is ordered.
    """
    spans = list(ranges) if ranges is not None else [(request.start, request.end)]
    look = _newest if ranges is not None else _search  # the newest products, or whether there are any
    cancel = threading.Event()
    passed: list[str] = []
    for service in chain:
        try:
            connected = connector(service)({**(settings or {}), **PROBE_SETTINGS}, cancel, None)
            if service not in CATALOGUES:  # its search is its orders (it lists no products to look at)
                start, end = spans[0] if spans else (request.start, request.end)
                return Answer(service, connected.search(dataclasses.replace(request, start=start, end=end)), passed)
            for start, end in spans:
                found, hits = look(connected, request, start, end)
                if found:
                    return Answer(service, hits, passed)
        except ClmsError as exc:
            return Answer(None, [], passed, f"{label(service)}: {str(exc).splitlines()[0]}")
        passed.append(service)
    return Answer(None, [], passed)
