"""CDSE (the Copernicus Data Space Ecosystem): where every CLMS product is migrating.

One module per concern:

- :mod:`.auth`: the one token manager per process (Keycloak password grant once,
  refresh grant before the access token's end, a new login only after the refresh
  token's end) and where credentials come from;
- :mod:`.budget`: the one process-wide connection budget (CDSE allows 4 per user
  across OData, download and S3);
- :mod:`.search`: OData catalogue queries -> :class:`~intake_clms.lifecycle.service.Hit`;
- :mod:`.service`: the lifecycle service (search, the ``access`` choice, direct
  download of ``Products(Id)/$value`` with the redirect followed by hand) and ``connect``;
- :mod:`.window` / :mod:`.s3`: reading COG windows in place (the ``remote`` access kind).

The ``remote`` contract between search and the window reader: a REMOTE hit's
``extra["remote"]`` (also kept in the request's view, so it holds no secret) is::

    {"id": "<product Id>", "name": "<product Name>",
     "bucket": "eodata",
     "files": [{"name": "<file>.tif",
                "key": "CLMS/.../<Name>/<file>.tif",          # S3 key in bucket eodata (no leading /eodata/)
                "href": "<CDSE_DOWNLOAD_URL>/Products(<Id>)/Nodes(<Name>)/Nodes(<file>)/$value",
                "size": <bytes>}, ...],                        # one per band; .tif/.tiff files only
     "key": ..., "href": ..., "size": ...,                     # the first file's (one-band products)
     "bbox": [west, south, east, north]}                       # the product's footprint, degrees
"""

from __future__ import annotations

from typing import Any


def connect(settings: dict[str, Any], cancel: Any, clock: Any = None) -> Any:
    """The CDSE service for one preload (see :func:`.service.connect`)."""
    from .service import connect as _connect

    return _connect(settings, cancel, clock)
