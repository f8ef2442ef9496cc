"""The CLMS download API (land.copernicus.eu) as the sandbox speaks it.

A Plone REST API: service-key JWT grant at ``/@@oauth2-token``, an anonymous
``/api/@search`` catalogue, data requests (``@datarequest_post``) that queue on
the sandbox clock and finish with a capability URL to a result zip on ``/fme/...``,
task status/search/delete with the real service's odd status codes, and the
auxiliary API handing out direct file URLs under ``/files/...`` behind a rate
limit.  Messages, field names and status codes follow the public docs
(eea/clms-api-docs) and the server add-on (eea/clms.downloadtool), so a client
that works here meets the same shapes on the real service.

Faults read here (all ``service="clms"``): ``token_expiry`` (on any endpoint
that needs a bearer token; ``answer=200`` makes expired tokens get the add-on's
200 "You need to be logged in" body instead of a 401), ``terminal_failure``
(``status`` Finished_nok / Rejected / Cancelled, or any other word for a task
that reports that unknown status for ever) and ``server_cancel`` (taken when a
task is created, endpoint ``datarequest_post``), ``corrupt_zip`` and
``hostile_zip`` (taken when a result zip is built, endpoint ``fme``),
``expired_link`` (on the download, endpoint ``fme``).  Blocking a cancel is a
generic ``status`` fault on ``clms.datarequest_delete``.

Tunables (sandbox seconds / requests per second): ``state(ctx).link_lifetime``
(default 72 h; how long a DownloadURL works) and ``state(ctx).files_rate``
(default 10/s per client on ``/files/``; 0 disables); ``state(ctx).result_layout``
(default ``"results_inner"``; the layout of result zips built from then on, one of
``datagen.LAYOUTS``: ``results_inner``, ``flat``, ``multi_inner``, ``nested3``).  A
``SandboxContext`` may preset them as ``clms_link_lifetime`` / ``clms_files_rate`` /
``clms_result_layout`` attributes.

Protocol shapes, one switch per variant (the documented shape first, then the one
recorded from production), attributes of ``state(ctx)``:

- ``listing_shape``: ``"documented"`` (one ``dataset_download_information`` item;
  ``downloadable_files`` items with a ``file`` key) or ``"recorded"`` (as the
  January 2025 production capture: an item that cannot be requested, without
  ``full_source``, listed before the real one, names and collections with stray
  spaces such as ``"RASTER "``; ``downloadable_files`` without ``file``, the stem
  in ``area``, every value a string);
- ``status_case``: ``"documented"`` (``Queued``) or ``"upper"`` (``QUEUED``, as the
  server code stores CDSE child tasks; the ``status`` filter of
  ``@datarequest_search`` then ignores case);
- ``status_filter``: ``"any_case"`` (the ``status`` filter of ``@datarequest_search``
  ignores case) or ``"exact"`` (it compares the stored spelling as given, so
  ``status=Queued`` misses ``QUEUED`` tasks: nothing documents the comparison);
- ``duplicate_of``: ``"active"`` (``DUPLICATED`` when a queued or running task of
  the user holds an item) or ``"live"`` (a finished task counts too: what a client
  sees when the duplicated task finished before it looked for it).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import functools
import hashlib
import json
import math
import os
import random
import re
import secrets
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from intake_clms.sandbox.core import SandboxContext, serve_file

SERVICE = "clms"
TOKEN_PATH = "/@@oauth2-token"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
MAX_ASSERTION_LIFE = 3600  # seconds between iat and exp the server accepts
ASSERTION_LEEWAY = 60  # seconds of clock skew tolerated on iat/exp
DEFAULT_USER = "clms-sandbox-user"
DEFAULT_LINK_LIFETIME = 72 * 3600.0  # sandbox seconds a DownloadURL stays valid ("72 hours")
DEFAULT_FILES_RATE = 10.0  # requests per second per client on /files/
DEFAULT_BATCH = 25
MAX_GENERAL_ITEMS = 5

STATUSES = ("Rejected", "Queued", "In_progress", "Finished_ok", "Finished_nok", "Cancelled")
ACTIVE = ("Queued", "In_progress")

#: Error messages, verbatim from the server add-on (clms.downloadtool), so clients match real text.
MSG = {
    "NOT_LOGGED_IN": "You need to be logged in to use this service",
    "UNDEFINED_DATASET_ID": "Error, DatasetID is not defined",
    "INVALID_DATASET_ID": "Error, the DatasetID is not valid",
    "INVALID_FILE_ID": "Error, the FileID is not valid",
    "NUTS_COUNTRY_ERROR": "NUTS country error",
    "NUTS_ALSO_DEFINED": "Error, NUTS is also defined",
    "INVALID_BOUNDINGBOX": "Error, BoundingBox is not valid",
    "TEMP_REST_NOT_ALLOWED": "Error, temporal restriction is not allowed in not time-series enabled datasets",
    "TEMP_TOO_MANY": "Error, TemporalFilter has too many fields",
    "TEMP_MISSING_RANGE": "Error, TemporalFilter does not have StartDate or EndDate",
    "INCORRECT_DATE": "Error, date format is not correct",
    "INCORRECT_DATE_RANGE": "Error, difference between StartDate and EndDate is not coherent",
    "UNDEFINED_GCS": "Error, defined GCS not in the list",
    "MISSING_GCS": "The OutputGCS parameter is mandatory.",
    "UNDEFINED_INFO_ID": "Error, DatasetDownloadInformationID is not defined.",
    "NOT_DOWNLOADABLE": "Error, this dataset is not downloadable",
    "INVALID_OUTPUT": "Error, the specified output format is not valid",
    "NOT_COMPATIBLE": "Error, specified formats are not compatible",
    "INVALID_LAYER": "Error, the requested band/layer is not valid",
    "MISSING_TEMPORAL": (
        "You are requesting to download a time series enabled dataset and you are required to request the "
        "download of an specific date range. Please check the download documentation to get more information"
    ),
    "FULL_NOT_EEA": (
        "You are requesting to download the full dataset but this dataset is not an EEA dataset and thus you "
        "need to query an specific endpoint to request its download. Please check the API documentation to get "
        "more information about this specific endpoint."
    ),
    "FULL_EEA": (
        "To download the full dataset, please download it through the corresponding pre-packaged data collection"
    ),
    "MUST_HAVE_AREA": (
        "You have to select a specific area of interest. In case you want to download the full dataset, "
        "please use the Auxiliary API."
    ),
    "DOWNLOAD_LIMIT": "The download queue can only process 5 items at a time. Please try again with fewer items.",
    "DUPLICATED": (
        "You have requested to download the same thing at least twice. "
        "Please check your download cart and remove any duplicates."
    ),
    "TASK_NOT_DEFINED": "Error, TaskID not defined",
    "TASK_NOT_FOUND": "Error, the task does not exist",
    "TASK_NOT_REGISTERED": "Error, TaskID not registered",
    "PERMISSION_DENIED": "Error, permission denied",
    "STATUS_NOT_RECOGNIZED": "Error, status not recognized",
    "NO_CONTENT": "There is no content between the selected dates, expand the date range to get links.",
}

#: Which output formats each source format converts to (the portal's @format_conversion_table).
FORMAT_CONVERSION = {
    "GDB": {"GDB", "GML", "GPKG", "Geojson", "Shapefile"},
    "GML": {"GML"},
    "GPKG": {"GDB", "GML", "GPKG", "Geojson", "Shapefile"},
    "Geojson": {"GDB", "GML", "GPKG", "Geojson", "Shapefile"},
    "Geotiff": {"Geotiff"},
    "Netcdf": {"Geotiff", "Netcdf"},
    "Shapefile": {"GDB", "GML", "GPKG", "Geojson", "Shapefile"},
    "WFS": {"GDB", "GML", "GPKG", "Geojson", "Shapefile", "WFS"},
}
OUTPUT_GCS = ("EPSG:4326", "EPSG:3035", "EPSG:3857", "EPSG:4258")

#: Country extents (lon/lat) used to cut NUTS requests; the first two letters of a NUTS code.
COUNTRIES: dict[str, tuple[str, tuple[float, float, float, float]]] = {
    "AT": ("Austria", (9.5, 46.4, 17.2, 49.0)),
    "BE": ("Belgium", (2.5, 49.5, 6.4, 51.5)),
    "CZ": ("Czechia", (12.1, 48.5, 18.9, 51.1)),
    "DE": ("Germany", (5.9, 47.3, 15.0, 55.1)),
    "DK": ("Denmark", (8.0, 54.5, 12.7, 57.8)),
    "EE": ("Estonia", (21.8, 57.5, 28.2, 59.7)),
    "EL": ("Greece", (19.4, 34.8, 28.3, 41.8)),
    "ES": ("Spain", (-9.4, 36.0, 3.3, 43.8)),
    "FI": ("Finland", (20.6, 59.8, 31.6, 70.1)),
    "FR": ("France", (-5.1, 41.3, 9.6, 51.1)),
    "HU": ("Hungary", (16.1, 45.7, 22.9, 48.6)),
    "IE": ("Ireland", (-10.5, 51.4, -6.0, 55.4)),
    "IT": ("Italy", (6.6, 36.6, 18.5, 47.1)),
    "LU": ("Luxembourg", (5.7, 49.4, 6.5, 50.2)),
    "NL": ("Netherlands", (3.3, 50.8, 7.2, 53.5)),
    "NO": ("Norway", (4.6, 58.0, 31.1, 71.2)),
    "PL": ("Poland", (14.1, 49.0, 24.2, 54.8)),
    "PT": ("Portugal", (-9.5, 36.9, -6.2, 42.2)),
    "SE": ("Sweden", (11.1, 55.3, 24.2, 69.1)),
    "SI": ("Slovenia", (13.4, 45.4, 16.6, 46.9)),
    "SK": ("Slovakia", (16.8, 47.7, 22.6, 49.6)),
    "UK": ("United Kingdom", (-8.2, 49.9, 1.8, 60.9)),
}
NUTS_NAMES = {"ITC1": "Piemonte", "ITC11": "Torino", "FR10": "Ile-de-France", "DE30": "Berlin", "ES30": "Madrid"}

#: The EEA38 extent the API declares for pan-European products ([W, S, E, N]).
EUROPE_BBOX = (-31.2684, 27.6375, 44.8212, 71.1855)
#: The auxiliary API's default area when none is given (LANDCOVER / WEKEO).
AUX_DEFAULT_BBOX = (-12.480469, 35.603719, 32.871094, 70.289117)

#: Listing-only families: (slug, title, years, source, name, format); they make @search span several pages.
_LISTING_FAMILIES: tuple[tuple[str, str, tuple[int, ...], str, str, str], ...] = (
    ("corine-land-cover", "CORINE Land Cover", (1990, 2000, 2006, 2012, 2018), "EEA", "VECTOR", "GPKG"),
    ("corine-land-cover-change", "CORINE Land Cover Change", (2000, 2006, 2012, 2018), "EEA", "VECTOR", "GPKG"),
    ("urban-atlas-land-cover-land-use", "Urban Atlas Land Cover/Land Use", (2006, 2012, 2018), "EEA", "VECTOR", "GPKG"),
    ("urban-atlas-street-tree-layer", "Urban Atlas Street Tree Layer", (2012, 2018), "EEA", "VECTOR", "GPKG"),
    ("riparian-zones-land-cover-land-use", "Riparian Zones Land Cover/Land Use", (2012, 2018), "EEA", "VECTOR",
     "Shapefile"),
    ("coastal-zones-land-cover-land-use", "Coastal Zones Land Cover/Land Use", (2012, 2018), "EEA", "VECTOR", "GPKG"),
    ("natura-2000-land-cover-land-use", "N2K Land Cover/Land Use", (2006, 2012, 2018), "EEA", "VECTOR", "GPKG"),
    ("small-woody-features", "Small Woody Features", (2015, 2018), "EEA", "RASTER", "Geotiff"),
    ("water-wetness-and-probability-index", "Water and Wetness Probability Index", (2015, 2018), "EEA", "RASTER",
     "Geotiff"),
    ("imperviousness-change", "Imperviousness Change", (2009, 2012, 2015), "EEA", "RASTER", "Geotiff"),
    ("dominant-leaf-type", "Dominant Leaf Type", (2012, 2015), "EEA", "RASTER", "Geotiff"),
    ("normalised-difference-vegetation-index-v3-0-300m", "Normalised Difference Vegetation Index 300m v3", (2020,),
     "CDSE", "RASTER", "Netcdf"),
    ("leaf-area-index-v1-0-300m", "Leaf Area Index 300m v1", (2014,), "CDSE", "RASTER", "Netcdf"),
    ("dry-matter-productivity-v1-0-300m", "Dry Matter Productivity 300m v1", (2014,), "CDSE", "RASTER", "Netcdf"),
    ("snow-cover-extent-europe-v1-0-500m", "Snow Cover Extent Europe 500m", (2017,), "LEGACY", "RASTER", "Netcdf"),
    ("fractional-snow-cover-europe-20m", "Fractional Snow Cover Europe 20m", (2016,), "WEKEO", "RASTER", "Geotiff"),
    ("imperviousness-density", "Imperviousness Density", (2006, 2009, 2012, 2015), "EEA", "RASTER", "Geotiff"),
    ("tree-cover-density", "Tree Cover Density", (2012, 2015), "EEA", "RASTER", "Geotiff"),
    ("grassland", "Grassland", (2015,), "EEA", "RASTER", "Geotiff"),
    ("water-bodies-global-v2-0-300m", "Water Bodies 300m v2", (2020,), "LEGACY", "RASTER", "Netcdf"),
    ("burnt-area-v3-1-300m", "Burnt Area 300m v3.1", (2019,), "CDSE", "RASTER", "Netcdf"),
    ("land-surface-temperature-v1-0-5km", "Land Surface Temperature 5km", (2010,), "CDSE", "RASTER", "Netcdf"),
    ("surface-soil-moisture-v1-0-1km", "Surface Soil Moisture 1km", (2015,), "CDSE", "RASTER", "Netcdf"),
    ("lake-water-quality-v1-0-300m", "Lake Water Quality 300m", (2016,), "LEGACY", "RASTER", "Netcdf"),
    ("vegetation-phenology-and-productivity-parameters", "Vegetation Phenology and Productivity", (2017,), "WEKEO",
     "RASTER", "Geotiff"),
    ("seasonal-trajectories", "Seasonal Trajectories", (2017,), "WEKEO", "RASTER", "Geotiff"),
    ("ecosystem-extent", "Ecosystem Extent", (2012, 2018), "EEA", "VECTOR", "GPKG"),
    ("high-resolution-wetland-layer", "Wetland Layer", (2015, 2018), "EEA", "RASTER", "Geotiff"),
    ("coastal-zones-change", "Coastal Zones Change", (2012, 2018), "EEA", "VECTOR", "GPKG"),
    ("urban-atlas-building-height", "Urban Atlas Building Height", (2012,), "EEA", "RASTER", "Geotiff"),
    ("european-settlement-map", "European Settlement Map", (2015,), "EEA", "RASTER", "Geotiff"),
    ("river-net-zones", "Riparian Zones Green Linear Elements", (2012, 2018), "EEA", "VECTOR", "Shapefile"),
    ("river-and-lake-ice-extent-europe-20m", "River and Lake Ice Extent Europe 20m", (2017,), "WEKEO", "RASTER",
     "Geotiff"),
)

_ISO = "%Y-%m-%d %H:%M:%S"
CTX = web.AppKey("clms_ctx", SandboxContext)


# --------------------------------------------------------------------------- state


@dataclass
class _Client:
    client_id: str
    user_id: str
    key_id: str
    public_key: Any  # cryptography RSAPublicKey


@dataclass
class _Token:
    user_id: str
    issued: float  # sandbox seconds
    expires: float
    answer: int = 401  # how a call with this token is refused once expired (200: the add-on's "log in" body)


@dataclass
class ApiDataset:
    """One DataSet of the portal's catalogue (downloadable when ``spec`` is set)."""

    uid: str
    short_name: str
    title: str
    description: str
    source: str  # EEA | LEGACY | LANDCOVER | CDSE | WEKEO
    info_id: str  # dataset_download_information item @id
    raster_name: str  # RASTER | VECTOR
    full_format: Any  # "Geotiff", or {"title", "token"} as some real entries have
    full_path: str
    crs: list[str]
    start: dt.date
    end: dt.date
    bbox: tuple[float, float, float, float]
    files: list[dict[str, Any]]
    timeseries: bool
    limit_days: int
    spec: Any = None  # the store's DatasetSpec, None for listing-only entries
    wekeo_id: str = ""
    record: dict[str, Any] | None = None  # the store's own @search fields (clms_api_record), if it has them

    @property
    def format_token(self) -> str:
        return self.full_format["token"] if isinstance(self.full_format, dict) else str(self.full_format)

    def metadata(self, origin: str) -> dict[str, Any]:
        """The catalogue metadata columns of this DataSet (what ``metadata_fields`` can ask for)."""
        w, s, e, n = self.bbox
        return {
            "@id": f"{origin}/api/en/products/{self.short_name}",
            "@type": "DataSet",
            "UID": self.uid,
            "id": self.short_name,
            "getId": self.short_name,
            "title": self.title,
            "Title": self.title,
            "description": self.description,
            "review_state": "published",
            "image_field": "",
            "portal_type": "DataSet",
            "dataset_full_format": self.format_token,
            "dataset_download_information": {
                "items": [
                    {
                        "@id": self.info_id,
                        "collection": self.raster_name.lower(),
                        "full_format": self.full_format,
                        "full_path": self.full_path,
                        "full_source": self.source,
                        "layers": [],
                        "name": self.raster_name,
                        "wekeo_choices": "",
                    }
                ]
            },
            "downloadable_files": {"items": [dict(f) for f in self.files]},
            "coordinateReferenceSystemList": list(self.crs),
            "temporalExtentStart": f"{self.start.isoformat()}T00:00:00",
            "temporalExtentEnd": f"{self.end.isoformat()}T00:00:00",
            "geographicBoundingBox": {
                "items": [{"west": f"{w:.4f}", "south": f"{s:.4f}", "east": f"{e:.4f}", "north": f"{n:.4f}"}]
            },
            "mapviewer_istimeseries": self.timeseries,
            "download_limit_temporal_extent": self.limit_days,
            "geonetwork_identifiers": {"items": []},
            **{k: v for k, v in (self.record or {}).items() if k != "@id"},
        }


