"""CLMS download API datasets as intake entries, from the portal's ``@search`` listing.

One entry per dataset that can be downloaded through the API: a ``file``
parameter whose allowed values are its pre-packaged files, plus cut-to-order
parameters (bbox, dates, output format, CRS) where the dataset takes general
requests, or area and dates where the auxiliary API lists its files.  Datasets
the API only lists (no downloadable file, no cut-to-order, no auxiliary files)
are left out and named in the catalog's ``listing_only`` metadata: users asked
for downloadable IDs only.

The same entry dicts serve two ways in: :class:`ClmsApiCatalog` (driver
``clms_api``), a nested catalog that lists the API when first opened, and
``intake-clms generate --clms-api``, which writes them as a static YAML catalog.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import os
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from intake.catalog import Catalog
from intake.catalog.local import LocalCatalogEntry, UserParameter

from .. import __version__
from ..services.clms_api.listing import FORMAT_CONVERSION, canonical_format
from ..errors import ClmsError, ParameterError, ServiceError
from .lookup import DRIVER_KEY, PLUGINS, EntryLookup
from ..params import parse_bbox
from .products import entry_name

if TYPE_CHECKING:  # the listing module is imported when a listing is needed, never at import time
    from ..services.clms_api.listing import ApiDataset

DRIVER = "clms"
CATALOG_DRIVER = "clms_api"
SERVICE = "clms"
DEFAULT_MAX_AGE = 86400.0  # seconds a listing cached on disk stays fresh
WGS84 = "EPSG:4326"
DEFAULT_SPAN_DAYS = 31  # default date range of a time series that declares no request limit
WORLD = [-180.0, -90.0, 180.0, 90.0]

def output_formats(dataset_format: str | None) -> list[str]:
    """Formats a cut-to-order request may ask for, the dataset's own first."""
    native = canonical_format(dataset_format)
    if native is None:
        return []
    return [native] + sorted(f for f in FORMAT_CONVERSION[native] if f != native)


def _native_format(ds: ApiDataset) -> str | None:
    for info in ds.infos:
        if canonical_format(info.format):
            return info.format
    return next((f.format for f in ds.downloadable_files if canonical_format(f.format)), None)


def output_crs(ds: ApiDataset) -> list[str]:
    """The dataset's coordinateReferenceSystemList, then EPSG:4326 (always accepted)."""
    out: list[str] = []
    for crs in [*ds.crs, WGS84]:
        text = str(crs).strip().upper().replace("EPSG: ", "EPSG:")
        if text and text not in out:
            out.append(text)
    return out


def general_requests(ds: ApiDataset) -> bool:
    """True when the data-request queue cuts this dataset to order.

    Stricter than the listing's ``cut_to_order``: the download information must
    also name the dataset's full path, which the server needs to cut from (it
    answers "this dataset is not downloadable" otherwise); many listed EEA
    datasets have none.
    """
    return bool(ds.cut_to_order and ds.default_info and ds.default_info.path)


def is_downloadable(ds: ApiDataset) -> bool:
    """True when the API can deliver something: a pre-packaged file, a cut-to-order request or auxiliary files."""
    return bool(ds.downloadable_files) or general_requests(ds) or bool(ds.auxiliary)


def _iso(d: Any) -> str | None:
    return d.isoformat() if d is not None else None


def _file_stems(ds: ApiDataset) -> list[str]:
    stems: list[str] = []
    for f in ds.downloadable_files:
        if f.file and f.file not in stems:
            stems.append(f.file)
    return stems


def _wants_dates(ds: ApiDataset) -> bool:
    """Dates are a parameter where the API filters by them: time-series requests and auxiliary lists."""
    return (general_requests(ds) and ds.timeseries) or bool(ds.auxiliary)


def _default_dates(ds: ApiDataset) -> tuple[str, str]:
    """A default range the API accepts and that stays small.

    Time series: the last ``limit_days`` of the extent (:data:`DEFAULT_SPAN_DAYS`
    when the dataset declares no limit).  Auxiliary lists that are no series:
    the whole extent when the source needs dates (LEGACY), else no filter.
    """
    if not ds.timeseries:
        if ds.source == "LEGACY":
            return (_iso(ds.start) or ""), (_iso(ds.end) or "present")
        return "", ""
    if ds.end is None:
        return (_iso(ds.start) or ""), "present"
    earliest = ds.end - dt.timedelta(days=int(ds.limit_days or DEFAULT_SPAN_DAYS) - 1)
    start = max(ds.start, earliest) if ds.start else earliest
    return start.isoformat(), ds.end.isoformat()


