"""CDSE as a lifecycle service: search with the ``access`` choice, and direct downloads of ``$value``.

Why no orders: CDSE serves every CLMS product at once.  A hit's access is
``download`` (the engine downloads ``Products(<Id>)/$value``, verifies and stores it)
or ``window`` (the engine reads the pixels under the bbox from the product's COGs
through :meth:`CdseService.sources`: one Nodes listing per product, run in the
engine's pool, off the search's path).  The ``access`` keyword chooses:

- ``download``: whole products (NetCDF where the dataset has it, else its one format);
- ``window``: the COG of every product (an error names a product without one);
- ``auto`` (default): the COG by window where the bbox covers less than
  :data:`WINDOW_SHARE` of the product's footprint, else a whole download.

The download redirect is followed here (``allow_redirects=False``): the bearer
token goes only to trusted hosts (:mod:`.hosts`: ``CDSE_TRUSTED_HOSTS``, default
``.dataspace.copernicus.eu``, plus the hosts of ``CDSE_ODATA_URL`` and
``CDSE_DOWNLOAD_URL``), so it follows the 301 to ``zipper.dataspace.copernicus.eu``
but never a presigned transfer URL on another domain.  The payload may be the
product's one file or a zip of its folder (what zipper serves): the engine
recognises a zip by its first bytes and unpacks it.  Window reads over HTTPS resolve
their links' trusted redirects the same way before GDAL reads them (GDAL's curl would
drop the token at zipper): :meth:`CdseService._window_link`.
Every request holds a slot of the process's connection budget; a download holds
its slot until the engine closes the response.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from typing import Any
from urllib.parse import quote, urljoin

import requests

from ...config import endpoints
from ...errors import IntegrityError, ParameterError, ServiceError, TooManyProductsError
from ...net.clock import SYSTEM, Clock
from ...net.http import HttpClient
from ..base import DOWNLOAD, WINDOW, Hit, Ready, product_key
from ...params import Request
from .. import ProductNotThereError
from ...net.secretlog import hide
from . import auth as auth_mod
from . import s3
from .budget import Budget, budget, hold_until_closed, limit_from
from .hosts import is_trusted, trusted_hosts
from .search import Catalogue, checksums, footprint, product_format, series_key, share

log = logging.getLogger(__name__)

SERVICE = "cdse"
ACCESS = ("auto", "download", "window")
WINDOW_SHARE = 0.25  # auto reads by window when the bbox covers less than this part of a product
REDIRECTS = 5
_TIF = (".tif", ".tiff")


def _stem(name: str) -> str:
    """A product's stem: its name without the format suffix (``..._V2.0.1_cog`` -> ``..._V2.0.1``)."""
    return re.sub(r"_(cog|nc|tif|geojson)$", "", name, flags=re.IGNORECASE)


def series_of(name: str) -> str:
    """The series a product belongs to: its stem with its dates (runs of 8 or more digits) blanked."""
    return re.sub(r"\d{8,}", "#", _stem(name))


def parse_access(value: Any) -> str:
    text = str(value or "auto").strip().lower()
    if text not in ACCESS:
        raise ParameterError("access", f"got {value!r}; expected one of {', '.join(ACCESS)}")
    return text


def payload_name(name: str, fmt: str) -> str:
    """The file name a direct download is kept under: the product's one file (``..._V2.0.1_nc`` ->
    ``..._V2.0.1.nc``, a COG -> ``.tif``).  A zip of the product folder is recognised by its first bytes and
    unpacked whatever its name; a plain file keeps this one, as WEkEO names the same product."""
    stem = name[: -len(fmt) - 1] if fmt and name.lower().endswith("_" + fmt) else name
    return f"{stem}.{ {'cog': 'tif'}.get(fmt, fmt)}" if fmt else stem