@dataclass
class _Task:
    task_id: str
    user_id: str
    datasets: list[dict[str, Any]]  # what the API returns under "Datasets"
    targets: list[dict[str, Any]]  # internal: per item, what data to package
    registered: float
    delay: float
    fme_task_id: int
    naive: bool  # older tasks carry naive timestamps
    outcome: str = "Finished_ok"  # planned final status
    message: str | None = None
    cancelled_at: float | None = None
    build_failed: str | None = None
    link_token: str | None = None
    zip_path: Path | None = None
    file_size: int | None = None
    build_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def start_time(self) -> float:
        return self.registered + self.delay / 2.0

    @property
    def end_time(self) -> float:
        if self.outcome in ("Rejected", "Cancelled"):
            return self.start_time
        return self.registered + self.delay

    def status(self, now: float) -> str:
        if self.cancelled_at is not None:
            return "Cancelled"
        if now < self.start_time:
            return "Queued"
        if self.outcome in ("Rejected", "Cancelled"):
            return self.outcome
        if now < self.end_time:
            return "In_progress"
        if self.build_failed:
            return "Finished_nok"
        return self.outcome


@dataclass
class _Link:
    task_id: str
    path: Path
    name: str
    issued: float
    dead: int | None = None  # status a killed link answers with


class ClmsApiState:
    """Everything the CLMS API module remembers (``ctx.state["clms_api"]``)."""

    def __init__(self, ctx: SandboxContext):
        self.lock = threading.Lock()
        self.clients: dict[str, _Client] = {}
        self.tokens: dict[str, _Token] = {}
        self.tasks: dict[str, _Task] = {}
        self.links: dict[str, _Link] = {}
        self.files: dict[str, tuple[str, Any]] = {}  # /files/ relative path -> ("item", id) | ("path", Path)
        self.buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, real monotonic time)
        self.files_arrivals: list[float] = []  # real monotonic time each /files/ request arrived (rate checks)
        self.keys: list[tuple[Path, dict[str, Any]]] = []
        self.keys_base = ctx.base_url
        self.default_key: Path | None = None
        self.rng = random.Random(f"clms-api:{ctx.seed}")
        self.fme_counter = 4000
        self.task_counter = 0
        self.link_lifetime = float(getattr(ctx, "clms_link_lifetime", DEFAULT_LINK_LIFETIME))
        self.files_rate = float(getattr(ctx, "clms_files_rate", DEFAULT_FILES_RATE))
        self.result_layout = str(getattr(ctx, "clms_result_layout", "results_inner"))
        self.listing_shape = str(getattr(ctx, "clms_listing_shape", "documented"))
        self.status_case = str(getattr(ctx, "clms_status_case", "documented"))
        self.status_filter = str(getattr(ctx, "clms_status_filter", "any_case"))
        self.duplicate_of = str(getattr(ctx, "clms_duplicate_of", "active"))
        self._catalog: list[ApiDataset] | None = None

    def catalog(self, ctx: SandboxContext) -> list[ApiDataset]:
        if self._catalog is None:
            built = _build_catalog(ctx)
            with self.lock:
                if self._catalog is None:
                    self._catalog = built
        return self._catalog

    def dataset_by_uid(self, ctx: SandboxContext, uid: str) -> ApiDataset | None:
        return next((d for d in self.catalog(ctx) if d.uid == uid), None)