def parameters(ds: ApiDataset) -> dict[str, dict[str, Any]]:
    """User parameters: ``file`` always; area, dates, format and CRS only where the API takes them."""
    stems = _file_stems(ds)
    cut, aux = general_requests(ds), bool(ds.auxiliary)
    if cut:
        other = "a cut-to-order request (bbox, " + ("start, end, " if ds.timeseries else "") + "output_format, crs)"
    elif aux:
        other = "the auxiliary API's files (bbox, start, end)"
    else:
        other = ""
    if stems and other:
        what = f"A pre-packaged file of this dataset, or '' for {other}."
    elif stems:
        what = "A pre-packaged file of this dataset (the API takes no other request for it)."
    else:
        what = f"Empty: this dataset has no pre-packaged file; it is fetched as {other}."
    params: dict[str, dict[str, Any]] = {
        "file": {"description": what, "type": "str", "default": stems[0] if stems else "",
                 "allowed": stems + ([""] if other else [])},
    }
    if not other:
        return params
    choices = [lab for lab, i in zip(ds.info_labels(), ds.infos) if i.requestable]
    if len(ds.infos) > 1 and choices:
        params["download_information"] = {
            "description": "Which of the dataset's download information items to request (default: the first "
                           "that can be requested).",
            "type": "str", "default": choices[0], "allowed": choices,
        }
    params["bbox"] = {
        "description": ("Cut-to-order area" if cut else "Area whose files are listed")
        + " [west, south, east, north] in degrees (EPSG:4326)" + ("; ignored for a pre-packaged file." if stems else "."),
        "type": "list",
        "default": [float(v) for v in ds.bbox] if ds.bbox else list(WORLD),
    }
    if _wants_dates(ds):
        start, end = _default_dates(ds)
        need = "needed: this dataset is a time series" if ds.timeseries else (
            "needed by its LEGACY source" if ds.source == "LEGACY" else "empty for no bound")
        limit = f"; longer than {ds.limit_days} days, the request is split" if cut and ds.limit_days else ""
        params["start"] = {
            "description": f"First day wanted, ISO date (YYYY-MM-DD); {need}.",
            "type": "str",
            "default": start,
        }
        params["end"] = {
            "description": f"Last day wanted, ISO date (YYYY-MM-DD) or 'present'{limit}.",
            "type": "str",
            "default": end,
        }
    if not cut:
        return params
    formats = output_formats(_native_format(ds))
    params["output_format"] = {
        "description": "Cut-to-order output format (what the portal converts this dataset's format to).",
        "type": "str",
        "default": formats[0] if formats else "",
        **({"allowed": formats} if formats else {}),
    }
    crs = output_crs(ds)
    params["crs"] = {
        "description": "Cut-to-order output CRS: one the dataset declares, or EPSG:4326.",
        "type": "str",
        "default": crs[0],
        "allowed": crs,
    }
    return params


def describe(ds: ApiDataset) -> str:
    """One readable paragraph: what, from which source, what can be fetched and how."""
    parts = [f"{ds.title or ds.id} ({ds.id}) from the CLMS download API, {ds.source or 'unknown'} source"]
    stems = _file_stems(ds)
    if stems:
        parts.append(f"{len(stems)} pre-packaged file{'s' if len(stems) != 1 else ''} (parameter file)")
    if general_requests(ds):
        cut = "cut to order by bbox" + (", dates" if ds.timeseries else "") + ", output format and CRS"
        if ds.timeseries and ds.limit_days:
            cut += f" (at most {ds.limit_days} days per request)"
        parts.append(cut)
    elif ds.auxiliary:
        parts.append("files listed by the auxiliary API by area and dates")
    extent = f"time: {_iso(ds.start) or '?'} to {_iso(ds.end) or 'present'}"
    if ds.crs:
        extent += f"; CRS: {', '.join(ds.crs)}"
    return "; ".join(parts) + f". {extent[0].upper()}{extent[1:]}."


def metadata(ds: ApiDataset) -> dict[str, Any]:
    files = [
        {"file": f.file, "id": f.id, "format": f.format, "size": f.size, "area": f.area,
         "resolution": f.resolution, "year": f.year, "version": f.version}
        for f in ds.downloadable_files
    ]
    md: dict[str, Any] = {
        "identifier": ds.id,
        "uid": ds.uid,
        "title": ds.title,
        "source": ds.source,
        "service": SERVICE,
        "files": files,
        "unavailable_files": [f.file for f in ds.files if not f.downloadable],
        "cut_to_order": general_requests(ds),
        "auxiliary": bool(ds.auxiliary),
        "timeseries": bool(ds.timeseries),
        "limit_days": ds.limit_days,
        "crs": list(ds.crs),
        "time_start": _iso(ds.start),
        "time_end": _iso(ds.end),
        "coverage_bbox": [float(v) for v in ds.bbox] if ds.bbox else None,
    }
    url = getattr(ds, "url", None)  # the item's @id, when the listing keeps it
    if url:
        md["portal_url"] = str(url).replace("/api/", "/", 1)
    return md


