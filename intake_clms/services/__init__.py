"""Which service serves a request, and the registry of services.

Each service (WEkEO, the CLMS download API, CDSE) is a module with a
``connect(settings, cancel, clock) -> Service`` function (see
:class:`~intake_clms.services.base.Service`); it is imported only when a read
needs it, so creating a source stays cheap and offline.

``service="auto"`` tries the services of :func:`service_chain` in turn: when one
says the product is not (or no longer) there (:class:`ProductNotThereError`: its
search finds nothing, or the product answers 404), the next one with credentials
is asked, and the log says why.  The transition table goes stale as products
migrate, so a product listed as migrated may not be on CDSE yet (or any more).
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterable
from typing import Any

from ..errors import ServiceError, ServiceNotImplementedError
from ..catalog.products import NOT_MIGRATED

#: service name -> module with ``connect``; a service missing here is not implemented yet.
SERVICES: dict[str, str] = {
    "wekeo": "intake_clms.services.wekeo",
    "clms": "intake_clms.services.clms_api",
    "cdse": "intake_clms.services.cdse",
}

#: Preference order for ``service="auto"`` on products that have a new identifier: CDSE (the migration's
#: destination, read by window), then WEkEO (which serves the same products through a queue), then the CLMS API.
AUTO_ORDER = ("cdse", "wekeo", "clms")


class ProductNotThereError(ServiceError):
    """A service says a product is not (or no longer) there: ``auto`` asks the next service."""


def service_chain(requested: str, migration_status: str | None, available: Iterable[str]) -> list[str]:
    """The services a read tries, in order: one for an explicit choice, the auto order otherwise.

    Products not migrated yet only exist under their old WEkEO ID.  The others go
    to the implemented services of :data:`AUTO_ORDER` whose credentials are at
    hand, WEkEO when none are (its error then says where credentials are looked for).
    """
    if requested != "auto":
        return [requested]
    if migration_status == NOT_MIGRATED:
        return ["wekeo"]
    have = set(available) & set(SERVICES)  # a service not built yet is never chosen by auto
    return [s for s in AUTO_ORDER if s in have] or ["wekeo"]


def choose_service(requested: str, migration_status: str | None, available: Iterable[str]) -> str:
    """The first service of :func:`service_chain` (``auto`` resolved; explicit choices unchanged)."""
    return service_chain(requested, migration_status, available)[0]


Connector = Callable[[dict[str, Any], threading.Event, Any], Any]


def connector(service: str) -> Connector:
    """The ``connect(settings, cancel, clock)`` function of a service, or a clear "not implemented yet" error."""
    target = SERVICES.get(service)
    if target is None:
        raise ServiceNotImplementedError(
            f"reading through service {service!r} is not implemented yet in this version of intake-clms; "
            "the entry can be browsed and described, but not loaded"
        )
    return importlib.import_module(target).connect