def state(ctx: SandboxContext) -> ClmsApiState:
    """This module's state in ``ctx`` (created on first use)."""
    st = ctx.state.get("clms_api")
    if st is None:
        st = ctx.state.setdefault("clms_api", ClmsApiState(ctx))
    return st


# --------------------------------------------------------------------------- service keys


def _iso(t: float, naive: bool = False) -> str:
    stamp = dt.datetime.fromtimestamp(t, tz=dt.timezone.utc)
    return stamp.replace(tzinfo=None).isoformat() if naive else stamp.isoformat()


def register_public_key(ctx: SandboxContext, client_id: str, user_id: str, public_key: Any, key_id: str = "") -> None:
    """Accept JWT assertions signed by the private half of ``public_key`` (PEM bytes/str or key object)."""
    if isinstance(public_key, (str, bytes)):
        data = public_key.encode() if isinstance(public_key, str) else public_key
        public_key = serialization.load_pem_public_key(data)
    st = state(ctx)
    with st.lock:
        st.clients[client_id] = _Client(client_id, user_id, key_id, public_key)


def _write_private(path: Path, payload: dict[str, Any]) -> None:
    """Write a secret JSON file readable only by its owner (mode 0600 from creation on)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(payload, fh, indent=2)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def mint_service_key(
    ctx: SandboxContext, path: str | Path | None = None, *, user_id: str = DEFAULT_USER, title: str | None = None
) -> Path:
    """Create a service key as the portal does ("My settings -> API tokens") and register its public half.

    The JSON holds client_id, user_id, token_uri, private_key (PEM RSA),
    key_id, title, issued and ip_range, like the file a user saves; it is
    written with mode 0600.  Without ``path`` it goes to a new file in
    ``ctx.data_dir``.  The key material is never logged.
    """
    st = state(ctx)
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    ).decode()
    client_id = str(uuid.uuid4())
    key_id = str(uuid.uuid4())
    payload = {
        "client_id": client_id,
        "ip_range": None,
        "issued": _iso(ctx.clock.now()),
        "key_id": key_id,
        "private_key": pem,
        "title": title or "intake-clms sandbox key",
        "token_uri": ctx.base_url + TOKEN_PATH,
        "user_id": user_id,
    }
    if path is None:
        with st.lock:
            n = len(st.keys)
        path = Path(ctx.data_dir) / "clms" / f"service-key-{n + 1}-{key_id[:8]}.json"
    path = Path(path)
    register_public_key(ctx, client_id, user_id, private.public_key(), key_id)
    _write_private(path, payload)
    with st.lock:
        st.keys.append((path, payload))
    return path


def default_service_key(ctx: SandboxContext) -> Path:
    """The service key minted at setup for the default user (minted now if setup has not run).

    Each sandbox mints it into a file of its own (a fresh name): two sandboxes sharing a data
    directory never replace each other's key, whose ``token_uri`` names its own server.
    """
    st = state(ctx)
    if st.default_key is None or not st.default_key.exists():
        st.default_key = mint_service_key(ctx)
    return st.default_key


def refresh_service_keys(ctx: SandboxContext) -> None:
    """Rewrite minted key files whose token_uri predates the server's final base URL."""
    st = state(ctx)
    if st.keys_base == ctx.base_url:
        return
    with st.lock:
        st.keys_base = ctx.base_url
        keys = list(st.keys)
    for path, payload in keys:
        if payload.get("token_uri") != ctx.base_url + TOKEN_PATH and path.exists():
            payload["token_uri"] = ctx.base_url + TOKEN_PATH
            _write_private(path, payload)


