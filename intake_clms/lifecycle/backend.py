"""The small interface a service implements to plug into the lifecycle engine.

A backend only speaks its protocol: search, order, poll, fetch.  Retries,
waiting, caching, resuming, extraction and assembly are the engine's, so the
CLMS download API and CDSE backends add no lifecycle code of their own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import requests

from ..params import Request


@dataclass
class Product:
    """One downloadable product found by a search."""

    id: str
    name: str
    size: int | None = None  # the catalogue's figure: informative only, the download trusts Content-Length
    start: str | None = None
    end: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # what the backend needs to order it


@dataclass
class Ready:
    """What a finished order tells before the download."""

    size: int | None = None
    name: str | None = None


class Backend(Protocol):
    """search -> order -> poll -> fetch; every method may raise ServiceError (with the server's message)."""

    service: str

    def search(self, request: Request) -> list[Product]:
        """Every product matching the request (all pages)."""

    def order(self, product: Product) -> str:
        """Place an order; returns its id (persisted so a rerun does not order again)."""

    def poll(self, order_id: str) -> tuple[str, Ready | None]:
        """("queued" | "running", None) or ("done", Ready); raises OrderExpiredError if the server forgot it."""

    def fetch(self, order_id: str, offset: int) -> requests.Response:
        """The streaming body from ``offset`` (a Range request when offset > 0).

        Raises OrderExpiredError when the link is dead (the engine orders again, once).
        A backend may also offer ``cancel(order_id)``: the engine calls it, best effort,
        when the user cancels (a refusal or a hanging call never blocks the local cancel).
        """