def api_entry(ds: ApiDataset, dataset_id: str | None = None) -> dict[str, Any]:
    """The intake entry spec of one downloadable dataset (plain data, ready for ``yaml.safe_dump``)."""
    params = parameters(ds)
    args: dict[str, Any] = {"dataset_id": dataset_id or ds.id}
    args.update({name: "{{ %s }}" % name for name in params})
    args["service"] = SERVICE
    return {"description": describe(ds), "driver": DRIVER, "args": args, "parameters": params, "metadata": metadata(ds)}


def listing_only(listing: Iterable[ApiDataset]) -> list[str]:
    """Short names of the datasets the API lists but cannot deliver (left out of the entries)."""
    return sorted({ds.id for ds in listing if not is_downloadable(ds)})


def api_entries(listing: Iterable[ApiDataset]) -> dict[str, dict[str, Any]]:
    """Entry name -> entry spec for every downloadable dataset, sorted by name, whatever the listing order.

    Names are the short names made identifiers (``forest-type-2015`` ->
    ``forest_type_2015``); when two datasets map to the same name, the later one
    by (short name, UID) gets a short hash of its UID appended.  A short name
    shared by several datasets is passed to the driver as the UID instead, so
    each entry still means exactly one dataset.
    """
    kept = sorted((ds for ds in listing if is_downloadable(ds)), key=lambda d: (d.id, d.uid))
    counts: dict[str, int] = {}
    for ds in kept:
        counts[ds.id] = counts.get(ds.id, 0) + 1
    out: dict[str, dict[str, Any]] = {}
    for ds in kept:
        name = entry_name(ds.id)
        if name in out:
            name = f"{name}_{hashlib.sha1(ds.uid.encode()).hexdigest()[:6]}"
        out[name] = api_entry(ds, dataset_id=ds.uid if counts[ds.id] > 1 else ds.id)
    return dict(sorted(out.items()))


def build_api_catalog(listing: Iterable[ApiDataset], *, source: str | None = None) -> dict[str, Any]:
    """The static catalog (``generate --clms-api``) as a plain dict, deterministic for a given listing."""
    listing = list(listing)
    meta: dict[str, Any] = {
        "version": 1,
        "title": "CLMS download API datasets (intake-clms)",
        "description": "One entry per dataset the CLMS download API can deliver, from its @search listing. "
        "Generated by `intake-clms generate --clms-api`; regenerate rather than edit.",
    }
    if source:
        meta["generated_from"] = source
    meta["listing_only"] = listing_only(listing)
    meta[DRIVER_KEY] = "clms_cat"  # plain intake.open_catalog answers unknown entries as clms_cat does
    return {"metadata": meta, "plugins": PLUGINS, "sources": api_entries(listing)}


# --------------------------------------------------------------------------- the catalog driver


class ApiParameter(UserParameter):
    """A user parameter whose refusal is a :class:`ParameterError` naming the field and what it accepts."""

    def validate(self, value: Any) -> Any:
        if self.name == "bbox" and self.type == "list":  # intake's list coercion would split a string into characters
            return list(parse_bbox(value))
        if self.allowed is not None and value not in self.allowed:
            shown = ", ".join(repr(v) for v in self.allowed)
            hint = " ('' for a request without a pre-packaged file)" if self.name == "file" and "" in self.allowed else ""
            raise ParameterError(self.name, f"got {value!r}; expected one of {shown}{hint}")
        return super().validate(value)


class _LazyEntries(Mapping):
    """The nested catalog's entries, listed from the API on first access (and again after ``invalidate``)."""

    def __init__(self, catalog: ClmsApiCatalog):
        self._catalog = catalog
        self._entries: dict[str, LocalCatalogEntry] | None = None

    def invalidate(self) -> None:
        self._entries = None

    @property
    def loaded(self) -> bool:
        return self._entries is not None

    def _get(self) -> dict[str, LocalCatalogEntry]:
        if self._entries is None:
            self._entries = self._catalog._list_entries()
        return self._entries

    def __getitem__(self, key: str) -> LocalCatalogEntry:
        return self._get()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())

    def __contains__(self, key: object) -> bool:
        return key in self._get()

    def __setitem__(self, key: str, entry: LocalCatalogEntry) -> None:
        self._get()[key] = entry

    def pop(self, key: str, *default: Any) -> Any:
        return self._get().pop(key, *default)


