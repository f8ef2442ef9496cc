"""CDSE's OData catalogue: one request's products, every page, as lifecycle hits.

Why the query looks the way it does: ``Collection/Name eq 'CLMS'`` is what makes
CDSE's catalogue fast; the ``datasetIdentifier`` attribute names the dataset;
``fileFormat`` is added when only one format can serve the access asked for;
dates are an overlap test on ``ContentDate``; the area is ``OData.CSC.Intersects``.
Pages are ``$top=1000`` in ``ContentDate/Start asc`` order (the server breaks ties
by Id), ``$expand=Attributes``, following ``@odata.nextLink``.  CDSE refuses a
``$skip`` past 10,000, so a long listing is cut before that: the next window
starts at the last product's start date (products already seen are skipped).

A hit's key is :func:`~intake_clms.services.base.product_key` of the name, so
the NetCDF ``..._nc`` product CDSE lists is the same stored product as WEkEO's
``....nc`` file.  Checksums come from ``Checksum`` (MD5; BLAKE3 only when the
``blake3`` package is importable), the size from ``ContentLength``.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

from ...errors import ServiceError
from ...net.http import HttpClient
from ..base import product_key
from ...params import Request
from .budget import Budget

log = logging.getLogger(__name__)

SERVICE = "cdse"
COLLECTION = "CLMS"
PAGE = 1000  # CDSE's largest $top
SKIP_CAP = 10_000  # CDSE answers 422 past this $skip
HAS_BLAKE3 = importlib.util.find_spec("blake3") is not None


def attribute(name: str, value: str) -> str:
    """The OData lambda testing one string attribute of a product."""
    return (f"Attributes/OData.CSC.StringAttribute/any(att:att/Name eq '{_quote(name)}' and "
            f"att/OData.CSC.StringAttribute/Value eq '{_quote(value)}')")


def _quote(text: str) -> str:
    return str(text).replace("'", "''")


def _iso(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def polygon(bbox: tuple[float, float, float, float]) -> str:
    w, s, e, n = (f"{v:.6f}".rstrip("0").rstrip(".") for v in bbox)
    return f"SRID=4326;POLYGON(({w} {s},{e} {s},{e} {n},{w} {n},{w} {s}))"


def build_filter(request: Request, fmt: str | None = None, since: dt.datetime | None = None) -> str:
    """The ``$filter`` of a request (``since``: the start of a later window of a long listing)."""
    if not request.dataset_identifier:
        raise ServiceError(SERVICE, None, f"CDSE lists CLMS products by datasetIdentifier; {request.dataset_id} names none")
    parts = [f"Collection/Name eq '{COLLECTION}'", attribute("datasetIdentifier", request.dataset_identifier)]
    if fmt:
        parts.append(attribute("fileFormat", fmt))
    if request.start is not None:
        parts.append(f"ContentDate/End gt {_iso(dt.datetime.combine(request.start, dt.time()))}")
    if request.end is not None:
        parts.append(f"ContentDate/Start lt {_iso(dt.datetime.combine(request.end + dt.timedelta(days=1), dt.time()))}")
    if since is not None:
        parts.append(f"ContentDate/Start ge {_iso(since)}")
    if tuple(request.bbox) != (-180.0, -90.0, 180.0, 90.0):
        parts.append(f"OData.CSC.Intersects(area=geography'{polygon(request.bbox)}')")
    return " and ".join(parts)


def _parse_time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).replace(tzinfo=None)


class Catalogue:
    """Pages through CDSE's OData catalogue (anonymous, each request inside the connection budget)."""

    def __init__(self, http: HttpClient, odata_url: str, budget: Budget, cancel: threading.Event,
                 page: int = PAGE, skip_cap: int = SKIP_CAP):
        self.http, self.url, self.budget, self.cancel = http, odata_url.rstrip("/"), budget, cancel
        self.page, self.skip_cap = page, skip_cap
        self.requests = 0  # OData requests sent (tests read it)

    def get(self, url: str, params: dict[str, Any] | None = None, what: str = "catalogue search") -> Any:
        with self.budget.slot(self.cancel):
            self.requests += 1
            r = self.http.request("GET", url, params=params, what=what)
            try:
                return r.json()
            except ValueError:
                raise ServiceError(SERVICE, r.status_code, f"{what}: the answer is not JSON") from None
            finally:
                r.close()

    def products(self, request: Request, fmt: str | None = None, top: int | None = None,
                 counted: Callable[[int], None] | None = None) -> Iterator[dict[str, Any]]:
        """Every product of the request, in ContentDate/Start order, each once (pages of ``top`` when given:
        a caller that stops early then costs the catalogue one small page).  ``counted``: called with the
        request's total (``$count=true`` on the first page) before any product is yielded, so a caller can
        refuse a request after one catalogue call."""
        seen: set[str] = set()
        since: dt.datetime | None = None
        page = self.page if top is None else max(1, min(self.page, top))
        while True:
            params = {"$filter": build_filter(request, fmt, since), "$orderby": "ContentDate/Start asc",
                      "$top": str(page), "$expand": "Attributes"}
            if counted is not None and since is None:
                params["$count"] = "true"
            body = self.get(f"{self.url}/Products", params)
            if counted is not None and since is None:
                counted(int(body.get("@odata.count") or 0))
            listed = 0
            last: str | None = None
            fresh = 0
            while True:
                values = body.get("value") or []
                for p in values:
                    listed += 1
                    last = (p.get("ContentDate") or {}).get("Start") or last
                    if p.get("Id") in seen:
                        continue
                    seen.add(p.get("Id"))
                    fresh += 1
                    yield p
                nxt = body.get("@odata.nextLink")
                if not nxt or not values:
                    return
                if listed + page > self.skip_cap:
                    break  # the next page would pass the $skip cap: start a new window
                body = self.get(nxt)
            if last is None:
                return
            start = _parse_time(last)
            if since is not None and start <= since and not fresh:
                raise ServiceError(SERVICE, None, f"more than {self.skip_cap} products start at {last}; "
                                   "CDSE cannot page past them: narrow the dates or the area")
            since = start
            log.info("%s: more than %d products: continuing the listing from %s", SERVICE, listed, last)

    def count(self, request: Request, fmt: str | None = None) -> int:
        """How many products the request has (``$count=true`` with ``$top=0``: nothing is listed)."""
        params = {"$filter": build_filter(request, fmt, None), "$top": "0", "$count": "true"}
        return int(self.get(f"{self.url}/Products", params).get("@odata.count") or 0)

    def nodes(self, product_id: str, name: str) -> list[dict[str, Any]]:
        """The files of a product folder (``Products(Id)/Nodes(Name)/Nodes``)."""
        url = f"{self.url}/Products({product_id})/Nodes({quote(name, safe='')})/Nodes"
        body = self.get(url, what="product listing")
        return list(body.get("result") or body.get("value") or [])