# --------------------------------------------------------------------------- catalogue


def _stable_uuid(*parts: object) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "clms-sandbox:" + ":".join(str(p) for p in parts)))


def _uid(*parts: object) -> str:
    return hashlib.md5(("clms-sandbox-uid:" + ":".join(str(p) for p in parts)).encode()).hexdigest()


def _store_specs(ctx: SandboxContext) -> list[Any]:
    """The store's CLMS-API datasets that carry what the portal needs (UID and download information)."""
    if ctx.store is None:
        return []
    return [s for s in ctx.store.clms_api_datasets() if s.uid and s.download_information]


_TILED = ("europe_tiles", "europe_tiles_nogrid", "global_tiles")
_NOT_SERIES = ("yearly", "3yearly", "6yearly", "static")


def _dataset_from_spec(spec: Any, record: dict[str, Any] | None = None) -> ApiDataset:
    """The portal entry of a store dataset, from the UID, files and download information the store gives it."""
    source = str(spec.source or spec.download_information[0].get("full_source", "EEA"))
    timeseries = source != "EEA" and spec.frequency not in _NOT_SERIES
    info = dict(spec.download_information[0])
    return ApiDataset(
        uid=spec.uid,
        short_name=str(spec.key),
        title=spec.title or str(spec.key),
        description=f"Sandbox copy of {spec.key} ({source} source).",
        source=source,
        info_id=str(info["@id"]),
        raster_name=str(info.get("name", "RASTER")),
        full_format=info.get("full_format") or ("Netcdf" if spec.pattern == "global_nc" else "Geotiff"),
        full_path=str(info.get("full_path", "")) or str(info.get("collection", "")) or str(spec.key),
        crs=list(spec.crs_list or (spec.crs,)),
        start=spec.start,
        end=spec.end,
        bbox=tuple(spec.bbox),
        files=[dict(f) for f in spec.downloadable_files],
        timeseries=timeseries,
        limit_days=366 if timeseries else 0,
        spec=spec,
        record=record,
    )


def _listing_only(taken: set[str]) -> list[ApiDataset]:
    out: list[ApiDataset] = []
    for slug, title, years, source, name, fmt in _LISTING_FAMILIES:
        for i, year in enumerate(years):
            short = f"{slug}-{year}" if len(years) > 1 or source == "EEA" else slug
            if short in taken:
                continue
            files = []
            initials = "".join(w[0] for w in slug.split("-")).upper()
            if source == "EEA":
                stem = f"{initials}_{year}_eu_03035_V1"
                # Listing-only: the file entry exists but has no path/source, as many real ones do.
                files.append(
                    {
                        "@id": _stable_uuid(short, "file", year),
                        "area": "Europe",
                        "file": stem,
                        "format": fmt,
                        "path": "",
                        "resolution": "100 m" if name == "RASTER" else "",
                        "size": "",
                        "source": "",
                        "title": "",
                        "type": name.capitalize(),
                        "version": "v1",
                        "year": str(year),
                    }
                )
            # Some older entries carry full_format as a vocabulary term, not a string.
            full_format: Any = {"title": fmt, "token": fmt} if i % 2 else fmt
            out.append(
                ApiDataset(
                    uid=_uid(short),
                    short_name=short,
                    title=f"{title} {year}" if short.endswith(str(year)) else title,
                    description=f"{title} (listed in the sandbox catalogue; not downloadable here).",
                    source=source,
                    info_id=_stable_uuid(short, "info"),
                    raster_name=name,
                    full_format=full_format,
                    full_path="" if source in ("EEA", "CDSE") else f"{slug}/{year}",
                    crs=["EPSG:3035"] if source in ("EEA", "WEKEO") else ["EPSG:4326"],
                    start=dt.date(year, 1, 1),
                    end=dt.date(year, 12, 31),
                    bbox=EUROPE_BBOX if source != "CDSE" else (-180.0, -90.0, 180.0, 90.0),
                    files=files,
                    timeseries=source in ("CDSE", "LEGACY", "WEKEO"),
                    limit_days=366 if source in ("CDSE", "LEGACY", "WEKEO") else 0,
                    wekeo_id=f"EO:CRYO:DAT:HRSI:{initials}" if source == "WEKEO" else "",
                )
            )
    return out


def _build_catalog(ctx: SandboxContext) -> list[ApiDataset]:
    datasets: list[ApiDataset] = []
    seen: set[str] = set()
    record_of = getattr(ctx.store, "clms_api_record", None) if ctx.store is not None else None
    for spec in _store_specs(ctx):
        record = None
        if record_of is not None:
            record = dict(record_of(spec.key))
        ds = _dataset_from_spec(spec, record)
        if ds.short_name in seen:
            continue
        seen.add(ds.short_name)
        datasets.append(ds)
    datasets += _listing_only(seen)
    datasets.sort(key=lambda d: d.short_name)
    return datasets


# --------------------------------------------------------------------------- helpers


def _origin(ctx: SandboxContext, request: web.Request) -> str:
    return ctx.base_url or f"{request.scheme}://{request.host}"


def _error(status: int, msg: str, **extra: Any) -> web.Response:
    return web.json_response({"status": "error", "msg": msg, **extra}, status=status)


def _plone_error(status: int, type_: str, message: str) -> web.Response:
    return web.json_response({"type": type_, "message": message}, status=status)


def _wants_json(request: web.Request) -> bool:
    return "application/json" in request.headers.get("Accept", "")


def _not_json(request: web.Request) -> web.Response:
    """What Plone answers a REST path asked for without ``Accept: application/json``: an HTML page."""
    if request.path.endswith("/@search"):
        body = "<!DOCTYPE html><html><head><title>Search - Copernicus Land Monitoring Service</title></head>" \
               "<body><h1>Search results</h1></body></html>"
        return web.Response(status=200, text=body, content_type="text/html")
    body = "<!DOCTYPE html><html><head><title>Page not found</title></head>" \
           "<body><h1>This page does not seem to exist&hellip;</h1></body></html>"
    return web.Response(status=404, text=body, content_type="text/html")


def _where(request: web.Request) -> tuple[str, str]:
    service = request.get("sandbox_service")
    endpoint = request.get("sandbox_endpoint")
    if service and endpoint:
        return service, endpoint
    name = getattr(request.match_info.route, "name", None) or "clms.unknown"
    parts = name.split(".")
    return parts[0], parts[1] if len(parts) > 1 else "*"


def _unauthorized(expired: bool) -> web.Response:
    detail = "The access token expired" if expired else "Missing or unknown access token"
    body = {
        "status": "error",
        "msg": MSG["NOT_LOGGED_IN"],
        "type": "Unauthorized",
        "message": f"You are not authorized to access this resource. {detail}.",
    }
    challenge = f'Bearer realm="land.copernicus.eu", error="invalid_token", error_description="{detail}"'
    return web.json_response(body, status=401, headers={"WWW-Authenticate": challenge})


def _authenticate(ctx: SandboxContext, request: web.Request) -> str | web.Response:
    """The user id behind the request's bearer token, or the 401 to answer."""
    st = state(ctx)
    now = ctx.clock.now()
    service, endpoint = _where(request)
    fault = ctx.faults.take(service, endpoint, {"token_expiry"})
    if fault is not None:
        answer = int(fault.params.get("answer", 401))
        with st.lock:
            for tok in st.tokens.values():
                tok.expires = min(tok.expires, now)
                tok.answer = answer
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return _unauthorized(expired=False)
    with st.lock:
        tok = st.tokens.get(value.strip())
    if tok is None:
        return _unauthorized(expired=False)
    if now >= tok.expires:
        if tok.answer == 200:
            # What the add-on's services answer when the request carries no user: 200 with an error body.
            return _error(200, MSG["NOT_LOGGED_IN"])
        return _unauthorized(expired=True)
    return tok.user_id


