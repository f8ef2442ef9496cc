"""The CLMS download API's catalogue (``@search``), read into small typed records and cached on disk.

The portal lists every DataSet with the fields a download needs: its UID, the
download information items (source, format, path), the pre-packaged files, CRS
list, time extent, bounding box and time-series limits.  Asking for only those
fields (not ``fullobjects``) keeps the listing a few hundred kB; it is paged
(``batching.next``) and changes rarely, so it is kept on disk for a day by
default and re-read only when older (or on ``refresh=True``).  The parser is
tolerant: real entries mix ``full_format`` strings and vocabulary terms,
bounding-box numbers come as strings, and older entries lack fields.
"""

from __future__ import annotations

import datetime as dt
import difflib
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # only annotations: the HTTP stack is imported when a listing is fetched
    import requests

from ...config import cache_dir as default_cache_dir
from ...config import endpoints
from ...errors import ClmsError, ParameterError, ServiceError, UnknownIdentifierError

log = logging.getLogger(__name__)

SERVICE = "clms"
#: The @search fields a download needs (``metadata_fields``); everything else stays on the server.
FIELDS = (
    "UID",
    "id",
    "title",
    "description",
    "dataset_download_information",
    "downloadable_files",
    "coordinateReferenceSystemList",
    "temporalExtentStart",
    "temporalExtentEnd",
    "geographicBoundingBox",
    "mapviewer_istimeseries",
    "download_limit_temporal_extent",
)
PAGE_SIZE = 100
MAX_PAGES = 1000  # a guard against a server whose batching.next never ends
CACHE_VERSION = 1
DEFAULT_MAX_AGE = 86400.0
#: Output formats each dataset format converts to (the portal's @format_conversion_table).
FORMAT_CONVERSION: dict[str, tuple[str, ...]] = {
    "GDB": ("GDB", "GML", "GPKG", "Geojson", "Shapefile"),
    "GML": ("GML",),
    "GPKG": ("GDB", "GML", "GPKG", "Geojson", "Shapefile"),
    "Geojson": ("GDB", "GML", "GPKG", "Geojson", "Shapefile"),
    "Geotiff": ("Geotiff",),
    "Netcdf": ("Geotiff", "Netcdf"),
    "Shapefile": ("GDB", "GML", "GPKG", "Geojson", "Shapefile"),
    "WFS": ("GDB", "GML", "GPKG", "Geojson", "Shapefile", "WFS"),  # as @format_conversion_table answers
}
_FORMAT_KEYS = {k.lower(): k for k in FORMAT_CONVERSION}
_FORMAT_ALIASES = {"geotif": "Geotiff", "tif": "Geotiff", "tiff": "Geotiff", "cog": "Geotiff", "netcdf4": "Netcdf",
                   "nc": "Netcdf", "shp": "Shapefile", "esri shapefile": "Shapefile", "geopackage": "GPKG",
                   "fgdb": "GDB", "json": "Geojson"}


def canonical_format(name: str | None) -> str | None:
    """The conversion table's spelling of a format name ('GeoTIFF', 'tif' -> 'Geotiff'), or None if unknown."""
    key = str(name or "").strip().lower()
    return _FORMAT_KEYS.get(key) or _FORMAT_ALIASES.get(key)

#: Sources whose data comes from the auxiliary API (direct file URLs), not from data requests.
AUXILIARY_SOURCES = frozenset({"LEGACY", "LANDCOVER"})
#: Sources the data-request queue does not serve (WEKEO: the auxiliary API answers with a WEkEO query).
NOT_REQUESTABLE = AUXILIARY_SOURCES | {"WEKEO"}
JSON = {"Accept": "application/json"}


@dataclass(frozen=True)
class ApiFile:
    """One pre-packaged file of a dataset (``downloadable_files`` item); its ``id`` is the FileID."""

    id: str
    file: str
    format: str
    area: str
    resolution: str
    size: str
    year: str
    version: str
    downloadable: bool  # the server refuses a FileID whose path and source are empty