def checksums(product: dict[str, Any]) -> dict[str, str]:
    """{"md5": ...} (and "blake3" when the package can check it) from a product's ``Checksum`` list."""
    out: dict[str, str] = {}
    for c in product.get("Checksum") or []:
        algo, value = str(c.get("Algorithm") or "").lower(), c.get("Value")
        if not value:
            continue
        if algo == "md5" or (algo == "blake3" and HAS_BLAKE3):
            out[algo] = str(value).lower()
    return out


def attributes(product: dict[str, Any]) -> dict[str, Any]:
    return {a.get("Name"): a.get("Value") for a in product.get("Attributes") or []}


def footprint(product: dict[str, Any]) -> tuple[float, float, float, float] | None:
    """The bbox of a product's ``GeoFootprint`` (GeoJSON), or None."""
    geo = product.get("GeoFootprint") or {}
    xs: list[float] = []
    ys: list[float] = []

    def walk(c: Any) -> None:
        if isinstance(c, (list, tuple)) and len(c) >= 2 and all(isinstance(v, (int, float)) for v in c[:2]):
            xs.append(float(c[0]))
            ys.append(float(c[1]))
        elif isinstance(c, (list, tuple)):
            for item in c:
                walk(item)

    walk(geo.get("coordinates"))
    if not xs:
        return None
    return min(xs), min(ys), max(xs), max(ys)


def share(bbox: tuple[float, float, float, float], product: tuple[float, float, float, float] | None) -> float:
    """Which part of a product's area (in degrees squared) the bbox covers: 0..1 (1 when unknown)."""
    if product is None:
        return 1.0
    w, s, e, n = product
    area = (e - w) * (n - s)
    if area <= 0:
        return 1.0
    iw, is_, ie, in_ = max(w, bbox[0]), max(s, bbox[1]), min(e, bbox[2]), min(n, bbox[3])
    return max(0.0, ie - iw) * max(0.0, in_ - is_) / area


def product_format(product: dict[str, Any]) -> str:
    """``nc`` | ``cog`` | ``geojson`` | ...: the fileFormat attribute, else the name's suffix."""
    fmt = attributes(product).get("fileFormat")
    if fmt:
        return str(fmt).lower()
    name = str(product.get("Name") or "")
    return name.rsplit("_", 1)[-1].lower() if "_" in name else ""


def series_key(product: dict[str, Any]) -> str:
    """The product whatever its format: ``..._nc`` and ``..._cog`` of one date share it."""
    key = product_key(str(product.get("Name")))
    return key.rsplit(".", 1)[0] if "." in key else key
