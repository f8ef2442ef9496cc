"""A local, fault-injectable imitation of the services CLMS data comes from (WEkEO HDA, the CLMS API, CDSE).

``Sandbox`` runs it in a background thread for tests; ``intake-clms sandbox``
(:func:`intake_clms.sandbox.server.main`) runs it in the foreground for demos.
"""

from intake_clms.sandbox.server import Sandbox, SandboxProcess, run_in_process

__all__ = ["Sandbox", "SandboxProcess", "run_in_process"]