class ClmsApiCatalog(EntryLookup, Catalog):
    """The CLMS download API's datasets as a catalog, listed from ``@search`` when first opened.

    Creating it touches no network (intake's GUI instantiates every entry of a
    parent catalog just to show it); the listing is fetched on first access to
    the entries, through the disk cache (``max_age`` seconds), and again only
    after intake's ``ttl`` has passed and the cached listing has expired.
    ``listing`` names a saved listing (raw ``@search`` items or a cache file)
    to work offline; ``base_url`` defaults to ``CLMS_API_URL`` (read when
    opened); ``page_size`` sets the datasets asked per ``@search`` page.
    """

    name = CATALOG_DRIVER
    version = __version__
    container = "catalog"
    partition_access = None

    def __init__(
        self,
        base_url: str | None = None,
        max_age: float = DEFAULT_MAX_AGE,
        listing: str | os.PathLike[str] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        page_size: int | None = None,
        **kwargs: Any,
    ):
        self.base_url = (str(base_url).strip() or None) if base_url not in (None, "None") else None
        try:
            self.max_age = float(max_age)
        except (TypeError, ValueError):
            raise ParameterError("max_age", f"got {max_age!r}; expected a number of seconds") from None
        self.listing = (str(listing).strip() or None) if listing not in (None, "None") else None
        self.cache_dir = (str(cache_dir).strip() or None) if cache_dir not in (None, "None") else None
        try:
            self.page_size = int(page_size) if page_size not in (None, "", "None") else None
        except (TypeError, ValueError):
            raise ParameterError("page_size", f"got {page_size!r}; expected a number of datasets per page") from None
        self._listing_only: list[str] = []
        kwargs.setdefault("name", CATALOG_DRIVER)
        kwargs.setdefault("description", "CLMS download API datasets, listed from @search when opened")
        super().__init__(**kwargs)

    def _make_entries_container(self) -> _LazyEntries:
        return _LazyEntries(self)

    def _load(self) -> None:
        # Called by intake at creation and after each ttl: only forget, list on the next access.
        entries = getattr(self, "_entries", None)
        if isinstance(entries, _LazyEntries):
            entries.invalidate()

    @property
    def opened(self) -> bool:
        """Whether the listing has been read (entries exist) since creation or the last reload."""
        return isinstance(self._entries, _LazyEntries) and self._entries.loaded

    @property
    def listing_only(self) -> list[str]:
        """Short names the API lists but cannot deliver (no entry made); empty until opened."""
        return list(self._listing_only)

    def resolved_base_url(self) -> str:
        """The API base URL: the ``base_url`` argument, else ``CLMS_API_URL``, else the public service."""
        from ..config import endpoints

        return (self.base_url or endpoints().clms_api).rstrip("/")

    def datasets(self) -> list[ApiDataset]:
        """The parsed listing: the saved file if one was given, else ``@search`` through the disk cache."""
        from ..services.clms_api import listing as clms_listing

        if self.listing:
            return clms_listing.load_listing_file(self.listing)
        from ..config import cache_dir

        base = self.resolved_base_url()
        extra = {"page_size": self.page_size} if self.page_size else {}
        try:
            return clms_listing.fetch_listing(base, cache_dir=self.cache_dir or cache_dir(), max_age=self.max_age, **extra)
        except ClmsError:
            raise
        except OSError as exc:  # requests' own errors (a malformed URL, ...) are OSErrors
            raise ServiceError(SERVICE, None, f"cannot list the datasets at {base}: {exc}") from None

    def _list_entries(self) -> dict[str, LocalCatalogEntry]:
        listing = self.datasets()
        self._listing_only = listing_only(listing)
        return {name: self._make_entry(name, spec) for name, spec in api_entries(listing).items()}

    def _make_entry(self, name: str, spec: dict[str, Any]) -> LocalCatalogEntry:
        params = [ApiParameter(name=k, **v) for k, v in spec["parameters"].items()]
        return LocalCatalogEntry(
            name=name,
            description=spec["description"],
            driver=spec["driver"],
            direct_access="forbid",  # as intake reads it from YAML: the static catalog describes the same
            args=copy.deepcopy(spec["args"]),
            parameters=params,
            metadata=copy.deepcopy(spec["metadata"]),
            catalog_dir="",
            getenv=self.getenv,
            getshell=self.getshell,
            catalog=self,
        )
