"""CDSE (the Copernicus Data Space Ecosystem): where every CLMS product is migrating.

One module per concern:

- :mod:`.auth`: the one token manager per process (Keycloak password grant once,
  refresh grant before the access token's end, a new login only after the refresh
  token's end) and where credentials come from;
- :mod:`.budget`: the one process-wide connection budget (CDSE allows 4 per user
  across OData, download and S3);
- :mod:`.search`: OData catalogue queries -> :class:`~intake_clms.services.base.Hit`;
- :mod:`.service`: the lifecycle service (search, the ``access`` choice, direct
  download of ``Products(Id)/$value`` with the redirect followed by hand) and ``connect``;
- :mod:`.s3`: how window reads reach the COGs (S3 or HTTPS, scoped GDAL settings,
  credentials that never leave the process): the raster access the engine's window
  stage hands the one raster reader (:mod:`intake_clms.assemble.raster`).
"""

from __future__ import annotations

from typing import Any


def connect(settings: dict[str, Any], cancel: Any, clock: Any = None) -> Any:
    """The CDSE service for one preload (see :func:`.service.connect`)."""
    from .service import connect as _connect

    return _connect(settings, cancel, clock)