@dataclass(frozen=True)
class _Call:
    """What every REST handler starts from: the context, the caller (None when anonymous), the JSON body."""

    ctx: SandboxContext
    user: str | None = None
    body: Any = None


def _api(*, auth: bool = True, body: bool = False) -> Callable[[Any], Callable[[web.Request], Any]]:
    """Wrap a REST handler with the portal's preamble, in its order: ``Accept: application/json`` (else
    Plone's HTML page), then the bearer token (else 401), then the JSON body (else a deserialization error)."""

    def wrap(handler: Callable[[web.Request, _Call], Awaitable[web.StreamResponse]]) -> Callable[[web.Request], Any]:
        @functools.wraps(handler)
        async def run(request: web.Request) -> web.StreamResponse:
            ctx = request.app[CTX]
            if not _wants_json(request):
                return _not_json(request)
            user = None
            if auth:
                user = _authenticate(ctx, request)
                if isinstance(user, web.Response):
                    return user
            data = None
            if body:
                data = await _json_body(request)
                if isinstance(data, web.Response):
                    return data
            return await handler(request, _Call(ctx, user, data))

        return run

    return wrap


async def _json_body(request: web.Request) -> Any | web.Response:
    try:
        raw = await request.read()
        return json.loads(raw or b"{}")
    except (ValueError, UnicodeDecodeError):
        return _plone_error(400, "DeserializationError", "No JSON object could be decoded")


def _ms_to_text(value: Any) -> str | None:
    try:
        stamp = dt.datetime.fromtimestamp(int(value) / 1000.0, tz=dt.timezone.utc)
    except (TypeError, ValueError, OverflowError, OSError):
        return None
    return stamp.strftime(_ISO)


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


def _normalise_bbox(box: Iterable[float]) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = (float(v) for v in box)
    return min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)


def _valid_nuts(code: Any) -> bool:
    return isinstance(code, str) and code.isalnum() and code[:2].upper() in COUNTRIES


# --------------------------------------------------------------------------- token endpoint


def _grant_error(status: int, error: str, description: str) -> web.Response:
    return web.json_response({"error": error, "error_description": description}, status=status)


async def _token(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CTX]
    refresh_service_keys(ctx)
    st = state(ctx)
    form = await request.post()
    grant_type = form.get("grant_type")
    assertion = form.get("assertion")
    if grant_type != JWT_BEARER:
        return _grant_error(400, "unsupported_grant_type", f"grant_type must be {JWT_BEARER}")
    if not assertion or not isinstance(assertion, str):
        return _grant_error(400, "invalid_request", "Missing assertion")
    try:
        unverified = jwt.decode(assertion, options={"verify_signature": False})
    except jwt.PyJWTError:
        return _grant_error(400, "invalid_grant", "The assertion is not a valid JWT")
    with st.lock:
        client = st.clients.get(str(unverified.get("iss", "")))
    if client is None:
        return _grant_error(401, "invalid_client", "Unknown client: no service key with this client_id (iss)")
    audiences = sorted({ctx.base_url + TOKEN_PATH, f"{request.scheme}://{request.host}{TOKEN_PATH}"})
    try:
        claims = jwt.decode(
            assertion,
            client.public_key,
            algorithms=["RS256"],
            audience=audiences,
            options={"require": ["iss", "sub", "aud", "iat", "exp"], "verify_exp": False, "verify_iat": False,
                     "verify_nbf": False},
        )
    except jwt.InvalidAlgorithmError:
        return _grant_error(400, "invalid_grant", "The assertion must be signed with RS256")
    except jwt.InvalidSignatureError:
        return _grant_error(400, "invalid_grant", "The assertion signature does not match the service key")
    except jwt.InvalidAudienceError:
        return _grant_error(400, "invalid_grant", "The assertion audience (aud) must be the token_uri")
    except jwt.MissingRequiredClaimError as exc:
        return _grant_error(400, "invalid_grant", f"The assertion lacks the {exc.claim!r} claim")
    except jwt.PyJWTError:
        return _grant_error(400, "invalid_grant", "The assertion could not be verified")
    if claims.get("sub") != client.user_id:
        return _grant_error(400, "invalid_grant", "The assertion subject (sub) is not the key's user_id")
    try:
        iat, exp = float(claims["iat"]), float(claims["exp"])
    except (TypeError, ValueError):
        return _grant_error(400, "invalid_grant", "iat and exp must be numbers")
    if exp - iat > MAX_ASSERTION_LIFE:
        return _grant_error(400, "invalid_grant",
                            f"The assertion lives too long: exp - iat must be <= {MAX_ASSERTION_LIFE} s")
    # The client signs with its own wall clock, so iat/exp are judged on the wall
    # clock: the accelerated sandbox clock would refuse every fresh assertion once
    # it has run an hour ahead.  Access-token lifetimes use the sandbox clock.
    wall = time.time()
    if exp < wall - ASSERTION_LEEWAY:
        return _grant_error(400, "invalid_grant", "The assertion has expired (exp is in the past)")
    if iat > wall + ASSERTION_LEEWAY:
        return _grant_error(400, "invalid_grant", "The assertion was issued in the future (iat)")
    now = ctx.clock.now()
    token = secrets.token_urlsafe(32)
    with st.lock:
        st.tokens[token] = _Token(client.user_id, now, now + float(ctx.token_lifetime))
    return web.json_response(
        {"access_token": token, "expires_in": int(ctx.token_lifetime), "token_type": "Bearer"}
    )


# --------------------------------------------------------------------------- @search


def _search_query_matches(ds: ApiDataset, query: list[tuple[str, str]]) -> bool:
    for key, value in query:
        if key == "portal_type" and value != "DataSet":
            return False
        if key == "UID" and value != ds.uid:
            return False
        if key in ("id", "getId") and value != ds.short_name:
            return False
        if key == "SearchableText":
            words = [w for w in re.split(r"\W+", value.lower().replace("*", "")) if w]
            text = f"{ds.short_name} {ds.title} {ds.description}".lower()
            if not all(w in text for w in words):
                return False
    return True


