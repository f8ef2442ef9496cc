"""The small interface every service implements (WEkEO, the CLMS download API, CDSE), and its data.

A service only speaks its protocol.  Retries, waiting, job state, downloading,
verifying, extracting, storing and assembling are the engine's and the store's,
so a service adds no lifecycle code of its own.

Names: a *hit* is a search result pointing at one server *product*; a *job* is one
service's order or download of one product.  Each hit says how its product is
reached, its *access* (one word per idea, the same as the user's ``access=`` keyword):

- ``download``: the whole product is fetched, after an order when ``ordered`` (order ->
  wait in the queue -> fetch: WEkEO, CLMS data requests), at once otherwise (CLMS
  auxiliary files, CDSE ``$value``);
- ``window``: only the pixels under the bbox are read from the product's COGs in place
  (CDSE); :meth:`Service.sources` hands the engine a raster source per file (a GDAL path
  and the service's access: settings, credentials by reference, connection budget), and
  the engine keeps what it read in the store as a product of its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Protocol

import requests

from ..params import Request

DOWNLOAD, WINDOW = "download", "window"
ACCESS_KINDS = (DOWNLOAD, WINDOW)

_SUFFIX_FORMAT = re.compile(r"_(nc|cog|tif|geojson|gpkg|shp)$", re.IGNORECASE)
_EXT_FORMAT = {".nc": "nc", ".nc4": "nc", ".tif": "tif", ".tiff": "tif", ".geojson": "geojson", ".gpkg": "gpkg"}


def product_key(name: str, fmt: str | None = None) -> str:
    """The store key of a server product, the same whatever the service that names it.

    WEkEO names a product by its file (``c_gls_NDVI300_202401010000_GLOBE_OLCI_V2.0.1.nc``,
    or a ``.zip`` of the folder ``..._nc``), CDSE by its folder (``..._V2.0.1_nc``): all
    give ``c_gls_NDVI300_202401010000_GLOBE_OLCI_V2.0.1.nc``.
    """
    from ..store.fsutil import safe_name

    text = str(name).strip()
    if text.lower().endswith(".zip"):
        text = text[:-4]
    m = _SUFFIX_FORMAT.search(text)
    if m:
        text, fmt = text[: m.start()], fmt or m.group(1).lower()
    else:
        for ext, kind in _EXT_FORMAT.items():
            if text.lower().endswith(ext):
                text, fmt = text[: -len(ext)], fmt or kind
                break
    return safe_name(f"{text}.{fmt}" if fmt else text, 200)


@dataclass(frozen=True)
class Hit:
    """One server product found by a search."""

    key: str  # the product's store key (see product_key)
    name: str  # the server's name for it
    access: str = DOWNLOAD  # download | window
    ordered: bool = True  # a download that needs an order first (and a poll of its queue)
    size: int | None = None  # the catalogue's figure: informative only (the download trusts Content-Length)
    start: str | None = None
    end: str | None = None
    checksums: dict[str, str] = field(default_factory=dict)  # announced by the catalogue, e.g. {"md5": ...}
    extra: dict[str, Any] = field(default_factory=dict)  # what the service needs to order or fetch it


@dataclass(frozen=True)
class Ready:
    """What a finished order tells before the download."""

    size: int | None = None
    name: str | None = None
    checksums: dict[str, str] = field(default_factory=dict)


class Service(Protocol):
    """Every method may raise ServiceError (with the HTTP status and the server's message)."""

    name: str  # wekeo | clms | cdse

    def search(self, request: Request, limit: int | None = None) -> list[Hit]:
        """Every product matching the request (all pages); with ``limit``, a service may stop paging as soon
        as it has found more than ``limit`` (the engine then refuses, or asks again without a limit)."""

    def order(self, hit: Hit) -> str:
        """Place one order (ordered hits); returns its id.  Never retried blindly: after a lost
        answer it raises AmbiguousOrderError and the engine asks :meth:`find_order` first."""

    def find_order(self, hit: Hit, since: float) -> str | None:
        """An order of this product the server took since ``since`` (epoch s) and did not end badly, or None."""

    def poll(self, order_id: str) -> tuple[str, Ready | None]:
        """("queued" | "running", None) or ("done", Ready); raises OrderExpiredError if the server forgot it,
        ServiceError if it ended badly."""

    def fetch(self, hit: Hit, order_id: str | None, offset: int) -> requests.Response:
        """The streaming body from ``offset`` (a Range request when offset > 0); 200, 206 or 416.
        Raises OrderExpiredError when the link is dead (the engine orders again, once)."""

    def cancel(self, order_id: str) -> None:
        """Ask the server to cancel an order (best effort; the engine bounds the time it may take)."""

    def sources(self, hit: Hit) -> list[Any]:
        """Window hits: one :class:`~intake_clms.assemble.raster.RasterSource` per file of the product."""