class CdseService:
    """CDSE through OData and its download service, as a lifecycle :class:`~intake_clms.services.base.Service`."""

    name = SERVICE

    def __init__(self, http: HttpClient, tokens: auth_mod.TokenManager, *, odata_url: str, download_url: str,
                 access: str = "auto", connections: Budget | None = None, cancel: threading.Event | None = None,
                 window_mode: str | None = None):
        self.http = http
        self.tokens = tokens
        self.odata_url, self.download_url = odata_url.rstrip("/"), download_url.rstrip("/")
        self.access = parse_access(access)
        self.budget = connections or budget()
        self._cancel = cancel or http.cancel
        self.catalogue = Catalogue(http, self.odata_url, self.budget, self._cancel)
        self.window_mode = window_mode or s3.mode()  # s3 | https, for window reads
        self._layout: dict[str, list[str]] = {}  # a series' file names with "{stem}" for the product's stem
        self._layout_lock = threading.Lock()
        self._listing: dict[str, threading.Event] = {}  # series being listed -> set when its names are known
        self._unpatterned: set[str] = set()  # series whose file names do not follow their products' stems
        self._moved: dict[str, str] = {}  # window links: a base URL -> the trusted base its files redirect to
        self._probing = threading.Lock()  # one window-link probe at a time: the others then find its answer
        #: hosts that may receive the bearer token (names and .domain patterns; see :mod:`.hosts`)
        self.trusted = trusted_hosts(urls=(self.odata_url, self.download_url))

    def __repr__(self) -> str:
        return f"CdseService(odata={self.odata_url!r}, access={self.access!r})"

    # -- search

    def search(self, request: Request, limit: int | None = None) -> list[Hit]:
        """The request's products, one hit per date: ``fileFormat`` narrows the listing where one format serves
        (``cog`` for window reads; ``nc`` first for downloads, every format when the dataset has no NetCDF).
        With ``limit``, the listing stops once more than ``limit`` dates are found (small pages)."""
        fmt = {"window": "cog", "download": "nc"}.get(self.access)
        if limit is not None and not fmt:  # count the dates first (one format's products: one per date)
            dates = next((n for n in (self.catalogue.count(request, f) for f in ("nc", "cog")) if n),
                         0) or self.catalogue.count(request, None)
            if dates > limit:
                raise TooManyProductsError(SERVICE, dates, limit)
        top = None if limit is None else (limit + 2) * (1 if fmt else 3)  # a date has up to 3 formats

        def refuse(dates: int) -> None:  # one format's products, one per date: the first page's count decides
            if limit is not None and dates > limit:
                raise TooManyProductsError(SERVICE, dates, limit)

        groups: OrderedDict[str, dict[str, dict[str, Any]]] = OrderedDict()

        def gather(formats: str | None) -> None:
            for p in self.catalogue.products(request, formats, top, refuse if limit is not None and fmt else None):
                groups.setdefault(series_key(p), {})[product_format(p)] = p
                if limit is not None and len(groups) > limit + 1:  # the last date may still miss a format
                    return

        gather(fmt)
        if not groups and fmt == "nc":
            gather(None)
        hits = []
        for formats in groups.values():
            chosen, how = self._choose(formats, request)
            hits.append(self._hit(chosen, how))
        return hits

    def _choose(self, formats: dict[str, dict[str, Any]], request: Request) -> tuple[dict[str, Any], str]:
        cog = formats.get("cog")
        whole = formats.get("nc") or next((p for f, p in formats.items() if f != "cog"), None) or cog
        if self.access == "window":
            if cog is None:
                raise ServiceError(SERVICE, None, f"access='window': product {next(iter(formats.values()))['Name']} has no "
                                   "COG on CDSE; use access='download' (or 'auto')")
            return cog, WINDOW
        if self.access == "auto" and cog is not None and share(request.bbox, footprint(cog)) < WINDOW_SHARE:
            return cog, WINDOW
        assert whole is not None
        return whole, DOWNLOAD

    def _hit(self, p: dict[str, Any], how: str) -> Hit:
        name = str(p["Name"])
        size = p.get("ContentLength")
        dates = p.get("ContentDate") or {}
        box = footprint(p)
        fmt = product_format(p)
        extra: dict[str, Any] = {"id": str(p["Id"]), "name": name, "s3_path": p.get("S3Path"), "format": fmt,
                                 "bbox": list(box) if box else None}
        if how == DOWNLOAD:
            name = payload_name(name, fmt)
        return Hit(key=product_key(str(p["Name"])), name=name, access=how, ordered=False,
                   size=int(size) if isinstance(size, (int, float)) and size > 0 else None,
                   start=dates.get("Start"), end=dates.get("End"), checksums=checksums(p), extra=extra)

    def sources(self, hit: Hit, listed: bool = False) -> list[Any]:
        """The raster sources of a window hit: one per GeoTIFF of the product, each a GDAL path with this
        service's access (settings, credentials, connection budget).

        The files' names come from one Nodes listing: the first product's is listed, and the products of
        the same series are read under the same names with their own stem (no listing each: a long time
        series costs one header and one tile read per product).  ``listed=True`` lists this product (the
        engine asks for it when a name so derived is not there).
        """
        from ...assemble.raster import RasterSource

        pid, name = str(hit.extra["id"]), str(hit.extra["name"])
        prefix = str(hit.extra.get("s3_path") or "").lstrip("/")
        bucket, _, folder = prefix.partition("/")
        stem, series = _stem(name), series_of(name)
        names = None if listed else self._known(series)
        if names is None:
            try:
                names = [str(n.get("Name") or n.get("Id")) for n in self.catalogue.nodes(pid, name)]
                names = [n for n in names if n.lower().endswith(_TIF)]
                if not names:
                    raise ServiceError(SERVICE, None, f"COG product {name} lists no GeoTIFF file")
                with self._layout_lock:
                    if all(stem in n for n in names):
                        self._layout[series] = [n.replace(stem, "{stem}") for n in names]
                    else:  # names that do not follow the product's stem: every product is listed, in parallel
                        self._unpatterned.add(series)
            finally:
                with self._layout_lock:
                    done = self._listing.pop(series, None)
                if done is not None:
                    done.set()
        else:
            names = [n.replace("{stem}", stem) for n in names]
        access = s3.CdseAccess(self.window_mode, self.tokens, self.budget, self._cancel)
        found = []
        for fname in names:
            href = f"{self.download_url}/Products({pid})/Nodes({quote(name, safe='')})/Nodes({quote(fname, safe='')})/$value"
            where = {"bucket": bucket or s3.BUCKET, "key": f"{folder}/{fname}" if folder else fname,
                     "href": self._window_link(href) if self.window_mode == s3.HTTPS else href}
            found.append(RasterSource(s3.vsi_path(where, self.window_mode), access, name=fname))
        return found

    def _window_link(self, href: str) -> str:
        """The URL GDAL reads a file's ``$value`` from over HTTPS: ``href`` with its trusted redirects resolved.

        GDAL gets the token as a header (``GDAL_HTTP_HEADERS``), and curl drops such a header when a redirect
        changes the host: a ``$value`` that answers 301 to ``zipper`` (live; it wants the token) would be read
        without it (401).  So one request with the token follows the redirects that keep the resource's path
        (``.../Products(..)/Nodes(..)/$value``) on a trusted host (:mod:`.hosts`), and GDAL gets the last such
        URL; any other redirect (a presigned, expiring transfer URL, whose query is the credential) is left to
        GDAL, which reaches it without the token.  Since only the base changes, the answer is kept per base URL:
        a time series costs one such request, not one per product.  A failed probe changes nothing: GDAL's read
        reports the error.
        """
        cut = href.find("/Products(")
        base, rest = (href[:cut], href[cut:]) if cut > 0 else (href, "")
        with self._layout_lock:
            moved = self._moved.get(base)
        if moved is not None:
            return moved + rest
        with self._probing:
            with self._layout_lock:
                moved = self._moved.get(base)
            return moved + rest if moved is not None else self._probe(href, base, rest)

    def _probe(self, href: str, base: str, rest: str) -> str:
        url = href
        try:
            with self.budget.slot(self._cancel):
                for _ in range(REDIRECTS):
                    r = self.http.request("GET", url, auth=self.tokens, headers={"Range": "bytes=0-0"}, stream=True,
                                          ok=(200, 206, 416, 301, 302, 303, 307, 308), what="window link",
                                          allow_redirects=False)
                    r.close()
                    location = r.headers.get("Location")
                    if r.status_code not in (301, 302, 303, 307, 308) or not location:
                        break
                    target = urljoin(url, location)
                    if not is_trusted(target, self.trusted) or not (rest and target.endswith(rest)):
                        break  # another host's own link (a presigned transfer): GDAL follows it, without the token
                    url = target
        except ServiceError as exc:
            log.debug("cdse: could not resolve the window link of %s (%s); GDAL reads it as is", href, exc)
            return href
        if rest:
            with self._layout_lock:
                self._moved[base] = url[: len(url) - len(rest)]
        return url

    def _known(self, series: str) -> list[str] | None:
        """A series' file names: known, or listed by the first caller while the others wait for it (a series
        costs one listing even when the engine's threads all start at once); None: this caller lists."""
        while True:
            with self._layout_lock:
                if series in self._layout:
                    return self._layout[series]
                if series in self._unpatterned:
                    return None
                pending = self._listing.get(series)
                if pending is None:
                    self._listing[series] = threading.Event()
                    return None
            if not pending.wait(30.0) or self._cancel.is_set():
                return None  # the first listing is stuck or failed: list this product itself

    # -- direct downloads

    def fetch(self, hit: Hit, order_id: str | None, offset: int) -> requests.Response:
        """``Products(Id)/$value`` from ``offset``, the redirect followed here, the body holding one budget slot."""
        url = f"{self.download_url}/Products({hit.extra['id']})/$value"
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        self.budget.acquire(self._cancel)
        try:
            response = self._follow(url, headers, hit)
            self._check_size(response, hit)
        except BaseException:
            self.budget.release()
            raise
        return hold_until_closed(response, self.budget)

    def _follow(self, url: str, headers: dict[str, str], hit: Hit) -> requests.Response:
        for _ in range(REDIRECTS + 1):
            trusted = is_trusted(url, self.trusted)
            try:
                r = self.http.request("GET", url, auth=self.tokens if trusted else None, headers=dict(headers),
                                      ok=(200, 206, 416, 301, 302, 303, 307, 308), what="download",
                                      stream=True, allow_redirects=False)
            except ServiceError as exc:
                if exc.status in (404, 410) and trusted:
                    raise ProductNotThereError(SERVICE, exc.status, f"product {hit.extra.get('name', hit.name)} is not (or no longer) on CDSE: "
                                               f"{exc.message}") from None
                raise
            if r.status_code not in (301, 302, 303, 307, 308):
                return r
            location = r.headers.get("Location")
            r.close()
            if not location:
                raise ServiceError(SERVICE, r.status_code, "download: a redirect without a Location")
            url = urljoin(url, location)
            hide(url)  # a presigned transfer URL is a credential: never in a log line
        raise ServiceError(SERVICE, None, f"download of {hit.name}: more than {REDIRECTS} redirects")

    @staticmethod
    def _check_size(response: requests.Response, hit: Hit) -> None:
        """The body's full size must be the catalogue's ``ContentLength``: a mismatch is caught before any byte is kept."""
        if hit.size is None or response.status_code == 416:
            return
        total: str | None = None
        if response.status_code == 206:
            total = response.headers.get("Content-Range", "").rpartition("/")[2]
        else:
            total = response.headers.get("Content-Length")
        if total and total.isdigit() and int(total) != hit.size:
            response.close()
            raise IntegrityError(f"{hit.name}: the download announces {total} bytes, the catalogue {hit.size}")

    # -- no orders on CDSE

    def order(self, hit: Hit) -> str:
        raise ServiceError(SERVICE, None, "CDSE serves products directly: nothing to order")

    def find_order(self, hit: Hit, since: float) -> str | None:
        return None

    def poll(self, order_id: str) -> tuple[str, Ready | None]:
        raise ServiceError(SERVICE, None, "CDSE serves products directly: no order to poll")

    def cancel(self, order_id: str) -> None:  # pragma: no cover - nothing is ever ordered
        return None


def connect(settings: dict[str, Any], cancel: threading.Event, clock: Clock | None = None) -> CdseService:
    """The CDSE service for one preload.

    Settings (source keywords): ``access`` (auto | download | window), ``username`` /
    ``password`` (else CDSE_USERNAME / CDSE_PASSWORD, else ~/.netrc), ``max_connections``
    (else CDSE_MAX_CONNECTIONS, else 4), ``attempts`` and ``backoff`` (retries).
    """
    clock = clock or SYSTEM
    ends = endpoints()
    access = parse_access(settings.get("access"))
    user, password, totp = auth_mod.read_credentials(ends.cdse_token, settings)
    tokens = auth_mod.manager(ends.cdse_token, user, password, totp, clock)
    http = HttpClient(SERVICE, cancel=cancel, attempts=int(settings.get("attempts", 5)),
                      backoff=float(settings.get("backoff", 0.5)), clock=clock)
    return CdseService(http, tokens, odata_url=ends.cdse_odata, download_url=ends.cdse_download, access=access,
                       connections=budget(limit_from(settings)), cancel=cancel, window_mode=s3.mode(settings))