@_api(auth=False)
async def _search(request: web.Request, call: _Call) -> web.StreamResponse:
    ctx = call.ctx
    st = state(ctx)
    origin = _origin(ctx, request)
    query = parse_qsl(request.query_string, keep_blank_values=True)
    portal_types = [v for k, v in query if k == "portal_type"]
    try:
        b_start = max(0, int(request.query.get("b_start", 0) or 0))
        b_size = int(request.query.get("b_size", DEFAULT_BATCH) or DEFAULT_BATCH)
    except ValueError:
        return _plone_error(400, "BadRequest", "b_start and b_size must be integers")
    if b_size <= 0:
        b_size = DEFAULT_BATCH
    if ctx.page_cap is not None:
        b_size = min(b_size, ctx.page_cap)
    catalog = await asyncio.get_running_loop().run_in_executor(None, st.catalog, ctx)
    filters = [(k, v) for k, v in query if k not in ("portal_type",)]
    wanted = not portal_types or "DataSet" in portal_types
    results = [d for d in catalog if wanted and _search_query_matches(d, filters)]
    full = "fullobjects" in request.query and request.query.get("fullobjects", "1").lower() not in ("0", "false")
    fields = [v for k, v in query if k == "metadata_fields"]
    defaults = ("@id", "@type", "description", "image_field", "review_state", "title")
    items = []
    for ds in results[b_start:b_start + b_size]:
        meta = _shaped(ds.metadata(origin), st.listing_shape)
        if full:
            item = dict(meta)
            item.update({"language": "en", "is_folderish": False, "layout": "view",
                         "parent": {"@id": f"{origin}/api/en/products", "@type": "Folder", "title": "Products"}})
        elif "_all" in fields:
            item = dict(meta)
        else:
            item = {k: meta[k] for k in defaults}
            for name in fields:
                if name in meta:
                    item[name] = meta[name]
        items.append(item)
    url = f"{origin}{request.path}"
    current = f"{url}?{request.query_string}" if request.query_string else url
    body: dict[str, Any] = {"@id": current, "items": items, "items_total": len(results)}
    if len(results) > b_size:
        rest = [(k, v) for k, v in query if k != "b_start"]

        def page(start: int) -> str:
            return f"{url}?{urlencode([('b_start', str(start))] + rest)}"

        last = ((len(results) - 1) // b_size) * b_size
        batching = {"@id": current, "first": page(0), "last": page(last)}
        if b_start + b_size < len(results):
            batching["next"] = page(b_start + b_size)
        if b_start > 0:
            batching["prev"] = page(max(0, b_start - b_size))
        body["batching"] = batching
    return web.json_response(body)


def _shaped(meta: dict[str, Any], shape: str) -> dict[str, Any]:
    """A dataset's metadata in the ``recorded`` listing shape (see the module doc), else as it is."""
    if shape != "recorded":
        return meta
    meta = dict(meta)
    infos = [dict(i) for i in meta["dataset_download_information"]["items"]]
    for info in infos:
        info["name"] = f"{info.get('name', '')} "
        info["collection"] = f" {info.get('collection', '')}"
    part = {"@id": _stable_uuid(meta.get("UID"), "part-2"), "collection": "100m – Part 1", "full_format": None,
            "full_path": "", "name": "RASTER (Part 2)", "wekeo_choices": ""}  # no full_source: not requestable
    meta["dataset_download_information"] = {"items": [part, *infos]}
    files = []
    for f in meta["downloadable_files"]["items"]:
        g = {k: "" if v is None else str(v) for k, v in f.items() if k != "file"}
        g["area"] = str(f.get("file") or "")
        files.append(g)
    meta["downloadable_files"] = {"items": files}
    return meta


# --------------------------------------------------------------------------- @datarequest_post


def _validate_general(ds: ApiDataset, item: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]] | str:
    """(public dataset entry, internal target) for a general request item, or an error message."""
    entry: dict[str, Any] = {"DatasetID": ds.uid, "DatasetTitle": ds.title}
    target: dict[str, Any] = {"uid": ds.uid, "kind": "general"}
    if "NUTS" in item:
        if not _valid_nuts(item["NUTS"]):
            return MSG["NUTS_COUNTRY_ERROR"]
        code = item["NUTS"].upper()
        entry["NUTSID"] = code
        entry["NUTSName"] = NUTS_NAMES.get(code, COUNTRIES[code[:2]][0])
        target["bbox"] = COUNTRIES[code[:2]][1]
    if "BoundingBox" in item:
        if "NUTS" in item:
            return MSG["NUTS_ALSO_DEFINED"]
        box = item["BoundingBox"]
        if not isinstance(box, list) or len(box) != 4 or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in box
        ):
            return MSG["INVALID_BOUNDINGBOX"]
        entry["BoundingBox"] = box
        target["bbox"] = _normalise_bbox(box)
    if "TemporalFilter" in item:
        tf = item["TemporalFilter"]
        if not ds.timeseries:
            return MSG["TEMP_REST_NOT_ALLOWED"]
        if not isinstance(tf, dict):
            return MSG["INCORRECT_DATE"]
        if len(tf) > 2:
            return MSG["TEMP_TOO_MANY"]
        if "StartDate" not in tf or "EndDate" not in tf:
            return MSG["TEMP_MISSING_RANGE"]
        start, end = _ms_to_text(tf["StartDate"]), _ms_to_text(tf["EndDate"])
        if start is None or end is None:
            return MSG["INCORRECT_DATE"]
        if start > end:
            return MSG["INCORRECT_DATE_RANGE"]
        entry["TemporalFilter"] = {"StartDate": start, "EndDate": end}
        target["start"], target["end"] = start, end
    if "OutputGCS" not in item:
        return MSG["MISSING_GCS"]
    if item["OutputGCS"] not in OUTPUT_GCS:
        return MSG["UNDEFINED_GCS"]
    entry["OutputGCS"] = item["OutputGCS"]
    if "DatasetDownloadInformationID" not in item:
        return MSG["UNDEFINED_INFO_ID"]
    if item["DatasetDownloadInformationID"] != ds.info_id or ds.spec is None or not ds.full_path:
        return MSG["NOT_DOWNLOADABLE"]
    output = item.get("OutputFormat")
    if output not in FORMAT_CONVERSION:
        return MSG["INVALID_OUTPUT"]
    if output not in FORMAT_CONVERSION.get(ds.format_token, set()):
        return MSG["NOT_COMPATIBLE"]
    if "Layer" in item:
        if item["Layer"] not in ("ALL BANDS",):
            return MSG["INVALID_LAYER"]
        entry["Layer"] = item["Layer"]
    if ds.timeseries and "TemporalFilter" not in item:
        return MSG["MISSING_TEMPORAL"]
    if ds.limit_days and "TemporalFilter" in entry:
        span = dt.datetime.strptime(entry["TemporalFilter"]["EndDate"], _ISO) - dt.datetime.strptime(
            entry["TemporalFilter"]["StartDate"], _ISO
        )
        if span > dt.timedelta(days=ds.limit_days):
            return (
                "You are requesting to download a time series enabled dataset and the requested date range is "
                f"bigger than the allowed range of {ds.limit_days} days. Please check the download documentation "
                "to get more information"
            )
    if "NUTS" not in item and "BoundingBox" not in item:
        if "TemporalFilter" not in item:
            return MSG["FULL_EEA"] if ds.source == "EEA" else MSG["FULL_NOT_EEA"]
        if ds.source != "EEA":
            return MSG["MUST_HAVE_AREA"]
    entry.update(
        {
            "DatasetFormat": ds.format_token,
            "OutputFormat": output,
            "DatasetPath": _b64(ds.full_path),
            "DatasetSource": ds.source,
            "WekeoChoices": "",
            "Metadata": [],
        }
    )
    target["output"] = output
    return entry, target


def _comparable(entry: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in entry.items() if k != "DatasetTitle"}, sort_keys=True)


@_api(body=True)
async def _datarequest_post(request: web.Request, call: _Call) -> web.StreamResponse:
    ctx, user, body = call.ctx, call.user, call.body
    st = state(ctx)
    items = body.get("Datasets") if isinstance(body, dict) else None
    if not isinstance(items, list):
        return _error(400, "Error, Datasets is not defined")
    catalog = await asyncio.get_running_loop().run_in_executor(None, st.catalog, ctx)
    by_uid = {d.uid: d for d in catalog}
    prepackaged: list[tuple[dict[str, Any], dict[str, Any]]] = []
    general: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for item in items:
        if not isinstance(item, dict) or not item.get("DatasetID"):
            return _error(400, MSG["UNDEFINED_DATASET_ID"])
        ds = by_uid.get(str(item["DatasetID"]))
        if ds is None:
            return _error(400, MSG["INVALID_DATASET_ID"])
        if "FileID" in item:
            f = next((f for f in ds.files if f["@id"] == item["FileID"]), None)
            if f is None or not f.get("path") or not f.get("source") or ds.spec is None:
                return _error(400, MSG["INVALID_FILE_ID"])
            entry = {
                "DatasetID": ds.uid,
                "DatasetTitle": ds.title,
                "FileID": f["@id"],
                "DatasetPath": "",
                "FilePath": _b64(f["path"]),
                "DatasetSource": f["source"],
            }
            prepackaged.append((entry, {"uid": ds.uid, "kind": "file", "file_id": f["@id"]}))
        else:
            checked = _validate_general(ds, item)
            if isinstance(checked, str):
                return _error(400, checked)
            general.append(checked)
    if len(general) > MAX_GENERAL_ITEMS:
        return _error(400, MSG["DOWNLOAD_LIMIT"])
    now = ctx.clock.now()
    counted = ACTIVE + (("Finished_ok",) if st.duplicate_of == "live" else ())
    with st.lock:
        active = [
            e
            for t in st.tasks.values()
            if t.user_id == user and t.status(now) in counted
            for e in t.datasets
            if "FileID" not in e
        ]
    seen = {_comparable(e) for e in active}
    for entry, _ in general:
        key = _comparable(entry)
        if key in seen:
            return _error(400, MSG["DUPLICATED"])
        seen.add(key)
    service, endpoint = _where(request)
    task_ids = []
    for group in (prepackaged, general):
        if not group:
            continue
        failure = ctx.faults.take(service, endpoint, {"terminal_failure"})
        cancel = ctx.faults.take(service, endpoint, {"server_cancel"}) if failure is None else None
        with st.lock:
            task_id = str(st.rng.randint(0, 99999999999))
            while task_id in st.tasks:
                task_id = str(st.rng.randint(0, 99999999999))
            st.fme_counter += 1
            st.task_counter += 1
            task = _Task(
                task_id=task_id,
                user_id=user,
                datasets=[e for e, _ in group],
                targets=[t for _, t in group],
                registered=now,
                delay=max(0.0, float(ctx.queue_delay)),
                fme_task_id=st.fme_counter,
                naive=st.task_counter % 2 == 1,
            )
            if failure is not None:
                task.outcome = str(failure.params.get("status", "Finished_nok"))
                if task.outcome in STATUSES and task.outcome not in ("Finished_nok", "Rejected", "Cancelled"):
                    task.outcome = "Finished_nok"  # a status outside STATUSES stays: a task stuck in an unknown state
                task.message = str(failure.params.get("message", _default_failure(task.outcome)))
            elif cancel is not None:
                task.outcome = "Cancelled"
                task.message = str(cancel.params.get("message", "The task was cancelled by the system"))
            st.tasks[task_id] = task
        task_ids.append({"TaskID": task_id})
    return web.json_response({"TaskIds": task_ids, "ErrorTaskIds": []}, status=201)