@dataclass(frozen=True)
class DownloadInfo:
    """One ``dataset_download_information`` item: where and how the full dataset is produced."""

    id: str
    source: str  # EEA | LEGACY | LANDCOVER | CDSE | WEKEO
    name: str  # RASTER | VECTOR
    format: str
    path: str
    collection: str

    @property
    def requestable(self) -> bool:
        """Whether a request can name it: the server needs its ``@id`` and its source."""
        return bool(self.id and self.source)


@dataclass(frozen=True)
class ApiDataset:
    """One DataSet of the portal's catalogue, with what a download needs."""

    uid: str
    id: str
    title: str
    description: str
    infos: tuple[DownloadInfo, ...]
    files: tuple[ApiFile, ...]
    crs: tuple[str, ...]
    start: dt.date | None
    end: dt.date | None
    bbox: tuple[float, float, float, float] | None
    timeseries: bool
    limit_days: int | None

    @property
    def default_info(self) -> DownloadInfo | None:
        """The download information a request uses unless told: the first that can be requested (it has an
        ``@id`` and a ``full_source``), else the first listed; None when the dataset lists none."""
        return next((i for i in self.infos if i.requestable), self.infos[0] if self.infos else None)

    @property
    def source(self) -> str:
        """The default download information's source ('' when the dataset has none)."""
        return self.default_info.source if self.default_info else ""

    @property
    def downloadable_files(self) -> tuple[ApiFile, ...]:
        """The pre-packaged files the server accepts a request for."""
        return tuple(f for f in self.files if f.downloadable)

    @property
    def cut_to_order(self) -> bool:
        """True when general (cut-to-order) data requests are accepted: EEA and the other queued sources."""
        info = self.default_info
        return bool(info and info.id and self.source and self.source not in NOT_REQUESTABLE)

    @property
    def auxiliary(self) -> bool:
        """True when the data comes from the auxiliary API (LEGACY / LANDCOVER direct file URLs)."""
        info = self.default_info
        return bool(info and info.id and self.source in AUXILIARY_SOURCES)

    def info_labels(self) -> list[str]:
        """One name per download information item, as the ``download_information`` parameter takes it: the
        item's ``name`` (trimmed), with its collection where names repeat, else its ``@id``."""
        names = [_squash(i.name) or f"item {n + 1}" for n, i in enumerate(self.infos)]
        labels = [f"{n} / {_squash(i.collection)}" if names.count(n) > 1 and i.collection else n
                  for n, i in zip(names, self.infos)]
        return [lab if labels.count(lab) == 1 else i.id for lab, i in zip(labels, self.infos)]

    def choose(self, wanted: str | None) -> "ApiDataset":
        """This dataset with the chosen download information first (what every request reads), by label,
        name or ``@id`` (case and spacing ignored); ``None``: the default.  An item that cannot be
        requested (no ``@id`` or no ``full_source``) is refused, naming those that can."""
        if wanted is None or not str(wanted).strip():
            return self
        key = _squash(wanted).lower()
        labels = self.info_labels()
        found = [i for i, lab in zip(self.infos, labels) if key in (lab.lower(), i.id.lower())]
        if not found:
            found = [i for i in self.infos if _squash(i.name).lower() == key]
        allowed = ", ".join(repr(lab) for lab, i in zip(labels, self.infos) if i.requestable) or "none"
        if len(found) != 1:
            what = "matches several items" if found else "is not one of its download information items"
            raise ParameterError("download_information", f"{wanted!r} {what} of {self.id}; expected one of {allowed}")
        chosen = found[0]
        if not chosen.requestable:
            raise ParameterError("download_information", f"{wanted!r} of {self.id} cannot be requested (the listing "
                                 f"gives it no id or no source); expected one of {allowed}")
        return replace(self, infos=(chosen, *(i for i in self.infos if i is not chosen)))

    def to_item(self) -> dict[str, Any]:
        """This dataset as an ``@search`` item (what :func:`parse_listing` reads back unchanged)."""
        item: dict[str, Any] = {
            "UID": self.uid,
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "dataset_download_information": {
                "items": [
                    {"@id": i.id, "full_source": i.source, "name": i.name, "full_format": i.format,
                     "full_path": i.path, "collection": i.collection}
                    for i in self.infos
                ]
            },
            "downloadable_files": {
                "items": [
                    {"@id": f.id, "file": f.file, "format": f.format, "area": f.area, "resolution": f.resolution,
                     "size": f.size, "year": f.year, "version": f.version,
                     # the parser only needs to know both were set; the real values are server-side paths
                     "path": "yes" if f.downloadable else "", "source": "yes" if f.downloadable else ""}
                    for f in self.files
                ]
            },
            "coordinateReferenceSystemList": list(self.crs),
            "temporalExtentStart": self.start.isoformat() if self.start else None,
            "temporalExtentEnd": self.end.isoformat() if self.end else None,
            "mapviewer_istimeseries": self.timeseries,
            "download_limit_temporal_extent": self.limit_days or 0,
        }
        if self.bbox is not None:
            w, s, e, n = self.bbox
            item["geographicBoundingBox"] = {"items": [{"west": str(w), "south": str(s), "east": str(e), "north": str(n)}]}
        return item


