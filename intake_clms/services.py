"""Which service serves a request, and the registry of service backends.

Backends (WEkEO HDA, the CLMS download API, CDSE) register here by name and are
imported only when a read needs them, so creating a source stays cheap and
offline.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable

from .errors import ServiceNotImplementedError
from .products import NOT_MIGRATED

#: service name -> "module:attribute" of its backend; a service missing here is not implemented yet.
BACKENDS: dict[str, str] = {
    "wekeo": "intake_clms.backends.hda:HdaBackend",
    "clms": "intake_clms.backends.clms:ClmsBackend",
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
    have = set(available) & set(BACKENDS)  # a service whose backend is not built yet is never chosen by auto
    return next((s for s in AUTO_ORDER if s in have), "wekeo")


def get_backend(service: str):
    """The backend class for a service, or a clear "not implemented yet" error."""
    target = BACKENDS.get(service)
    if target is None:
        raise ServiceNotImplementedError(
            f"reading through service {service!r} is not implemented yet in this version of intake-clms; "
            "the entry can be browsed and described, but not loaded"
        )
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)
