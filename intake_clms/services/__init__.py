"""Which service serves a request, and the registry of services.

Each service (WEkEO, the CLMS download API, CDSE) is a module with a
``connect(settings, cancel, clock) -> Service`` function (see
:class:`~intake_clms.lifecycle.service.Service`); it is imported only when a read
needs it, so creating a source stays cheap and offline.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterable
from typing import Any

from ..errors import ServiceNotImplementedError
from ..products import NOT_MIGRATED

#: service name -> module with ``connect``; a service missing here is not implemented yet.
SERVICES: dict[str, str] = {
    "wekeo": "intake_clms.services.wekeo",
    "clms": "intake_clms.services.clms_api",
}

#: Preference order for ``service="auto"`` on products that have a new identifier.
AUTO_ORDER = ("wekeo", "cdse", "clms")


def choose_service(requested: str, migration_status: str | None, available: Iterable[str]) -> str:
    """Resolve ``auto`` to a concrete service; explicit choices are returned unchanged.

    Products not migrated yet only exist under their old WEkEO ID.  The others go
    to the first implemented service in :data:`AUTO_ORDER` whose credentials are
    at hand, WEkEO when none are (its error then says where credentials are looked for).
    """
    if requested != "auto":
        return requested
    if migration_status == NOT_MIGRATED:
        return "wekeo"
    have = set(available) & set(SERVICES)  # a service not built yet is never chosen by auto
    return next((s for s in AUTO_ORDER if s in have), "wekeo")


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
