"""A local, fault-injectable imitation of the services CLMS data comes from (WEkEO HDA, the CLMS API, CDSE).

``Sandbox`` runs it in a background thread for tests; ``intake-clms sandbox``
(:func:`intake_clms.sandbox.server.main`) runs it in the foreground for demos.
The names below are imported on first use, so ``python -m
intake_clms.sandbox.server`` and the protocol modules load without the server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from intake_clms.sandbox.server import Sandbox, SandboxProcess, run_in_process

__all__ = ["Sandbox", "SandboxProcess", "run_in_process"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from intake_clms.sandbox import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