def _default_failure(outcome: str) -> str:
    return {
        "Rejected": "The request was rejected by the download system",
        "Cancelled": "The task was cancelled by the system",
    }.get(outcome, "Error in the FME process: the transformation failed")


# --------------------------------------------------------------------------- results


def _data_files(ctx: SandboxContext, ds: ApiDataset, target: dict[str, Any]) -> list[Path]:
    """Files that make up one request item's result (tiles, or time steps)."""
    store, spec = ctx.store, ds.spec
    if target["kind"] == "file":
        return [Path(p) for p in store.downloadable_file_members(spec.key, target["file_id"])]
    bbox = target.get("bbox")
    cut = "nc" if target.get("output") == "Netcdf" else "tif"  # a cut-out: a crop of the product's one array
    if spec.pattern in _TILED:
        year = int(target["start"][:4]) if target.get("start") else None
        if bbox is not None:
            return [Path(store.cutout(spec.key, store.tile_step(spec.key, year)[0], bbox, cut))]
        return [Path(p) for p in store.tiles(spec.key, bbox=bbox, year=year, grid_codes=spec.pattern == "europe_tiles")]
    start = dt.datetime.strptime(target["start"], _ISO) if target.get("start") else None
    end = dt.datetime.strptime(target["end"], _ISO) if target.get("end") else None
    if bbox is not None:
        return [Path(store.cutout(spec.key, step, bbox, cut)) for step in store.step_starts_between(spec.key, start, end, bbox)]
    # FME converts to the requested format: GeoTIFF output comes from the store's COG version.
    fmt = "cog" if target.get("output") == "Geotiff" and "cog" in spec.formats else None
    return [Path(store.materialize(it)) for it in store.items(spec.key, bbox=bbox, start=start, end=end, format=fmt)]


def _build_result(ctx: SandboxContext, task: _Task, hostile: str | None, corrupt: bool) -> None:
    """Build the task's result zip (runs in a worker thread)."""
    st = state(ctx)
    with task.build_lock:
        if task.zip_path is not None or task.build_failed:
            return
        members: list[Path] = []
        for target in task.targets:
            ds = st.dataset_by_uid(ctx, target["uid"])
            if ds is not None and ds.spec is not None:
                members += _data_files(ctx, ds, target)
        if not members:
            task.build_failed = "Error in the FME process: no data found for the requested area and dates"
            return
        path = Path(ctx.store.result_zip(members, layout=st.result_layout, hostile=hostile, corrupt=corrupt))
        token = secrets.token_urlsafe(24)
        with st.lock:
            st.links[token] = _Link(task.task_id, path, f"{task.fme_task_id}.zip", task.end_time)
            task.link_token = token
            task.file_size = path.stat().st_size
            task.zip_path = path


async def _settle(ctx: SandboxContext, tasks: Iterable[_Task]) -> None:
    """Build result zips for tasks whose processing time is over (before anyone sees them finished)."""
    now = ctx.clock.now()
    loop = asyncio.get_running_loop()
    for task in tasks:
        if task.cancelled_at is None and task.outcome == "Finished_ok" and now >= task.end_time \
                and task.zip_path is None and not task.build_failed:
            hostile_fault = ctx.faults.take(SERVICE, "fme", {"hostile_zip"})
            corrupt_fault = ctx.faults.take(SERVICE, "fme", {"corrupt_zip"})
            hostile = str(hostile_fault.params.get("variant", "slip")) if hostile_fault else None
            await loop.run_in_executor(None, _build_result, ctx, task, hostile, corrupt_fault is not None)


def _task_json(ctx: SandboxContext, request: web.Request, task: _Task, now: float) -> dict[str, Any]:
    status = task.status(now)
    shown = status.upper() if status == "Queued" and state(ctx).status_case == "upper" else status
    out: dict[str, Any] = {
        "Datasets": [dict(d) for d in task.datasets],
        "FMETaskId": task.fme_task_id,
        "RegistrationDateTime": _iso(task.registered, naive=task.naive),
        "Status": shown,
        "UserID": task.user_id,
    }
    if status == "Finished_ok":
        out["FinalizationDateTime"] = _iso(task.end_time, naive=task.naive)
        out["DownloadURL"] = f"{_origin(ctx, request)}/fme/{task.link_token}/{task.fme_task_id}.zip"
        out["FileSize"] = task.file_size
        out["Message"] = "Download process finished successfully"
    elif status == "Cancelled" and task.cancelled_at is not None:
        out["FinalizationDateTime"] = _iso(task.cancelled_at)  # set by the portal itself: always aware
    elif status in ("Finished_nok", "Rejected", "Cancelled"):
        out["FinalizationDateTime"] = _iso(task.end_time, naive=task.naive)
        out["Message"] = task.build_failed or task.message or _default_failure(status)
    return out


@_api()
async def _status_get(request: web.Request, call: _Call) -> web.StreamResponse:
    ctx = call.ctx
    task_id = request.query.get("TaskID")
    if not task_id:
        return _error(400, MSG["TASK_NOT_DEFINED"])
    st = state(ctx)
    with st.lock:
        task = st.tasks.get(task_id)
    if task is None:
        return _error(404, MSG["TASK_NOT_FOUND"])
    await _settle(ctx, [task])
    return web.json_response(_task_json(ctx, request, task, ctx.clock.now()))


@_api()
async def _datarequest_search(request: web.Request, call: _Call) -> web.StreamResponse:
    ctx, user = call.ctx, call.user
    wanted = request.query.get("status")
    if wanted and wanted not in STATUSES:
        return _error(400, MSG["STATUS_NOT_RECOGNIZED"])
    st = state(ctx)
    with st.lock:
        mine = [t for t in st.tasks.values() if t.user_id == user]
    await _settle(ctx, mine)
    now = ctx.clock.now()
    body = {t.task_id: _task_json(ctx, request, t, now) for t in mine}
    if wanted and st.status_filter == "exact":
        body = {k: v for k, v in body.items() if str(v["Status"]) == wanted}
    elif wanted:
        body = {k: v for k, v in body.items() if str(v["Status"]).lower() == wanted.lower()}
    return web.json_response(body)


@_api(body=True)
async def _datarequest_delete(request: web.Request, call: _Call) -> web.StreamResponse:
    ctx, user, body = call.ctx, call.user, call.body
    task_id = body.get("TaskID") if isinstance(body, dict) else None
    if not task_id:
        return _error(400, MSG["TASK_NOT_DEFINED"])
    st = state(ctx)
    with st.lock:
        task = st.tasks.get(str(task_id))
        if task is None:
            return _error(403, MSG["TASK_NOT_REGISTERED"])  # sic: the real service swaps 403 and 404
        if task.user_id != user:
            return _error(404, MSG["PERMISSION_DENIED"])
        if task.cancelled_at is None:
            task.cancelled_at = ctx.clock.now()
    return web.Response(status=204)


# --------------------------------------------------------------------------- downloads