# --------------------------------------------------------------------------- parsing


def _text(value: Any) -> str:
    """A string field that may come as a vocabulary term ``{"token", "title"}`` or be missing."""
    if value is None:
        return ""
    if isinstance(value, Mapping):
        return str(value.get("token") or value.get("title") or "").strip()
    return str(value).strip()


def _squash(text: Any) -> str:
    """Text with its spacing normalised (``"RASTER "`` and ``" 100m"`` as listed live)."""
    return " ".join(str(text or "").split())


def file_stem(f: Mapping[str, Any]) -> str:
    """A ``downloadable_files`` item's name: its ``file``, else (as the production listing gives them) the
    stem in ``area``, else the last part of ``path`` without ``.zip``."""
    name = _text(f.get("file"))
    if not name:
        name = _text(f.get("area"))
    if not name:
        name = _text(f.get("path")).replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
        name = name[:-4] if name.lower().endswith(".zip") else name
    return name


def _items(value: Any) -> list[Mapping[str, Any]]:
    """The ``items`` of a Plone list field (``{"items": [...]}``), or a bare list; dicts only."""
    if isinstance(value, Mapping):
        value = value.get("items")
    if not isinstance(value, list):
        return []
    return [v for v in value if isinstance(v, Mapping)]


def _date(value: Any) -> dt.date | None:
    text = _text(value)
    if len(text) < 10:
        return None
    try:
        return dt.date.fromisoformat(text[:10])
    except ValueError:
        return None


def _bbox(value: Any) -> tuple[float, float, float, float] | None:
    """The union of the ``geographicBoundingBox`` items, from strings or numbers; None if unusable."""
    boxes = []
    for box in _items(value):
        try:
            w, s, e, n = (float(str(box[k]).strip()) for k in ("west", "south", "east", "north"))
        except (KeyError, TypeError, ValueError):
            continue
        if w < e and s < n:
            boxes.append((w, s, e, n))
    if not boxes:
        return None
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


def _crs_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, Mapping):
        value = value.get("items")
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return ()
    out: list[str] = []
    for v in value:
        text = _text(v).upper().replace("EPSG: ", "EPSG:")
        if text and text not in out:
            out.append(text)
    return tuple(out)


def _limit(value: Any) -> int | None:
    try:
        days = int(float(value))
    except (TypeError, ValueError):
        return None
    return days if days > 0 else None


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _dataset(item: Mapping[str, Any]) -> ApiDataset | None:
    uid = _text(item.get("UID"))
    short = _text(item.get("id") or item.get("getId"))
    if not uid and not short:
        return None
    infos = tuple(
        DownloadInfo(
            id=_text(i.get("@id")),
            source=_text(i.get("full_source")).upper(),
            name=_text(i.get("name")),
            format=_text(i.get("full_format")),
            path=_text(i.get("full_path")),
            collection=_text(i.get("collection")),
        )
        for i in _items(item.get("dataset_download_information"))
    )
    files = tuple(
        ApiFile(
            id=_text(f.get("@id")),
            file=file_stem(f),
            format=_text(f.get("format")),
            area=_text(f.get("area")),
            resolution=_text(f.get("resolution")),
            size=_text(f.get("size")),
            year=_text(f.get("year")),
            version=_text(f.get("version")),
            downloadable=bool(_text(f.get("path")) and _text(f.get("source")) and _text(f.get("@id"))),
        )
        for f in _items(item.get("downloadable_files"))
    )
    return ApiDataset(
        uid=uid,
        id=short or uid,
        title=_text(item.get("title") or item.get("Title")),
        description=_text(item.get("description")),
        infos=infos,
        files=files,
        crs=_crs_list(item.get("coordinateReferenceSystemList")),
        start=_date(item.get("temporalExtentStart")),
        end=_date(item.get("temporalExtentEnd")),
        bbox=_bbox(item.get("geographicBoundingBox")),
        timeseries=_truthy(item.get("mapviewer_istimeseries")),
        limit_days=_limit(item.get("download_limit_temporal_extent")),
    )