async def _fme(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CTX]
    st = state(ctx)
    token = request.match_info["token"]
    with st.lock:
        link = st.links.get(token)
    if link is None or request.match_info["name"] != link.name:
        return web.Response(status=404, text="Not Found: the requested result does not exist\n")
    service, endpoint = _where(request)
    fault = ctx.faults.take(service, endpoint, {"expired_link"})
    if fault is not None:
        link.dead = int(fault.params.get("status", 404))
    if link.dead is None and ctx.clock.now() > link.issued + st.link_lifetime:
        link.dead = 404
    if link.dead is not None:
        reason = {403: "Forbidden", 404: "Not Found", 410: "Gone"}.get(link.dead, "Error")
        return web.Response(status=link.dead, text=f"{reason}: this download link has expired\n")
    return await serve_file(request, link.path, ctx, filename=link.name, content_type="application/zip")


def _take_rate_token(st: ClmsApiState, client: str) -> float:
    """0 when the request may pass, else seconds until it could (token bucket, real time).

    Real time on purpose: a rate limit is about how fast a client fires
    requests, and clients wait out Retry-After in real seconds.
    """
    rate = st.files_rate
    if not rate or rate <= 0:
        return 0.0
    capacity = max(1.0, rate)
    now = time.monotonic()
    with st.lock:
        tokens, last = st.buckets.get(client, (capacity, now))
        tokens = min(capacity, tokens + (now - last) * rate)
        if tokens >= 1.0:
            st.buckets[client] = (tokens - 1.0, now)
            return 0.0
        st.buckets[client] = (tokens, now)
        return (1.0 - tokens) / rate


async def _files(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CTX]
    st = state(ctx)
    with st.lock:
        st.files_arrivals.append(time.monotonic())
    wait = _take_rate_token(st, request.remote or "?")
    if wait > 0:
        retry = max(1, math.ceil(wait))
        return web.json_response(
            {"error": "Too Many Requests", "message": "Rate limit exceeded: at most 10 requests per second"},
            status=429,
            headers={"Retry-After": str(retry)},
        )
    rel = request.match_info["path"]
    with st.lock:
        entry = st.files.get(rel)
    if entry is None:
        return web.Response(status=404, text="Not Found\n")
    kind, ref = entry
    if kind == "item":
        path = Path(await asyncio.get_running_loop().run_in_executor(None, ctx.store.materialize, ctx.store.item(ref)))
    else:
        path = Path(ref)
    ctype = "application/x-netcdf" if path.suffix == ".nc" else ("image/tiff" if path.suffix in (".tif", ".tiff") else
                                                                   "application/octet-stream")
    return await serve_file(request, path, ctx, filename=path.name, content_type=ctype)


def _aux_files(ctx: SandboxContext, ds: ApiDataset, bbox: tuple[float, float, float, float] | None,
               start: dt.datetime | None, end: dt.datetime | None) -> list[str]:
    """Relative /files/ paths for the auxiliary API, registering each (runs in a worker thread)."""
    st = state(ctx)
    spec, store = ds.spec, ctx.store
    rels: list[tuple[str, tuple[str, Any]]] = []
    if getattr(spec, "pattern", "").startswith("europe_tiles"):
        for p in store.tiles(spec.key, bbox=bbox, grid_codes=spec.pattern == "europe_tiles"):
            rels.append((f"{ds.source.lower()}/{ds.short_name}/{Path(p).name}", ("path", Path(p))))
    else:
        for it in store.items(spec.key, bbox=bbox, start=start, end=end):
            day = it.start.strftime("%Y/%Y%m%d")  # like the real file trees: .../2017/20170301/<file>
            rels.append((f"{ds.source.lower()}/{ds.short_name}/{day}/{it.name}", ("item", it.id)))
    with st.lock:
        for rel, ref in rels:
            st.files[rel] = ref
    return [rel for rel, _ in rels]


@_api()
async def _download_file_urls(request: web.Request, call: _Call) -> web.StreamResponse:
    ctx = call.ctx
    st = state(ctx)
    uid = request.query.get("dataset_uid")
    if uid is None:
        return web.json_response(
            {"status": "error", "message": "Required parameters are missing: dataset_uid is mandatory"}, status=400
        )
    catalog = await asyncio.get_running_loop().run_in_executor(None, st.catalog, ctx)
    ds = next((d for d in catalog if d.uid == uid), None)
    if ds is None:
        return web.json_response({"status": "error", "message": "Dataset does not exist"}, status=400)
    info_id = request.query.get("download_information_id")
    if info_id is None:
        return web.json_response(
            {"status": "error", "message": "Required parameters are missing: download_information_id is mandatory"},
            status=400,
        )
    if info_id != ds.info_id:
        return web.json_response({"status": "error", "message": "Dataset collection does not exist"}, status=400)
    q = request.query
    try:
        coords = [q.get(k, "") for k in ("x_min", "y_min", "x_max", "y_max")]
        bbox = tuple(float(c) for c in coords) if all(coords) else None
    except ValueError:
        return _error(400, "Error, the coordinates must be numbers")
    start = end = None
    if ds.source == "WEKEO":
        w, s, e, n = bbox or AUX_DEFAULT_BBOX
        return web.json_response(
            {
                "boundingBoxValues": [{"bbox": [w, s, e, n], "name": "bbox"}],
                "datasetId": ds.wekeo_id,
                "dateRangeSelectValues": [
                    {"end": f"{q.get('date_to') or ds.end.isoformat()}T00:00:00.000Z", "name": "Observed",
                     "start": f"{q.get('date_from') or ds.start.isoformat()}T00:00:00.000Z"}
                ],
                "stringChoiceValues": [{"name": "productType", "value": ds.wekeo_id.rsplit(':', 1)[-1]}],
            }
        )
    if ds.source == "LEGACY":
        date_from, date_to = q.get("date_from", ""), q.get("date_to", "")
        if not date_from or not date_to:
            return _error(400, "Error, both date_from and date_to parameters are required")
        try:
            end = dt.datetime.strptime(date_to, "%Y-%m-%d")
        except ValueError:
            return _error(400, "Error, date_to parameter must be a date in YYYY-MM-DD format")
        try:
            start = dt.datetime.strptime(date_from, "%Y-%m-%d")
        except ValueError:
            return _error(400, "Error, date_from parameter must be a date in YYYY-MM-DD format")
        if date_to < date_from:
            return _error(400, "Error, date_from parameter must be smaller than date_to")
        end = end + dt.timedelta(days=1) - dt.timedelta(microseconds=1)
    if ds.source == "LANDCOVER" and bbox is None:
        bbox = AUX_DEFAULT_BBOX
    rels: list[str] = []
    if ds.spec is not None and ds.source in ("LEGACY", "LANDCOVER"):
        rels = await asyncio.get_running_loop().run_in_executor(None, _aux_files, ctx, ds, bbox, start, end)
    if not rels:
        return _error(200, MSG["NO_CONTENT"])  # sic: the real service answers 200 with an error object
    origin = _origin(ctx, request)
    return web.json_response([f"{origin}/files/{rel}" for rel in rels])


@_api(auth=False)
async def _api_not_found(request: web.Request, call: _Call) -> web.StreamResponse:
    return _plone_error(404, "NotFound", f"Resource not found: {request.path}")


# --------------------------------------------------------------------------- setup


def setup(app: web.Application, ctx: SandboxContext) -> None:
    """Add the CLMS API routes (``clms.*``) and mint the default user's service key."""
    app[CTX] = ctx
    state(ctx)
    r = app.router
    r.add_post(TOKEN_PATH, _token, name="clms.token")
    r.add_get("/api/@search", _search, name="clms.search")
    r.add_post("/api/@datarequest_post", _datarequest_post, name="clms.datarequest_post")
    r.add_get("/api/@datarequest_status_get", _status_get, name="clms.datarequest_status_get")
    r.add_get("/api/@datarequest_search", _datarequest_search, name="clms.datarequest_search")
    r.add_delete("/api/@datarequest_delete", _datarequest_delete, name="clms.datarequest_delete")
    r.add_get("/api/@get-download-file-urls", _download_file_urls, name="clms.get_download_file_urls")
    r.add_route("*", "/api/{tail:.*}", _api_not_found, name="clms.notfound")
    r.add_get("/fme/{token}/{name}", _fme, name="clms.fme")
    r.add_get("/files/{path:.+}", _files, name="clms.files")

    async def _on_startup(app: web.Application) -> None:
        refresh_service_keys(ctx)

    app.on_startup.append(_on_startup)
    default_service_key(ctx)