def parse_listing(items: Iterable[Mapping[str, Any]]) -> list[ApiDataset]:
    """Typed datasets from raw ``@search`` items (pure; items without UID and id are skipped)."""
    out = []
    for item in items:
        if isinstance(item, Mapping):
            ds = _dataset(item)
            if ds is not None:
                out.append(ds)
    return out


# --------------------------------------------------------------------------- files


def _raw_items(data: Any, where: str) -> list[dict[str, Any]]:
    """Items from a saved listing: a cache file, one @search page, a list of pages or a list of items."""
    if isinstance(data, Mapping) and isinstance(data.get("items"), list):
        return [i for i in data["items"] if isinstance(i, Mapping)]
    if isinstance(data, list):
        out: list[dict[str, Any]] = []
        for entry in data:
            if isinstance(entry, Mapping) and isinstance(entry.get("items"), list) and "UID" not in entry:
                out += [i for i in entry["items"] if isinstance(i, Mapping)]  # a saved @search page
            elif isinstance(entry, Mapping):
                out.append(dict(entry))
        return out
    raise ClmsError(f"{where}: not a CLMS API listing (expected a JSON list of @search items or a saved listing)")


def load_listing_file(path: str | os.PathLike[str]) -> list[ApiDataset]:
    """The datasets of a saved listing (``save_listing`` output, the cache file, or raw @search items/pages)."""
    p = Path(path).expanduser()
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ClmsError(f"cannot read the listing {p}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ClmsError(f"{p} is not valid JSON: {exc}") from None
    return parse_listing(_raw_items(data, str(p)))


def _write_atomic(path: Path, data: Any) -> None:
    from ...store.fsutil import write_json_atomic

    write_json_atomic(path, data)


def save_listing(
    items: Iterable[Mapping[str, Any] | ApiDataset], path: str | os.PathLike[str], *, base_url: str | None = None
) -> None:
    """Write a listing (raw @search items or ApiDataset records) that :func:`load_listing_file` reads back."""
    raw = [i.to_item() if isinstance(i, ApiDataset) else dict(i) for i in items]
    _write_atomic(Path(path).expanduser(), _cache_doc(raw, base_url))


def _cache_doc(items: list[dict[str, Any]], base_url: str | None) -> dict[str, Any]:
    return {"version": CACHE_VERSION, "base_url": base_url, "fields": list(FIELDS), "fetched": time.time(), "items": items}


def listing_cache_path(base_url: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where the listing of one API base URL is cached."""
    digest = hashlib.sha256(base_url.rstrip("/").encode()).hexdigest()[:16]
    return default_cache_dir(cache_dir) / "clms-api" / f"listing-{digest}.json"


def _read_cache(path: Path, base: str) -> tuple[float, list[dict[str, Any]]] | None:
    """(fetched epoch, items) of a usable cache file, or None."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("version") != CACHE_VERSION or doc.get("base_url") != base:
        return None
    if not set(FIELDS) <= set(doc.get("fields") or ()) or not isinstance(doc.get("items"), list):
        return None  # written with fewer fields: fetch again
    try:
        return float(doc["fetched"]), doc["items"]
    except (KeyError, TypeError, ValueError):
        return None


# --------------------------------------------------------------------------- fetching


def _fetch_items(base: str, session: requests.Session | None, page_size: int) -> list[dict[str, Any]]:
    from ...net.http import HttpClient

    http = HttpClient(SERVICE, session=session)
    url: str | None = f"{base}/@search"
    params: Any = [("portal_type", "DataSet"), ("b_size", str(page_size))] + [("metadata_fields", f) for f in FIELDS]
    items: list[dict[str, Any]] = []
    seen: set[str] = set()
    for page in range(MAX_PAGES):
        r = http.request("GET", url, params=params, headers=JSON, what=f"catalogue listing (page {page + 1})")
        try:
            body = r.json()
        except ValueError:
            raise ServiceError(SERVICE, r.status_code, "catalogue listing: the answer is not JSON "
                               f"(Content-Type {r.headers.get('Content-Type', '?')})") from None
        if not isinstance(body, dict) or not isinstance(body.get("items"), list):
            raise ServiceError(SERVICE, r.status_code, "catalogue listing: the answer has no 'items' list")
        items += [i for i in body["items"] if isinstance(i, dict)]
        nxt = (body.get("batching") or {}).get("next") if isinstance(body.get("batching"), dict) else None
        if not nxt or nxt in seen or not body["items"]:
            return items
        seen.add(nxt)
        url, params = nxt, None  # the next link carries the whole query
    raise ServiceError(SERVICE, None, f"catalogue listing: still paging after {MAX_PAGES} pages; giving up")


def fetch_listing(
    base_url: str | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    max_age: float = DEFAULT_MAX_AGE,
    refresh: bool = False,
    session: requests.Session | None = None,
    page_size: int = PAGE_SIZE,
) -> list[ApiDataset]:
    """Every DataSet of the API at ``base_url`` (default ``CLMS_API_URL``), from the disk cache when fresh.

    The cache (``<cache>/clms-api/listing-<hash>.json``) is used while younger
    than ``max_age`` seconds; ``refresh=True`` fetches anyway.  When a fetch
    fails and an older cache exists, the older listing is used with a warning
    (the catalogue changes rarely; an outage should not stop reading).
    """
    base = (base_url or endpoints().clms_api).rstrip("/")
    path = listing_cache_path(base, cache_dir)
    cached = _read_cache(path, base)
    if cached is not None and not refresh and time.time() - cached[0] < max_age:
        return parse_listing(cached[1])
    try:
        items = _fetch_items(base, session, page_size)
    except ServiceError as exc:
        if cached is None or refresh:
            raise
        log.warning("clms: the catalogue listing could not be refreshed (%s); using the one cached %.1f h ago",
                    exc, (time.time() - cached[0]) / 3600)
        return parse_listing(cached[1])
    _write_atomic(path, _cache_doc(items, base))
    return parse_listing(items)


# --------------------------------------------------------------------------- lookup


def _norm(text: str) -> str:
    return text.strip().strip("/").lower()


def find_dataset(listing: Sequence[ApiDataset], key: str) -> ApiDataset:
    """The dataset named by ``key``: its id (short name), its UID, or a download information's
    collection / full_path (how a WEkEO datasetIdentifier maps to the API, when it does)."""
    wanted = _norm(str(key or ""))
    if wanted:
        for match in (
            lambda d: _norm(d.id) == wanted,
            lambda d: _norm(d.uid) == wanted,
            lambda d: any(wanted in (_norm(i.collection), _norm(i.path)) for i in d.infos),
        ):
            found = [d for d in listing if match(d)]
            if found:
                return found[0]
    names = [d.id for d in listing]
    close = difflib.get_close_matches(str(key), names, n=5, cutoff=0.5)
    if not close:
        words = [w for w in wanted.replace("_", "-").split("-") if len(w) > 2]
        close = [n for n in names if words and sum(w in n for w in words) >= max(1, len(words) // 2)][:5]
    hint = f"; close matches: {', '.join(close)}" if close else ""
    raise UnknownIdentifierError(
        f"the CLMS download API lists no dataset {key!r} (searched {len(listing)} datasets by id, UID and "
        f"download collection){hint}"
    )
