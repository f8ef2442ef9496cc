"""Deterministic, realistic small products for the sandbox.

The sandbox serves these files; the client code meets the same structures the
real services deliver: CF NetCDF time steps for global products, uint8 EPSG:3035
GeoTIFF tiles on the EEA grid for pan-European ones, COGs for CDSE, GeoJSON for
vector products, and result zips in the CLMS API's layouts (including corrupt
and hostile ones).

One truth per product: every raster file (NetCDF, COG, GeoTIFF tile, CLMS API cut-out) is written from
one array on the product's real grid (:mod:`.rasters`: 1/336 degree for 300 m, EPSG:3035 at 10/20/100 m
for pan-European layers, ...); size classes shrink the extent that holds data, never the grid;
:mod:`.truth` gives what a request must return.

Nothing is committed: every file is generated on first use under ``data_dir``
(atomically, safe across threads and processes), and the same seed always
gives byte-identical files (no wall-clock time goes into any file).

Patterns (``DatasetSpec.pattern``):

``global_nc``
    one CF NetCDF per time step on a lat/lon grid (global products, and the
    Northern Hemisphere, Pan-tropical, Baltic and the pan-European ``c_gls``
    bio-geophysical ones); also available as COGs (``format="cog"``).
``europe_tiles`` / ``europe_tiles_nogrid``
    uint8 GeoTIFF tiles (each holds its part of the size class's extent; a tile outside it is 16 x 16
    nodata pixels at its corner) in EPSG:3035 with nodata 255, on the EEA reference grid;
    the first carry the grid code (``E48N27``) in their names, the second do not
    (like the CLCplus raster).  Items are COGs for datasets published on CDSE.
``global_tiles``
    uint8 GeoTIFF tiles in EPSG:4326, 20 degrees wide, named by their upper-left
    corner (``E000N60``), as the LANDCOVER source delivers them.
``vector``
    a small GeoJSON FeatureCollection per time step.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import re
import shutil
import stat
import threading
import uuid
import zipfile
import zlib
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from . import cog as _cog
from . import rasters as _rasters

__all__ = [
    "DatasetSpec",
    "Item",
    "ProductStore",
    "SIZE_CLASSES",
    "PATTERNS",
    "LAYOUTS",
    "HOSTILE_VARIANTS",
    "HOSTILE_NAMES",
    "parse_size",
    "inspect_file",
]

UTC = dt.timezone.utc
#: "present" for ongoing products: fixed, so item lists do not change with the calendar.
PRESENT = dt.date(2026, 6, 30)
#: Timestamp of every zip member (zips must not depend on the wall clock).
ZIP_TIME = (2024, 1, 1, 0, 0, 0)
EEA_CRS = "EPSG:3035"
PATTERNS = ("global_nc", "europe_tiles", "europe_tiles_nogrid", "global_tiles", "vector")
FREQUENCIES = ("hourly", "daily", "10daily", "monthly", "yearly", "3yearly", "6yearly", "static")
LAYOUTS = ("results_inner", "flat", "folder", "multi_inner", "nested3")
HOSTILE_VARIANTS = ("slip", "absolute", "symlink", "bomb", "many")
#: The member names the hostile variants add, so tests can check nothing was written there.
HOSTILE_NAMES = {
    "slip": "../../intake_clms_sandbox_slip.txt",
    "absolute": "/tmp/intake_clms_sandbox_absolute.txt",
    "symlink": "Results/intake_clms_sandbox_link.tif",
    "bomb": "Results/intake_clms_sandbox_bomb.tif",
    "many": "Results/many/",
}
_UUID_NS = uuid.UUID("6f1d2c8e-5a9b-4c3d-8e7f-0a1b2c3d4e5f")


# --------------------------------------------------------------------------- size classes


@dataclass(frozen=True)
class SizeClass:
    """How big generated files are: tiny for unit tests, small for demos, large for benchmarks.

    The grids never change with the class, only the extent that holds data (:data:`.rasters.EXTENTS`).
    """

    name: str
    cog_block: int  # COG block size (small enough that tiny COGs still get overviews)
    features: int  # features per vector product
    hours: tuple[int, ...] = (0, 6, 12, 18)  # time steps per day of hourly products


SIZE_CLASSES: dict[str, SizeClass] = {
    "tiny": SizeClass("tiny", 256, 12),
    "small": SizeClass("small", 256, 200),
    "large": SizeClass("large", 512, 5000),
}

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
          "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_size(spec: int | str) -> int:
    """Bytes from ``1073741824``, ``"1GiB"``, ``"500 MB"``, ``"2.5gb"``."""
    if isinstance(spec, int):
        if spec < 0:
            raise ValueError(f"negative size {spec}")
        return spec
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([A-Za-z]*)\s*", str(spec))
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"cannot read a byte size from {spec!r} (e.g. 1GiB, 500MB, 1048576)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


# --------------------------------------------------------------------------- public records


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset the sandbox knows (a catalog entry, or a CLMS-API dataset)."""

    key: str  # datasetIdentifier, old WEkEO ID, or CLMS-API short name (forest-type-2015)
    dataset_id: str  # WEkEO dataset ID (EO:JRC:DAT:CLMS or the old ID); "" for CLMS-API only
    dataset_identifier: str | None
    old_ids: tuple[str, ...]
    pattern: str  # "global_nc" | "europe_tiles" | "europe_tiles_nogrid" | "global_tiles" | "vector"
    bbox: tuple[float, float, float, float]  # lon/lat
    start: dt.date
    end: dt.date
    frequency: str  # hourly | daily | 10daily | monthly | yearly | 3yearly | 6yearly | static
    product_type: str | None
    # ---- added by the generator (all have defaults) ----
    old_product_types: tuple[str, ...] = ()  # the old WEkEO productType values (the table's "Old productType")
    entry: str = ""  # catalog entry name ("" for CLMS-API datasets)
    title: str = ""
    short_name: str = ""  # product short name in file names (NDVI300, TCD, FTY, ...)
    resolution: str | None = None  # as the catalog says ("300 m", "vector, MMU 0.25 ha")
    spatial_coverage: str | None = None
    migration_status: str | None = None
    is_vector: bool = False
    ongoing: bool = False
    crs: str = "EPSG:4326"  # CRS of the generated files
    version: str = ""  # product version in file names (V2.0.1, v010, ...)
    native_format: str = "nc"  # what items() yields by default: nc | tif | cog | geojson
    formats: tuple[str, ...] = ("nc",)  # every format items(format=...) can yield
    component: str = "bio-geophysical"  # CDSE component: bio-geophysical | landcover_landuse
    variable: str = ""  # main NetCDF variable
    tile_size: float = 0.0  # tile side in CRS units (m, or degrees for global_tiles); 0: untiled
    template: str = ""  # file stem with {date} and {tile} placeholders
    date_format: str = "%Y"  # strftime of {date}
    nominal: dt.date | None = None  # the reference date of a static product
    # ---- CLMS download API (clms_api_datasets) ----
    uid: str = ""  # 32 hex, stable from the key
    source: str = ""  # full_source of the download information: EEA | LEGACY | LANDCOVER | CDSE
    alias_of: str | None = None  # data served by another dataset (CDSE-source entries)
    crs_list: tuple[str, ...] = ()
    downloadable_files: tuple[Mapping[str, Any], ...] = field(default=(), compare=False, hash=False)
    download_information: tuple[Mapping[str, Any], ...] = field(default=(), compare=False, hash=False)

    @property
    def tiled(self) -> bool:
        return self.pattern in ("europe_tiles", "europe_tiles_nogrid", "global_tiles")


@dataclass(frozen=True)
class Item:
    """One downloadable product (a time step, or one tile of one date)."""

    id: str  # stable product id, unique across the store
    dataset: str  # DatasetSpec.key
    name: str  # file name as the real service names it, e.g. c_gls_NDVI300_202401010000_GLOBE_OLCI_V2.0.1.nc
    start: dt.datetime  # timezone-aware (UTC)
    end: dt.datetime  # timezone-aware (UTC), last second of the period
    bbox: tuple[float, float, float, float]  # lon/lat footprint
    format: str  # "nc" | "tif" | "cog" | "geojson" | "bin" (bulk)
    size_hint: int  # approximate bytes (what a catalogue would say); the file's size after materialize()
    # ---- added by the generator ----
    product_name: str = ""  # CDSE-style product name: the file stem plus _nc / _cog / _geojson
    uuid: str = ""  # stable UUID (a CDSE product Id)
    tile: str | None = None  # tile code (E48N27, part03, E000N60) for tiled datasets

    @property
    def stem(self) -> str:
        return self.name.rsplit(".", 1)[0]


# --------------------------------------------------------------------------- small helpers


def _hash_int(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "little")


def _stable_uuid(*parts: object) -> str:
    """``uuid.uuid5(_UUID_NS, "|".join(parts))``, computed without the uuid module's overhead."""
    b = bytearray(hashlib.sha1(_UUID_NS.bytes + "|".join(map(str, parts)).encode()).digest()[:16])
    b[6] = (b[6] & 0x0F) | 0x50
    b[8] = (b[8] & 0x3F) | 0x80
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _as_date(value: Any) -> dt.date | None:
    if value in (None, "", "present"):
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value)[:10])


def _as_dt(value: Any, *, upper: bool) -> dt.datetime | None:
    """A query bound as an aware UTC datetime; a bare date covers its whole day."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "present", "now", "..")):
        return None
    if isinstance(value, str):
        text = value.strip().replace("Z", "+00:00")
        value = dt.datetime.fromisoformat(text) if "T" in text or " " in text else dt.date.fromisoformat(text)
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, dt.date):
        base = dt.datetime(value.year, value.month, value.day, tzinfo=UTC)
        return base + dt.timedelta(days=1, microseconds=-1) if upper else base
    raise TypeError(f"not a date: {value!r}")


def _intersects(a: Sequence[float], b: Sequence[float]) -> bool:
    """Footprint intersection; a point or line query (zero width) may touch an edge."""
    if a[2] - a[0] <= 0 or a[3] - a[1] <= 0 or b[2] - b[0] <= 0 or b[3] - b[1] <= 0:
        return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


_FALLBACK_NC_LOCK = threading.Lock()


def _netcdf_lock() -> Any:
    """The lock xarray holds around netCDF4/HDF5 calls (HDF5 is not thread-safe); ours if xarray lacks it."""
    try:
        from xarray.backends.netCDF4_ import NETCDF4_PYTHON_LOCK

        return NETCDF4_PYTHON_LOCK
    except (ImportError, AttributeError):  # pragma: no cover - depends on the xarray version
        return _FALLBACK_NC_LOCK


def _year_start(year: int) -> dt.datetime:
    return dt.datetime(year, 1, 1, tzinfo=UTC)


def _add_months(day: dt.datetime, months: int) -> dt.datetime:
    y, m = divmod(day.month - 1 + months, 12)
    return day.replace(year=day.year + y, month=m + 1, day=1)


# --------------------------------------------------------------------------- time steps


def _step_end(freq: str, start: dt.datetime, spec_end: dt.date) -> dt.datetime:
    """Last second of the period that begins at ``start``."""
    if freq == "hourly":
        nxt = start + dt.timedelta(hours=1)
    elif freq == "daily":
        nxt = start + dt.timedelta(days=1)
    elif freq == "10daily":
        nxt = start.replace(day=start.day + 10) if start.day < 21 else _add_months(start, 1)
    elif freq == "monthly":
        nxt = _add_months(start, 1)
    elif freq in ("yearly", "3yearly", "6yearly"):
        nxt = _year_start(start.year + 1)
    else:  # static
        nxt = dt.datetime(spec_end.year, spec_end.month, spec_end.day, tzinfo=UTC) + dt.timedelta(days=1)
    return nxt - dt.timedelta(seconds=1)


def _period_start(freq: str, t: dt.datetime, first: dt.datetime) -> dt.datetime:
    """Start of the period of ``freq`` that contains ``t`` (multi-year periods count from ``first``)."""
    day = t.replace(hour=0, minute=0, second=0, microsecond=0)
    if freq in ("hourly", "daily"):
        return day
    if freq == "10daily":
        return day.replace(day=1 if t.day < 11 else (11 if t.day < 21 else 21))
    if freq == "monthly":
        return day.replace(day=1)
    k = {"3yearly": 3, "6yearly": 6}.get(freq, 1)
    return _year_start(first.year + (t.year - first.year) // k * k)


def _next_period(freq: str, cur: dt.datetime) -> dt.datetime:
    if freq in ("hourly", "daily"):
        return cur + dt.timedelta(days=1)
    if freq == "10daily":
        return cur.replace(day=cur.day + 10) if cur.day < 21 else _add_months(cur, 1)
    if freq == "monthly":
        return _add_months(cur, 1)
    return _year_start(cur.year + {"3yearly": 3, "6yearly": 6}.get(freq, 1))


def _steps(spec: DatasetSpec, hours: Sequence[int], lo: dt.datetime | None = None,
           hi: dt.datetime | None = None) -> Iterator[tuple[dt.datetime, dt.datetime]]:
    """(start, end) of every time step of ``spec`` overlapping [lo, hi], in order.

    Starts from the period containing ``lo``, so a narrow query on a long daily
    or hourly series costs little.
    """
    first = dt.datetime(spec.start.year, spec.start.month, spec.start.day, tzinfo=UTC)
    last = dt.datetime(spec.end.year, spec.end.month, spec.end.day, tzinfo=UTC) + dt.timedelta(days=1, microseconds=-1)
    freq = spec.frequency
    if freq == "static":
        end = last.replace(microsecond=0)
        if (hi is None or first <= hi) and (lo is None or end >= lo):
            yield first, end
        return
    anchor = first if lo is None or lo < first else min(lo, last)
    cur = _period_start(freq, anchor, first)
    while cur <= last and (hi is None or cur <= hi):
        for s in ([cur + dt.timedelta(hours=h) for h in hours] if freq == "hourly" else [cur]):
            e = _step_end(freq, s, spec.end)
            if e < first or s > last or (lo is not None and e < lo) or (hi is not None and s > hi):
                continue
            yield s, e
        cur = _next_period(freq, cur)


# --------------------------------------------------------------------------- tilings

@dataclass(frozen=True)
class Tile:
    """One tile of a tiling: its code, bounds in the tiling's CRS, and lon/lat footprint."""

    code: str
    bounds: tuple[float, float, float, float]  # left, bottom, right, top (CRS units)
    bbox: tuple[float, float, float, float]  # lon/lat


@lru_cache(maxsize=16)
def _tiling(kind: str, size: float) -> tuple[Tile, ...]:
    """Every tile of one tiling: ``grid``/``nogrid`` (EPSG:3035 metres) or ``lonlat`` (degrees)."""
    if kind == "lonlat":
        step = int(size)
        tiles = []
        for top in range(80, -60, -step):
            for left in range(-180, 180, step):
                code = f"{'E' if left >= 0 else 'W'}{abs(left):03d}{'N' if top >= 0 else 'S'}{abs(top):02d}"
                b = (float(left), float(top - step), float(left + step), float(top))
                tiles.append(Tile(code, b, b))
        return tuple(tiles)
    from pyproj import Transformer

    to_ll = Transformer.from_crs(EEA_CRS, "EPSG:4326", always_xy=True)
    xs = np.arange(0.0, 7_600_000.0, size)
    ys = np.arange(0.0, 5_600_000.0, size)[::-1]  # top row first
    x0, y0 = (a.ravel() for a in np.meshgrid(xs, ys))
    frac = np.linspace(0.05, 0.95, 5)
    fx, fy = (a.ravel() for a in np.meshgrid(frac, frac))
    px = (x0[:, None] + fx[None, :] * size).ravel()
    py = (y0[:, None] + fy[None, :] * size).ravel()
    lon, lat = to_ll.transform(px, py)
    land = _on_land(np.asarray(lon), np.asarray(lat)).reshape(len(x0), -1).any(axis=1)
    edge = np.linspace(0.0, 1.0, 11)
    tiles = []
    index = 0
    for x, y in zip(x0[land], y0[land]):
        bx = np.concatenate([x + edge * size, np.full(11, x + size), x + edge[::-1] * size, np.full(11, x)])
        by = np.concatenate([np.full(11, y), y + edge * size, np.full(11, y + size), y + edge[::-1] * size])
        blon, blat = to_ll.transform(bx, by)
        bbox = (round(float(np.min(blon)), 6), round(float(np.min(blat)), 6),
                round(float(np.max(blon)), 6), round(float(np.max(blat)), 6))
        index += 1
        if kind == "grid":
            code = f"E{int(x // 100_000):02d}N{int(y // 100_000):02d}"
        else:
            code = f"part{index:02d}"
        tiles.append(Tile(code, (float(x), float(y), float(x + size), float(y + size)), bbox))
    return tuple(tiles)


# --------------------------------------------------------------------------- value patterns


_Var = _rasters.Var


_NC_VARS: dict[str, _Var] = {
    "ndvi": _Var("NDVI", "u1", 0.004, -0.08, 255, 0, 250, "-", "Normalized Difference Vegetation Index"),
    "lai": _Var("LAI", "u1", 1 / 30, 0.0, 255, 0, 210, "m2/m2", "Leaf Area Index"),
    "fapar": _Var("FAPAR", "u1", 0.004, 0.0, 255, 0, 235, "-",
                  "Fraction of Absorbed Photosynthetically Active Radiation"),
    "fcover": _Var("FCOVER", "u1", 0.004, 0.0, 255, 0, 250, "-", "Fraction of green Vegetation Cover"),
    "dmp": _Var("DMP", "i2", 0.01, 0.0, -1, 0, 32767, "kg / ha / day", "Dry Matter Productivity"),
    "gdmp": _Var("GDMP", "i2", 0.01, 0.0, -1, 0, 32767, "kg / ha / day", "Gross Dry Matter Productivity"),
    "npp": _Var("NPP", "i2", 0.01, 0.0, -1, 0, 32767, "gC m-2 d-1", "Net Primary Production"),
    "gpp": _Var("GPP", "i2", 0.01, 0.0, -1, 0, 32767, "gC m-2 d-1", "Gross Primary Production"),
    "lst": _Var("LST", "i2", 0.01, 273.15, -8000, -7000, 7000, "K", "Land Surface Temperature"),
    "lst-tci": _Var("TCI", "u1", 1.0, 0.0, 255, 0, 100, "%", "Thermal Condition Index"),
    "lst-daily-cycle": _Var("MEDIAN", "i2", 0.01, 273.15, -8000, -7000, 7000, "K", "LST daily cycle median"),
    "swi": _Var("SWI_010", "u1", 0.5, 0.0, 255, 0, 200, "%", "Soil Water Index with T=10"),
    "ssm": _Var("ssm", "u1", 0.5, 0.0, 255, 0, 200, "%", "Surface Soil Moisture"),
    "ba": _Var("BA_DEKAD", "u1", 1.0, 0.0, 255, 0, 1, "-", "Burnt Area", (0, 0, 0, 1)),
    "wb": _Var("WB", "u1", 1.0, 0.0, 255, 0, 70, "-", "Water Bodies", (0, 0, 70)),
    "lwq": _Var("turbidity_mean", "u2", 0.01, 0.0, 65535, 0, 65000, "FNU", "Turbidity"),
    "lswt": _Var("LSWT", "i2", 0.01, 273.15, -32768, -3000, 4000, "K", "Lake Surface Water Temperature"),
    "sce": _Var("SCE", "u1", 1.0, 0.0, 255, 0, 100, "%", "Snow Cover Extent"),
    "swe": _Var("SWE", "i2", 0.1, 0.0, -32768, 0, 30000, "mm", "Snow Water Equivalent"),
    "lie": _Var("LIE", "u1", 1.0, 0.0, 255, 1, 30, "-", "Lake Ice Extent", (1, 10, 30)),
    "toc": _Var("TOC_REFL", "i2", 0.0005, 0.0, -32768, 0, 20000, "-", "Top Of Canopy reflectance"),
    "tocr": _Var("TOCR", "i2", 0.0005, 0.0, -32768, 0, 20000, "-", "Top Of Canopy reflectance"),
    "hf": _Var("FRP", "u2", 0.1, 0.0, 65535, 0, 60000, "MW", "Fire Radiative Power"),
    "lc": _Var("discrete_classification", "u1", 1.0, 0.0, 255, 20, 200, "-", "Land Cover classification",
               (20, 30, 40, 50, 60, 80, 90, 111, 112, 114, 116, 126, 200)),
    "lcm": _Var("LCM", "u1", 1.0, 0.0, 255, 10, 100, "-", "Land Cover Map", (10, 20, 30, 40, 50, 60, 80, 90, 95, 100)),
    "tcd": _Var("TCD", "u1", 1.0, 0.0, 255, 0, 100, "%", "Tree Cover Density"),
    "lsp": _Var("SOSD", "u2", 1.0, 0.0, 65535, 1, 366, "day", "Start Of Season Date"),
    "albh": _Var("AL_BH_BB", "u2", 0.0001, 0.0, 65535, 0, 10000, "-", "Bi-hemispherical albedo, broadband"),
    "aldh": _Var("AL_DH_BB", "u2", 0.0001, 0.0, 65535, 0, 10000, "-", "Directional-hemispherical albedo, broadband"),
}
_NC_DEFAULT = _Var("VALUE", "u1", 0.004, 0.0, 255, 0, 250, "-", "Biophysical variable")


def _nc_var(family: str) -> _Var:
    family = family.lower()
    for key in (family, family.split("-")[0]):
        if key in _NC_VARS:
            return _NC_VARS[key]
    return _NC_DEFAULT


def _tile_var(family: str) -> _Var:
    """uint8 encoding of a pan-European layer, guessed from its name (nodata 255)."""
    f = family.lower()

    def var(vmin: int, vmax: int, units: str, classes: tuple[int, ...] = ()) -> _Var:
        return _Var("band1", "u1", 1.0, 0.0, 255, vmin, vmax, units, family, classes)

    if "confidence" in f:
        return var(0, 100, "%")
    if f in ("fty", "forest-type") or "forest-type" in f:
        return var(0, 2, "class", (0, 0, 1, 2))
    if "clc" in f or "corine" in f or "lulucf" in f:
        return var(1, 44, "class", tuple(range(1, 45)))
    if f == "lc" or "land-cover" in f:
        return var(20, 200, "class", (20, 30, 40, 50, 60, 80, 90, 111, 112, 114, 116, 126, 200))
    if any(w in f for w in ("type", "leaf", "classification", "seasons", "phenology-s")):
        return var(1, 3, "class", (1, 2, 3))
    if any(w in f for w in ("presence", "change", "indicator", "waw", "wet", "water", "psa", "ice", "slf", "cloud")):
        return var(0, 2, "class", (0, 0, 1, 2))
    if "grassland" in f and "mowing" not in f:
        return var(0, 1, "class", (0, 0, 1))
    if any(w in f for w in ("duration", "dates", "emergence", "harvest", "vpp", "hrvpp", "-st")):
        return var(1, 250, "day")
    if "events" in f:
        return var(0, 6, "count")
    return var(0, 100, "%")


_Field = _rasters.Field
_on_land = _rasters.on_land
_years = _rasters._years


# --------------------------------------------------------------------------- reading the catalog


def _default_catalog() -> Path | None:
    try:
        from importlib.resources import files

        res = files("intake_clms.catalogs") / "clms.yaml"
        if res.is_file():
            return Path(str(res))
    except (ModuleNotFoundError, TypeError, FileNotFoundError):
        pass
    local = Path(__file__).resolve().parents[2] / "catalogs" / "clms.yaml"
    return local if local.is_file() else None


@lru_cache(maxsize=8)
def _catalog_entries(path: str, mtime: float) -> tuple[tuple[str, dict[str, Any]], ...]:
    """(entry name, metadata) of every source of a catalog YAML, or of a transition table."""
    p = Path(path)
    if p.suffix.lower() in (".xlsx", ".xls"):
        from intake_clms.catalog.products import coverage_bbox
        from intake_clms.catalog.table import read_transition_table

        out = []
        for prod in read_transition_table(p):
            tc = prod.time_coverage
            out.append((prod.name, {
                "identifier": prod.key, "dataset_id": prod.dataset_id,
                "dataset_identifier": prod.dataset_identifier, "old_ids": list(prod.old_ids),
                "old_product_types": list(prod.old_product_types),
                "product_type": prod.product_type, "spatial_coverage": prod.spatial_coverage,
                "coverage_bbox": coverage_bbox(prod.spatial_coverage) if prod.spatial_coverage else None,
                "resolution": prod.resolution, "frequency": prod.frequency,
                "time_start": tc.start.isoformat() if tc.start else None,
                "time_end": tc.end.isoformat() if tc.end else None, "time_ongoing": tc.ongoing,
                "migration_status": prod.migration_status, "is_vector": prod.is_vector,
            }))
        return tuple(out)
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with open(p, encoding="utf-8") as fh:
        doc = yaml.load(fh, Loader=loader) or {}
    out = []
    for name, src in (doc.get("sources") or {}).items():
        if src.get("driver", "clms") not in ("clms", "clms_vector"):  # e.g. the nested clms_api catalog
            continue
        meta = dict(src.get("metadata") or {})
        args = src.get("args") or {}
        meta.setdefault("dataset_id", args.get("dataset_id"))
        meta.setdefault("dataset_identifier", args.get("dataset_identifier"))
        out.append((str(name), meta))
    return tuple(out)


_FREQ_WORDS = {
    "hourly": "hourly", "daily": "daily", "10-daily": "10daily", "10daily": "10daily", "dekadal": "10daily",
    "monthly": "monthly", "yearly": "yearly", "annual": "yearly", "3-yearly": "3yearly", "3yearly": "3yearly",
    "6-yearly": "6yearly", "6yearly": "6yearly", "static": "static",
}
_AREA_TOKENS = {"global": "GLOBE", "europe": "EURO", "northern hemisphere": "NHEMI", "northernhemisphere": "NHEMI",
                "pan-tropical": "PANTROPICAL", "pantropical": "PANTROPICAL", "baltic": "BALTIC"}
_NEW_ID = re.compile(
    r"^(?:clms_(?P<prog>[a-z]+)_)?(?P<family>[a-z0-9.-]+?)"
    r"(?:_(?P<area>global|europe|northernhemisphere|pantropical|baltic)"
    r"(?:_utm)?_(?P<res>[^_]+)_(?P<freq>[^_]+)_v(?P<ver>\d+))?$"
)
_OLD_GLOBAL = re.compile(
    r"^EO:CLMS:DAT:CLMS_GLOBAL_(?P<family>[A-Z0-9]+)_(?P<res>[0-9.]+[KM]+)_V(?P<ver>\d+)_(?P<freq>[A-Z0-9-]+)_"
)
from intake_clms.catalog.products import VECTOR_OLD_IDS as _VECTOR_OLD  # noqa: E402  (one list, shared with the catalog)


def _meters(text: str | None) -> int | None:
    m = re.search(r"([0-9.]+)\s*(km|m)\b", (text or "").lower())
    if not m:
        return None
    return int(round(float(m.group(1)) * (1000 if m.group(2) == "km" else 1)))


def _freq(text: str | None) -> str | None:
    if not text:
        return None
    return _FREQ_WORDS.get(str(text).strip().lower().replace(" ", ""))


def _acronym(family: str) -> str:
    words = [w for w in re.split(r"[-_.]+", family) if w and w not in ("confidence", "layer")]
    code = words[0][:3].upper() if len(words) == 1 else "".join(w[0] for w in words).upper()
    return code + ("CL" if "confidence" in family else "")


def _sensor(family: str, meters: int | None, version: int, area: str) -> str:
    f = family.lower()
    if f.startswith("lst"):
        return "GEO"
    if f.startswith(("swi", "ssm")):
        return "S1CSAR" if area == "EURO" else "ASCAT"
    if f.startswith(("sce", "swe", "lie")):
        return "MULTI"
    if f.startswith(("lwq", "lswt")):
        return "OLCI" if (meters or 0) < 1000 else "SLSTR"
    if meters is not None and meters <= 10:
        return "S2"
    if meters is not None and meters < 1000:
        return "OLCI" if version >= 2 else "PROBAV"
    return "PROBAV" if version >= 2 else "VGT"


def _res_suffix(meters: int | None, area: str) -> str:
    if meters is None:
        return ""
    if meters < 1000:
        return str(meters)
    if area == "EURO" and meters == 1000:
        return "1km"
    return ""


def _spec_from_entry(name: str, meta: Mapping[str, Any], present: dt.date) -> DatasetSpec:
    """A generator spec for one catalog entry; missing facts are filled from the identifier."""
    from intake_clms.catalog.products import COVERAGE_BBOX

    key = str(meta.get("identifier") or meta.get("dataset_identifier") or meta.get("dataset_id") or name)
    ident = meta.get("dataset_identifier") or None
    dataset_id = str(meta.get("dataset_id") or (key if key.startswith("EO:") else "EO:JRC:DAT:CLMS"))
    old_ids = tuple(str(x) for x in (meta.get("old_ids") or ()))
    coverage = meta.get("spatial_coverage")
    resolution = meta.get("resolution")
    freq = _freq(meta.get("frequency"))
    start, end = _as_date(meta.get("time_start")), _as_date(meta.get("time_end"))
    ongoing = bool(meta.get("time_ongoing"))
    is_vector = bool(meta.get("is_vector"))
    bbox = meta.get("coverage_bbox")

    family, prog, area_word, version, res_m = key, "", None, 1, _meters(resolution)
    m_new = _NEW_ID.match(key) if not key.startswith("EO:") else None
    m_old = _OLD_GLOBAL.match(key)
    kind = "eea"
    if m_new:
        family = m_new.group("family")
        prog = m_new.group("prog") or ""
        area_word = m_new.group("area")
        version = int(m_new.group("ver") or 1)
        freq = freq or _freq(m_new.group("freq"))
        res_m = res_m or _meters((m_new.group("res") or "").replace("v", ""))
        kind = "eea" if prog else "cgls"
        if "vector" in (m_new.group("res") or ""):
            is_vector = True
    elif m_old:
        family = m_old.group("family").lower()
        version = int(m_old.group("ver"))
        res_m = res_m or _meters(m_old.group("res").lower())
        freq = freq or _freq(m_old.group("freq").split("-")[0].lower())
        area_word = "global"
        kind = "cgls"
    else:  # other old IDs: EO:EEA:DAT:HRL:IMP, EO:CRYO:DAT:HRSI:PSA, EO:EEA:DAT:CORINE, ...
        family = key.split(":DAT:", 1)[-1].replace(":", "-").replace("_", "-").lower()
        if any(v.lower() in key.lower() for v in _VECTOR_OLD):
            is_vector = True
    lower = key.lower()
    static = "static" in lower
    fam = family.lower()

    # Defaults where the table is silent.
    if kind == "cgls":
        default_span = (dt.date(1999, 1, 1), dt.date(2020, 12, 31), "10daily")
    elif "corine" in lower:
        default_span = (dt.date(2000, 1, 1), dt.date(2018, 12, 31), "6yearly")
    elif "clc-plus" in lower or "clcplus" in lower:
        default_span = (dt.date(2018, 1, 1), dt.date(2021, 12, 31), "3yearly")
    elif "hrvpp" in lower:
        default_span = (dt.date(2017, 1, 1), present, "10daily" if fam.endswith("-st") else
                        ("daily" if fam.endswith("-vi") else "yearly"))
    elif "cryo" in lower or "wsi" in lower:
        default_span = (dt.date(2016, 1, 1), present, "yearly" if ("psa" in lower or "duration" in lower) else "daily")
    elif "hrl" in lower:
        default_span = (dt.date(2012, 1, 1), dt.date(2018, 12, 31), "3yearly")
    elif is_vector:
        default_span = (dt.date(2006, 1, 1), dt.date(2018, 12, 31), "6yearly")
    else:
        default_span = (dt.date(2018, 1, 1), dt.date(2021, 12, 31), "yearly")
    if static:
        freq = "static"
    freq = freq or default_span[2]
    if start is None:
        start = default_span[0]
    if end is None:
        end = present if ongoing else (default_span[1] if meta.get("time_start") is None else
                                       dt.date(start.year, 12, 31))
    if end < start:
        end = start
    if not coverage:
        words = {"global": "Global", "europe": "Europe", "northernhemisphere": "Northern Hemisphere",
                 "pantropical": "Pan-tropical", "baltic": "Baltic"}
        coverage = words.get(area_word or "", "Global" if kind == "cgls" else "Europe")
    cov_key = str(coverage).strip().lower().replace("pantropical", "pan-tropical")
    if not bbox:
        bbox = COVERAGE_BBOX.get(cov_key, COVERAGE_BBOX["europe" if kind == "eea" else "global"])
    bbox = tuple(float(v) for v in bbox)
    area = _AREA_TOKENS.get(cov_key, "GLOBE")

    # Pattern and file naming.
    if is_vector:
        pattern = "vector"
    elif kind == "cgls" or cov_key in ("global", "northern hemisphere", "pan-tropical", "baltic"):
        pattern = "global_nc"
    elif "clcplus" in lower or "clc-plus" in lower or "corine" in lower:
        pattern = "europe_tiles_nogrid"
    else:
        pattern = "europe_tiles"
    migrated = ident is not None
    if pattern == "global_nc":
        short = family.upper() + _res_suffix(res_m, area)
        ver = f"V{version}.0.1"
        template = f"c_gls_{short}_{{date}}_{area}_{_sensor(family, res_m, version, area)}_{ver}"
        date_format = "%Y%m%d%H%M"
        native, formats, tile_size = "nc", ("nc", "cog"), 0.0
        crs = "EPSG:4326"
    elif pattern == "vector":
        short = _acronym(family)
        ver = f"v{version:02d}"
        mmu = re.search(r"MMU\s*([0-9.]+)\s*ha", str(resolution or ""))
        tag = f"V{mmu.group(1).replace('.', '')}ha" if mmu else "vector"
        template = f"CLMS_{short}_{{date}}_{tag}_{'eu' if area == 'EURO' else area.lower()}_{ver}"
        date_format = "%Y" if freq in ("yearly", "3yearly", "6yearly", "static") else "%Y%m%d"
        native, formats, tile_size, crs = "geojson", ("geojson",), 0.0, "EPSG:4326"
    else:
        short = _acronym(family) if kind == "eea" and m_new else family.split("-")[-1].upper()
        if "corine" in lower:
            short = "CLC"
        elif "clc-plus" in lower or "clcplus" in lower:
            short = "CLCPLUS"
        meters = res_m or (100 if "corine" in lower else (10 if ("hrvpp" in lower or "clc" in lower) else 20))
        ver = f"v{version:02d}0"
        date_format = "%Y" if freq in ("yearly", "3yearly", "6yearly", "static") else "%Y%m%d"
        crs = EEA_CRS
        if pattern == "europe_tiles":
            template = f"CLMS_{short}_{{date}}_{meters:03d}m_{{tile}}_03035_{ver}"
            tile_size = 100_000.0
        else:
            template = f"CLMS_{short}_RASTER_{{date}}_{meters:03d}m_eu_03035_{ver}_{{tile}}"
            tile_size = 1_000_000.0
        native = "cog" if migrated else "tif"
        formats = ("tif", "cog")
    variable = _nc_var(family).name if pattern == "global_nc" else \
        (re.sub(r"[^A-Za-z0-9_]", "_", short).upper() if pattern != "vector" else "")  # == rasters.variable_name
    biophysical = pattern == "global_nc" and not family.startswith(("lc", "tcd"))
    component = "bio-geophysical" if biophysical else "landcover_landuse"
    return DatasetSpec(
        key=key, dataset_id=dataset_id, dataset_identifier=ident, old_ids=old_ids, pattern=pattern, bbox=bbox,
        start=start, end=end, frequency=freq, product_type=meta.get("product_type"), entry=name,
        old_product_types=tuple(str(x) for x in (meta.get("old_product_types") or ())),
        title=str(meta.get("title") or key), short_name=short, resolution=resolution, spatial_coverage=coverage,
        migration_status=meta.get("migration_status"), is_vector=is_vector, ongoing=ongoing, crs=crs, version=ver,
        native_format=native, formats=formats, component=component, variable=variable, tile_size=tile_size,
        template=template, date_format=date_format, uid=hashlib.md5(f"clms-sandbox-uid:{key}".encode()).hexdigest(),
    )


def _family_of(spec: DatasetSpec) -> str:
    """The product family a spec's values are drawn for (ndvi, tree-cover-density, fty, ...)."""
    if not spec.dataset_id:  # CLMS-API dataset: its short name says it (SWI10 -> swi, FTY -> fty)
        return re.sub(r"[0-9]+$", "", spec.short_name).lower() or spec.key
    m = _NEW_ID.match(spec.key) if not spec.key.startswith("EO:") else None
    if m:
        return m.group("family")
    m = _OLD_GLOBAL.match(spec.key)
    if m:
        return m.group("family").lower()
    return spec.short_name.lower() if spec.short_name else spec.key.lower()


# --------------------------------------------------------------------------- CLMS-API-only datasets

_EUROPE_API_BBOX = (-31.2684, 27.6375, 44.8212, 71.1855)


def _vector_extent(spec: "DatasetSpec", points: bool) -> tuple[float, float, float, float]:
    """Where a vector product's features lie: its coverage; the old pan-European IDs (EU-Hydro, Natura 2000,
    riparian and coastal zones, river and lake ice), whose table rows give no coverage, over Europe."""
    if tuple(spec.bbox) != (-180.0, -90.0, 180.0, 90.0):
        return tuple(spec.bbox)  # type: ignore[return-value]
    return (-170.0, -55.0, 170.0, 75.0) if points else _EUROPE_API_BBOX


def _api_specs(present: dt.date) -> list[DatasetSpec]:
    """A few datasets of the CLMS download API that are not catalog entries."""

    def uid(key: str) -> str:
        return hashlib.md5(f"clms-sandbox-uid:{key}".encode()).hexdigest()

    def info(key: str, source: str, fmt: str, path: str, collection: str, name: str = "RASTER") -> dict[str, Any]:
        return {"@id": _stable_uuid(key, "dl-info", source), "full_source": source, "name": name,
                "full_format": fmt, "full_path": path, "collection": collection}

    def dfile(key: str, stem: str, *, area: str, size: str, year: int, version: str, path: bool = True,
              resolution: str = "100 m", fmt: str = "Geotiff", title: str = "") -> dict[str, Any]:
        return {"@id": _stable_uuid(key, "file", stem), "file": stem, "format": fmt,
                "path": f"H:\\Data\\{key}\\{stem}.zip" if path else "", "source": "EEA" if path else "",
                "area": area, "resolution": resolution, "size": size, "title": title or stem, "type": "Raster",
                "version": version, "year": str(year)}

    specs = []
    key = "forest-type-2015"
    specs.append(DatasetSpec(
        key=key, dataset_id="", dataset_identifier=None, old_ids=(), pattern="europe_tiles", bbox=_EUROPE_API_BBOX,
        start=dt.date(2014, 1, 1), end=dt.date(2016, 12, 31), frequency="static", product_type="forest_type",
        title="Forest Type 2015 (raster 100 m), Europe, 3-yearly, Oct. 2020", short_name="FTY", resolution="100 m",
        spatial_coverage="Europe", crs=EEA_CRS, version="d02", native_format="tif", formats=("tif", "cog"),
        component="landcover_landuse", variable="FTY", tile_size=1_000_000.0,
        template="FTY_2015_100m_eu_03035_d02_{tile}", date_format="%Y", nominal=dt.date(2015, 1, 1), uid=uid(key),
        source="EEA", crs_list=(EEA_CRS,),
        downloadable_files=(
            dfile(key, "FTY_2015_100m_eu_03035_d02_Full", area="Full", size="1.12 GB", year=2015, version="d02"),
            dfile(key, "FTY_2015_100m_eu_03035_d02_E30N20", area="E30N20", size="58.3 MB", year=2015, version="d02"),
            # Listed but not downloadable: the API refuses a FileID without path and source.
            dfile(key, "FTY_2015_020m_eu_03035_d04_Full", area="Full", size="", year=2015, version="d04",
                  path=False, resolution="20 m"),
        ),
        download_information=(info(key, "EEA", "Geotiff", "/data/clms/forest-type-2015", "Forest Type 2015"),),
    ))
    key = "corine-land-cover-2018"
    specs.append(DatasetSpec(
        key=key, dataset_id="", dataset_identifier=None, old_ids=(), pattern="europe_tiles_nogrid",
        bbox=_EUROPE_API_BBOX, start=dt.date(2017, 1, 1), end=dt.date(2018, 12, 31), frequency="static",
        product_type="corine_land_cover", title="CORINE Land Cover 2018 (raster 100 m), Europe, 6-yearly",
        short_name="CLC", resolution="100 m", spatial_coverage="Europe", crs=EEA_CRS, version="V2020_20u1",
        native_format="tif", formats=("tif", "cog"), component="landcover_landuse", variable="CLC",
        tile_size=1_000_000.0, template="U2018_CLC2018_V2020_20u1_{tile}", date_format="%Y",
        nominal=dt.date(2018, 1, 1), uid=uid(key), source="EEA", crs_list=(EEA_CRS,),
        downloadable_files=(dfile(key, "U2018_CLC2018_V2020_20u1", area="Full", size="239 MB", year=2018,
                                  version="V2020_20u1"),),
        download_information=(info(key, "EEA", "Geotiff", "/data/clms/corine-land-cover-2018", "CLC 2018"),),
    ))
    key = "soil-water-index-12-5km-10-daily-v3"
    specs.append(DatasetSpec(
        key=key, dataset_id="", dataset_identifier=None, old_ids=(), pattern="global_nc",
        bbox=(-180.0, -90.0, 180.0, 90.0), start=dt.date(2007, 1, 1), end=dt.date(2020, 12, 31),
        frequency="10daily", product_type="soil_water_index",
        title="Soil Water Index 2007-present (raster 12.5 km), global, 10-daily - version 3", short_name="SWI10",
        resolution="12.5 km", spatial_coverage="Global", crs="EPSG:4326", version="V3.1.1", native_format="nc",
        formats=("nc", "cog"), component="bio-geophysical", variable="SWI_010",
        template="c_gls_SWI10_{date}_GLOBE_ASCAT_V3.1.1", date_format="%Y%m%d%H%M", uid=uid(key), source="LEGACY",
        crs_list=("EPSG:4326",),
        download_information=(info(key, "LEGACY", "Netcdf", "SWI10/V3", "soil water index 10-daily"),),
    ))
    key = "global-dynamic-land-cover"
    specs.append(DatasetSpec(
        key=key, dataset_id="", dataset_identifier=None, old_ids=(), pattern="global_tiles",
        bbox=(-180.0, -60.0, 180.0, 80.0), start=dt.date(2015, 1, 1), end=dt.date(2019, 12, 31), frequency="yearly",
        product_type="dynamic_land_cover", title="Global Dynamic Land Cover 2015-2019 (raster 100 m), global, yearly",
        short_name="LC100", resolution="100 m", spatial_coverage="Global", crs="EPSG:4326", version="v3.0.1",
        native_format="tif", formats=("tif", "cog"), component="landcover_landuse", variable="LC100", tile_size=20.0,
        template="{tile}_PROBAV_LC100_global_v3.0.1_{date}-conso_Discrete-Classification-map_EPSG-4326",
        date_format="%Y", uid=uid(key), source="LANDCOVER", crs_list=("EPSG:4326",),
        download_information=(info(key, "LANDCOVER", "Geotiff", "LC100/v3.0.1", "Discrete-Classification-map"),),
    ))
    key = "normalised-difference-vegetation-index-300m-10-daily-v2"
    specs.append(DatasetSpec(
        key=key, dataset_id="", dataset_identifier="ndvi_global_300m_10daily_v2", old_ids=(), pattern="global_nc",
        bbox=(-180.0, -90.0, 180.0, 90.0), start=dt.date(2020, 7, 1), end=present, frequency="10daily",
        product_type="vegetation_indices", title="Normalised Difference Vegetation Index 2020-present (raster 300 m), "
        "global, 10-daily - version 2", short_name="NDVI300", resolution="300 m", spatial_coverage="Global",
        ongoing=True, version="V2.0.1", native_format="nc", formats=("nc", "cog"), variable="NDVI",
        template="", uid=uid(key), source="CDSE", alias_of="ndvi_global_300m_10daily_v2", crs_list=("EPSG:4326",),
        download_information=(info(key, "CDSE", "Netcdf", "", "ndvi_global_300m_10daily_v2"),),
    ))
    return specs


# --------------------------------------------------------------------------- the store


class ProductStore:
    """Every dataset the sandbox serves, its items, and the files behind them (generated on first use)."""

    def __init__(self, data_dir: Path | str, seed: int = 0, size: str = "tiny", catalog: Path | str | None = None,
                 present: dt.date = PRESENT, bomb_bytes: int | str = "1GiB", many_entries: int = 50_000,
                 cache_dir: Path | str | None = None):
        if size not in SIZE_CLASSES:
            raise ValueError(f"unknown size class {size!r}; expected one of {sorted(SIZE_CLASSES)}")
        self.data_dir = Path(data_dir)
        self.seed = int(seed)
        self.size = size
        self.size_class = SIZE_CLASSES[size]
        self.present = present
        self.bomb_bytes = parse_size(bomb_bytes)
        self.many_entries = int(many_entries)
        self.root = self.data_dir / f"seed{self.seed}-{size}"
        # global COGs are slow to make: kept where several stores (tests) can share them
        shared = cache_dir if cache_dir is not None else os.environ.get("INTAKE_CLMS_SANDBOX_CACHE") or None
        self.cog_root = (Path(shared) if shared else self.data_dir) / f"seed{self.seed}-{size}-{_cog.VERSION}"
        path = Path(catalog) if catalog is not None else _default_catalog()
        if path is None:  # no catalog generated yet: read the bundled table instead
            path = Path(__file__).resolve().parents[2] / "catalogs" / "clms_transition_table.xlsx"
        self.catalog_path = path
        entries = _catalog_entries(str(path), path.stat().st_mtime)
        specs = [_spec_from_entry(name, meta, present) for name, meta in entries]
        self._catalog_specs = _disambiguate(specs)
        self._api_specs = _api_specs(present)
        self._by_key: dict[str, DatasetSpec] = {}
        for spec in self._catalog_specs + self._api_specs:
            self._by_key.setdefault(spec.key, spec)
        self._aliases: dict[str, DatasetSpec] = {}
        for spec in self._catalog_specs + self._api_specs:
            for alias in (spec.entry, spec.dataset_identifier, spec.uid):
                if alias:
                    self._aliases.setdefault(alias, spec)
        for spec in self._catalog_specs:
            for old in spec.old_ids:
                self._aliases.setdefault(old, spec)
        self._parsers = [(spec, _template_regex(spec)) for spec in self._catalog_specs + self._api_specs
                         if spec.template]
        self._tiles_cache: dict[str, tuple[Tile, ...]] = {}
        self._by_uuid: dict[str, str] = {}  # Item.uuid -> Item.id of every item built so far
        self._hints: dict[tuple[str, str, bool], int] = {}

    # ---------------------------------------------------------------- datasets

    def datasets(self) -> list[DatasetSpec]:
        """Every catalog entry's spec (not the CLMS-API-only datasets)."""
        return list(self._catalog_specs)

    def clms_api_datasets(self) -> list[DatasetSpec]:
        """Datasets of the CLMS download API: the extra ones with UID, download information and files."""
        return list(self._api_specs)

    def dataset(self, key: str) -> DatasetSpec:
        """A spec by key, catalog entry name, datasetIdentifier, CLMS-API UID, or old WEkEO ID."""
        spec = self._by_key.get(key) or self._aliases.get(key)
        if spec is None:
            raise KeyError(f"unknown dataset {key!r}")
        return spec

    def find(self, dataset_id: str, dataset_identifier: str | None = None) -> list[DatasetSpec]:
        """The specs a WEkEO query (dataset ID, optional datasetIdentifier) designates."""
        if dataset_identifier:
            return [s for s in self._catalog_specs if dataset_identifier in (s.dataset_identifier, s.key)]
        return [s for s in self._catalog_specs if s.key == dataset_id or dataset_id in s.old_ids]

    def formats(self, key: str) -> tuple[str, ...]:
        return self._data_spec(self.dataset(key)).formats

    def _data_spec(self, spec: DatasetSpec) -> DatasetSpec:
        """The spec whose files stand behind ``spec`` (CDSE-source API entries point at a catalog entry)."""
        if spec.alias_of:
            return self.dataset(spec.alias_of)
        return spec

    def spec_tiles(self, key: str) -> tuple[Tile, ...]:
        """Every tile of a tiled dataset (empty for untiled ones)."""
        spec = self._data_spec(self.dataset(key))
        if not spec.tiled:
            return ()
        cached = self._tiles_cache.get(spec.key)
        if cached is None:
            kind = {"europe_tiles": "grid", "europe_tiles_nogrid": "nogrid", "global_tiles": "lonlat"}[spec.pattern]
            cached = tuple(t for t in _tiling(kind, spec.tile_size) if _intersects(t.bbox, spec.bbox))
            self._tiles_cache[spec.key] = cached
        return cached

    # ---------------------------------------------------------------- items

    def iter_items(self, key: str, bbox: Sequence[float] | None = None, start: Any = None, end: Any = None,
                   format: str | None = None) -> Iterator[Item]:
        """Items of a dataset overlapping ``bbox`` and [start, end], by time then tile; lazily.

        ``format``: None for the dataset's native format, one of ``formats(key)``, or "all".
        Dates cover their whole day; naive datetimes are UTC.
        """
        spec = self._data_spec(self.dataset(key))
        fmts = self._formats_for(spec, format)
        lo, hi = _as_dt(start, upper=False), _as_dt(end, upper=True)
        if bbox is not None:
            bbox = tuple(float(v) for v in bbox)
            if not _intersects(spec.bbox, bbox):
                return
        tiles: Sequence[Tile | None]
        if spec.tiled:
            tiles = [t for t in self.spec_tiles(spec.key) if bbox is None or _intersects(t.bbox, bbox)]
        else:
            tiles = [None]
        for s, e in _steps(spec, self.size_class.hours, lo, hi):
            token = _date_token(spec, s)
            for tile in tiles:
                for fmt in fmts:
                    yield self._make_item(spec, fmt, s, e, tile, token)

    def step_starts(self, key: str) -> Iterator[dt.datetime]:
        """Start of every time step of a dataset, in order (one per step, whatever the tiles or formats)."""
        for s, _ in _steps(self._data_spec(self.dataset(key)), self.size_class.hours):
            yield s

    def step_starts_between(self, key: str, start: Any = None, end: Any = None,
                            bbox: Sequence[float] | None = None) -> list[dt.datetime]:
        """Start of every time step overlapping [start, end] (none when ``bbox`` misses the coverage)."""
        spec = self._data_spec(self.dataset(key))
        if bbox is not None and not _intersects(spec.bbox, tuple(float(v) for v in bbox)):
            return []
        return [s for s, _ in _steps(spec, self.size_class.hours, _as_dt(start, upper=False), _as_dt(end, upper=True))]

    def items(self, key: str, bbox: Sequence[float] | None = None, start: Any = None, end: Any = None,
              format: str | None = None, limit: int | None = None, offset: int = 0) -> list[Item]:
        """A deterministic list of items (see :meth:`iter_items`); ``limit``/``offset`` page through long series."""
        stop = None if limit is None else offset + limit
        return list(islice(self.iter_items(key, bbox, start, end, format), offset, stop))

    def count(self, key: str, bbox: Sequence[float] | None = None, start: Any = None, end: Any = None,
              format: str | None = None) -> int:
        """How many items :meth:`items` would list, without building them."""
        spec = self._data_spec(self.dataset(key))
        fmts = self._formats_for(spec, format)
        if bbox is not None and not _intersects(spec.bbox, tuple(bbox)):
            return 0
        ntiles = len([t for t in self.spec_tiles(spec.key) if bbox is None or _intersects(t.bbox, tuple(bbox))]) \
            if spec.tiled else 1
        nsteps = sum(1 for _ in _steps(spec, self.size_class.hours, _as_dt(start, upper=False),
                                       _as_dt(end, upper=True)))
        return nsteps * ntiles * len(fmts)

    def _formats_for(self, spec: DatasetSpec, fmt: str | None) -> tuple[str, ...]:
        if fmt is None:
            return (spec.native_format,)
        if fmt in ("all", "*"):
            return spec.formats
        if fmt not in spec.formats:
            raise ValueError(f"{spec.key}: no {fmt!r} products (available: {', '.join(spec.formats)})")
        return (fmt,)

    def _make_item(self, spec: DatasetSpec, fmt: str, start: dt.datetime, end: dt.datetime,
                   tile: Tile | None, token: str | None = None) -> Item:
        stem = spec.template.format(date=token if token is not None else _date_token(spec, start),
                                    tile=tile.code if tile is not None else "")
        item_id = stem if fmt == spec.native_format else f"{stem}_{fmt}"
        ext = {"nc": ".nc", "tif": ".tif", "cog": ".tif", "geojson": ".geojson"}[fmt]
        item = Item(
            id=item_id, dataset=spec.key, name=stem + ext, start=start, end=end,
            bbox=tile.bbox if tile is not None else spec.bbox, format=fmt,
            size_hint=self._size_hint(spec, fmt, tile), product_name=f"{stem}_{fmt}",
            uuid=_stable_uuid("item", item_id), tile=tile.code if tile is not None else None,
        )
        self._by_uuid[item.uuid] = item_id
        return item

    def item_by_uuid(self, item_uuid: str) -> Item:
        """The item with this ``Item.uuid`` (among the items this store has listed or built)."""
        item_id = self._by_uuid.get(item_uuid)
        if item_id is None:
            raise KeyError(f"unknown product uuid {item_uuid!r}")
        return self.item(item_id)

    def _size_hint(self, spec: DatasetSpec, fmt: str, tile: Tile | None) -> int:
        key = (spec.key, fmt, tile is None)
        hint = self._hints.get(key)
        if hint is None:
            hint = self._hints[key] = self._estimate_size(spec, fmt, tile)
        return hint

    def _estimate_size(self, spec: DatasetSpec, fmt: str, tile: Tile | None) -> int:
        sc = self.size_class
        if fmt == "geojson":
            return 600 * sc.features + 200
        var = _rasters.var_for(spec)
        if tile is not None:
            r0, r1, c0, c1 = self._tile_window(spec, tile)
        else:
            r0, r1, c0, c1 = _rasters.data_window(spec, self.size)
        pixels = (r1 - r0) * (c1 - c0) * np.dtype(var.dtype).itemsize
        return int(pixels * (0.35 if fmt == "nc" else 0.45)) + (9000 if fmt == "nc" else 1500)

    def item(self, item_id: str) -> Item:
        """The item with this id, or with this CDSE product name (``<stem>_<format>``).

        Parsed back from the id, so it works in any process, listed before or not.
        """
        if item_id.startswith("bulk_"):
            return self._bulk_from_id(item_id)
        found = self._parse_id(item_id)
        if found is None:
            raise KeyError(f"unknown product {item_id!r}")
        spec, fmt, start, end, tile = found
        return self._make_item(spec, fmt, start, end, tile)

    def _parse_id(self, item_id: str) -> tuple[DatasetSpec, str, dt.datetime, dt.datetime, Tile | None] | None:
        candidates = [(item_id, None)]
        for fmt in ("nc", "cog", "tif", "geojson"):
            if item_id.endswith("_" + fmt):
                candidates.append((item_id[: -len(fmt) - 1], fmt))
        for stem, fmt in candidates:
            for spec, rx in self._parsers:
                m = rx.fullmatch(stem)
                if not m:
                    continue
                want = fmt or spec.native_format  # "<stem>_<native>" (a CDSE name) means the native item
                if want not in spec.formats:
                    continue
                tile = None
                if spec.tiled:
                    tile = next((t for t in self.spec_tiles(spec.key) if t.code == m.group("tile")), None)
                    if tile is None:
                        continue
                step = self._step_for(spec, m.groupdict().get("date"))
                if step is None:
                    continue
                return spec, want, step[0], step[1], tile
        return None

    def _step_for(self, spec: DatasetSpec, token: str | None) -> tuple[dt.datetime, dt.datetime] | None:
        if spec.frequency == "static" or token is None:
            steps = list(_steps(spec, self.size_class.hours))
            if not steps or (token is not None and token != _date_token(spec, steps[0][0])):
                return None
            return steps[0]
        try:
            when = dt.datetime.strptime(token, spec.date_format).replace(tzinfo=UTC)
        except ValueError:
            return None
        if spec.date_format == "%Y" and spec.frequency not in ("yearly", "3yearly", "6yearly"):
            return None
        for s, e in _steps(spec, self.size_class.hours, when, when):
            if s == when and _date_token(spec, s) == token:
                return s, e
        return None

    # ---------------------------------------------------------------- files

    def path_for(self, item: Item) -> Path:
        """Where ``materialize(item)`` puts the file (it may not exist yet)."""
        if item.format == "bin" or item.dataset == "bulk":
            return self.root / "bulk" / item.name
        spec = self.dataset(item.dataset)
        root = self.cog_root if item.format == "cog" and self._data_spec(spec).pattern == "global_nc" else self.root
        return root / "products" / _slug(spec.key) / item.format / f"{item.start:%Y}" / item.name

    def materialize(self, item: Item) -> Path:
        """The item's file, generated once (atomically) and cached under ``data_dir``."""
        if item.dataset == "bulk":
            nbytes, kind = self._bulk_params(item.id)
            return self._produce(self.path_for(item), lambda tmp: _write_bulk(tmp, nbytes, kind, self.seed))
        found = self._parse_id(item.id)
        if found is None:
            raise KeyError(f"unknown product {item.id!r}")
        spec, fmt, start, end, tile = found
        writer: Callable[[Path], None]
        if spec.pattern == "vector":
            writer = lambda tmp: self._write_vector(tmp, spec, start, end)  # noqa: E731
        elif spec.pattern == "global_nc":
            if fmt == "nc":
                writer = lambda tmp: self._write_nc(tmp, spec, start, end)  # noqa: E731
            else:
                writer = lambda tmp: self._write_global_cog(tmp, spec, start, end)  # noqa: E731
        else:
            assert tile is not None
            writer = lambda tmp: self._write_tile(tmp, spec, start, tile, cog=fmt == "cog")  # noqa: E731
        return self._produce(self.path_for(item), writer)

    def _produce(self, path: Path, write: Callable[[Path], None]) -> Path:
        """Write ``path`` once: under a file lock, to a temp name, then an atomic rename."""
        if path.exists():
            return path
        from filelock import FileLock

        path.parent.mkdir(parents=True, exist_ok=True)
        locks = self.root / ".locks"
        locks.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(locks / (hashlib.sha1(str(path).encode()).hexdigest()[:24] + ".lock")))
        with lock:
            if path.exists():
                return path
            tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.part")
            try:
                write(tmp)
                os.replace(tmp, path)
            finally:
                if tmp.exists():
                    tmp.unlink()
        return path

    # ---------------------------------------------------------------- rasters: one array, every format

    def grid(self, key: str) -> "_rasters.Grid":
        """The product's real grid (:func:`.rasters.grid_for`)."""
        return _rasters.grid_for(self._data_spec(self.dataset(key)))

    def data_window(self, key: str) -> tuple[int, int, int, int]:
        """(r0, r1, c0, c1) of the grid that holds data in this store's size class (every file covers it)."""
        return _rasters.data_window(self._data_spec(self.dataset(key)), self.size)

    def raw(self, key: str, start: dt.datetime, window: Sequence[int]) -> np.ndarray:
        """The stored integers of one time step over a window of the product's grid (the one truth)."""
        return _rasters.raw_window(self.seed, self._data_spec(self.dataset(key)), start, window)

    def variable(self, key: str) -> "_rasters.Var":
        """Name and encoding of a raster product's variable (NetCDF variable == COG band description)."""
        return _rasters.var_for(self._data_spec(self.dataset(key)))

    def _write_nc(self, path: Path, spec: DatasetSpec, start: dt.datetime, end: dt.datetime,
                  window: Sequence[int] | None = None) -> None:
        window = tuple(window) if window is not None else _rasters.data_window(spec, self.size)
        raw = _rasters.raw_window(self.seed, spec, start, window)
        self._write_nc_array(path, spec, start, end, raw, window)

    def _write_nc_array(self, path: Path, spec: DatasetSpec, start: dt.datetime, end: dt.datetime,
                        raw: np.ndarray, window: Sequence[int]) -> None:
        import netCDF4

        stem = _stem(spec, start, None)
        with _netcdf_lock():
            self._nc_file(netCDF4.Dataset(str(path), "w", format="NETCDF4"), spec, stem, start, end, raw, window)

    def _nc_file(self, ds: Any, spec: DatasetSpec, stem: str, start: dt.datetime, end: dt.datetime,
                 raw: np.ndarray, window: Sequence[int]) -> None:
        grid = _rasters.grid_for(spec)
        var = _rasters.var_for(spec)
        r0, r1, c0, c1 = window
        geographic = grid.geographic
        ydim, xdim = ("lat", "lon") if geographic else ("y", "x")
        try:
            ds.createDimension("time", 1)
            ds.createDimension(ydim, r1 - r0)
            ds.createDimension(xdim, c1 - c0)
            t = ds.createVariable("time", "f8", ("time",))
            t.setncatts({"standard_name": "time", "long_name": "time", "axis": "T",
                         "units": "days since 1970-01-01 00:00:00", "calendar": "standard"})
            t[:] = [(start - dt.datetime(1970, 1, 1, tzinfo=UTC)).total_seconds() / 86400.0]
            y = ds.createVariable(ydim, "f8", (ydim,))
            x = ds.createVariable(xdim, "f8", (xdim,))
            if geographic:
                y.setncatts({"standard_name": "latitude", "long_name": "latitude", "units": "degrees_north",
                             "axis": "Y"})
                x.setncatts({"standard_name": "longitude", "long_name": "longitude", "units": "degrees_east",
                             "axis": "X"})
            else:
                y.setncatts({"standard_name": "projection_y_coordinate", "units": "m", "axis": "Y"})
                x.setncatts({"standard_name": "projection_x_coordinate", "units": "m", "axis": "X"})
            y[:] = grid.ys(r0, r1)
            x[:] = grid.xs(c0, c1)
            crs = ds.createVariable("crs", "i4")
            wkt = _WKT_4326 if geographic else _rasters.crs_wkt(grid.crs)
            tr = grid.transform(r0, c0)
            mapping = {"grid_mapping_name": "latitude_longitude", "longitude_of_prime_meridian": 0.0,
                       "semi_major_axis": 6378137.0, "inverse_flattening": 298.257223563} if geographic else \
                {"grid_mapping_name": "lambert_azimuthal_equal_area", "latitude_of_projection_origin": 52.0,
                 "longitude_of_projection_origin": 10.0, "false_easting": 4321000.0, "false_northing": 3210000.0,
                 "semi_major_axis": 6378137.0, "inverse_flattening": 298.257222101}
            crs.setncatts({**mapping, "long_name": "coordinate reference system", "spatial_ref": wkt,
                           "crs_wkt": wkt, "GeoTransform": f"{tr.c!r} {tr.a!r} 0 {tr.f!r} 0 {tr.e!r}"})
            chunk = (1, max(1, min(r1 - r0, 512)), max(1, min(c1 - c0, 512)))
            v = ds.createVariable(var.name, var.dtype, ("time", ydim, xdim), zlib=True, complevel=1,
                                  chunksizes=chunk, fill_value=np.array(var.fill, dtype=var.dtype))
            v.set_auto_maskandscale(False)
            small = np.dtype(var.dtype).itemsize <= 2  # decoded as float32 (CF: the attributes' type)
            ftype = np.float32 if small else np.float64
            attrs: dict[str, Any] = {
                "long_name": var.long_name, "units": var.units, "grid_mapping": "crs",
                "scale_factor": ftype(var.scale), "add_offset": ftype(var.offset),
                "valid_range": np.array([var.vmin, var.vmax], dtype=var.dtype),
            }
            if var.classes:
                attrs["flag_values"] = np.array(sorted(set(var.classes)), dtype=var.dtype)
            v.setncatts(attrs)
            v[0, :, :] = raw
            ds.setncatts(self._nc_globals(spec, stem, start, end))
        finally:
            ds.close()

    def _nc_globals(self, spec: DatasetSpec, stem: str, start: dt.datetime, end: dt.datetime) -> dict[str, Any]:
        produced = (end + dt.timedelta(days=3)).replace(hour=6, minute=0, second=0)
        sensor = stem.split("_")[-2] if stem.startswith("c_gls_") else "MULTI"
        return {
            "Conventions": "CF-1.6",
            "title": f"{spec.short_name} {spec.resolution or ''}: {spec.spatial_coverage or 'Global'} "
                     f"{start:%Y-%m-%d}".replace("  ", " "),
            "institution": "VITO NV",
            "source": "Derived from EO satellite imagery",
            "history": f"{produced:%Y-%m-%d %H:%M:%S} Processing line {spec.short_name}",
            "references": "https://land.copernicus.eu",
            "comment": f"Synthetic sandbox data (intake_clms.sandbox, seed {self.seed}); not real observations.",
            "archive_facility": "VITO",
            "copyright": "Copernicus Service information 2024",
            "product_version": spec.version,
            "identifier": f"urn:cgls:{(spec.spatial_coverage or 'global').lower().replace(' ', '-')}:"
                          f"{spec.short_name.lower()}_{spec.version.lower()}:{stem}",
            "parent_identifier": f"urn:cgls:{spec.short_name.lower()}_{spec.version.lower()}",
            "dataset_identifier": spec.dataset_identifier or spec.key,
            "long_name": _nc_var(_family_of(spec)).long_name,
            "platform": "Sentinel-3" if sensor == "OLCI" else sensor,
            "sensor": sensor,
            "processing_level": "L3",
            "processing_mode": "Offline",
            "time_coverage_start": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "time_coverage_end": end.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "date_created": produced.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }

    def _write_global_cog(self, path: Path, spec: DatasetSpec, start: dt.datetime, end: dt.datetime) -> None:
        """The COG of a global product: the NetCDF's array, pixel for pixel (see :mod:`.rasters`)."""
        window = _rasters.data_window(spec, self.size)
        raw = _rasters.raw_window(self.seed, spec, start, window)
        tags = dict(PRODUCT=_stem(spec, start, None), VERSION=spec.version,
                    TIME_COVERAGE_START=start.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    TIME_COVERAGE_END=end.strftime("%Y-%m-%dT%H:%M:%SZ"))
        _rasters.write_geotiff(path, raw, _rasters.grid_for(spec), window[0], window[2], _rasters.var_for(spec),
                               tags, cog=True, block=_cog.grid(self.size).block)

    def _tile_window(self, spec: DatasetSpec, tile: Tile) -> tuple[int, int, int, int]:
        """The part of the data window in a tile; a tile outside it holds 16 x 16 nodata pixels at its corner."""
        r0, r1, c0, c1 = _rasters.tile_window(spec, self.size, tile.bounds)
        if r1 > r0 and c1 > c0:
            return r0, r1, c0, c1
        grid = _rasters.grid_for(spec)
        h = grid.res / 2
        tr0, _, tc0, _ = grid.window((tile.bounds[0] + h, tile.bounds[1] + h, tile.bounds[2] - h, tile.bounds[3] - h))
        return tr0, tr0 + 16, tc0, tc0 + 16

    def _write_tile(self, path: Path, spec: DatasetSpec, start: dt.datetime, tile: Tile, cog: bool) -> None:
        grid = _rasters.grid_for(spec)
        var = _rasters.var_for(spec)
        window = self._tile_window(spec, tile)
        if _rasters.tile_window(spec, self.size, tile.bounds) == window:
            raw = _rasters.raw_window(self.seed, spec, start, window, var)
        else:
            raw = np.full((window[1] - window[0], window[3] - window[2]), var.fill, dtype=var.dtype)
        tags = dict(PRODUCT=_stem(spec, start, tile), TILE=tile.code, YEAR=str(start.year), VERSION=spec.version)
        _rasters.write_geotiff(path, raw, grid, window[0], window[2], var, tags, cog=cog,
                               block=self.size_class.cog_block)

    def cutout(self, key: str, start: dt.datetime, bbox: Sequence[float], fmt: str = "tif") -> Path:
        """A cut-to-order output: the pixels of one time step whose centres lie in ``bbox`` (lon/lat; for
        projected products transformed as a rectangle with ``transform_bounds(densify_pts=21)``), cropped from
        the one array, as a GeoTIFF (``tif``) or a NetCDF (``nc``).  A bbox that misses the size class's
        extent gets 16 x 16 nodata pixels at its top-left corner (no data there, as in a tile outside it)."""
        spec = self._data_spec(self.dataset(key))
        grid = _rasters.grid_for(spec)
        window = self.crop_window(spec.key, bbox)
        empty = window is None
        if window is None:
            r0, _, c0, _ = grid.window(self._grid_bounds(spec, bbox))
            r0, c0 = min(r0, grid.height - 16), min(c0, grid.width - 16)
            window = (r0, r0 + 16, c0, c0 + 16)
        step = next(iter(_steps(spec, self.size_class.hours, start, start)), None)
        if step is None:
            raise ValueError(f"{spec.key}: no time step at {start}")
        s, e = step
        stem = f"{_stem(spec, s, None) if spec.pattern == 'global_nc' else _stem_untiled(spec, s)}_cut"
        digest = hashlib.sha1(json.dumps([list(window), fmt, empty]).encode()).hexdigest()[:12]
        target = self.root / "cutouts" / _slug(spec.key) / f"{stem}_{digest}.{'nc' if fmt == 'nc' else 'tif'}"
        var = _rasters.var_for(spec)

        def write(tmp: Path) -> None:
            if empty:
                raw = np.full((16, 16), var.fill, dtype=var.dtype)
            else:
                raw = _rasters.raw_window(self.seed, spec, s, window, var)
            if fmt == "nc":
                self._write_nc_array(tmp, spec, s, e, raw, window)
            else:
                tags = dict(PRODUCT=stem, VERSION=spec.version, TIME_COVERAGE_START=s.strftime("%Y-%m-%dT%H:%M:%SZ"))
                _rasters.write_geotiff(tmp, raw, grid, window[0], window[2], var, tags, cog=False, block=256)

        return self._produce(target, write)

    @staticmethod
    def _grid_bounds(spec: DatasetSpec, bbox: Sequence[float]) -> tuple[float, float, float, float]:
        """A lon/lat bbox in the grid's CRS: as a rectangle, ``transform_bounds(..., densify_pts=21)``."""
        bounds = tuple(float(v) for v in bbox)
        grid = _rasters.grid_for(spec)
        if not grid.geographic:
            from rasterio.warp import transform_bounds

            bounds = transform_bounds("EPSG:4326", grid.crs, *bounds, densify_pts=21)
        return bounds  # type: ignore[return-value]

    def crop_window(self, key: str, bbox: Sequence[float]) -> tuple[int, int, int, int] | None:
        """(r0, r1, c0, c1): the data pixels whose centres lie in a lon/lat ``bbox`` (None: none)."""
        spec = self._data_spec(self.dataset(key))
        r0, r1, c0, c1 = _rasters.grid_for(spec).window(self._grid_bounds(spec, bbox))
        d0, d1, e0, e1 = _rasters.data_window(spec, self.size)
        r0, r1, c0, c1 = max(r0, d0), min(r1, d1), max(c0, e0), min(c1, e1)
        return (r0, r1, c0, c1) if r1 > r0 and c1 > c0 else None

    def _write_vector(self, path: Path, spec: DatasetSpec, start: dt.datetime, end: dt.datetime) -> None:
        rng = np.random.default_rng(_hash_int(self.seed, spec.key, start.isoformat(), "vector"))
        points = "wl-" in spec.key
        w, s, e, n = _vector_extent(spec, points)
        count = self.size_class.features
        cols = math.ceil(math.sqrt(count))
        cw, ch = (e - w) / cols, (n - s) / math.ceil(count / cols)
        features = []
        for i in range(count):
            props: dict[str, Any] = {"id": i + 1, "date": start.strftime("%Y-%m-%d")}
            if points:  # stations anywhere in the extent
                x, y = float(rng.uniform(w, e)), float(rng.uniform(s, n))
                geom = {"type": "Point", "coordinates": [round(x, 6), round(y, 6)]}
                props["water_surface_height_above_reference_datum"] = round(float(rng.uniform(5, 500)), 3)
            else:  # one hexagon per cell of a grid over the extent, covering its cell: every area has features
                x = w + (i % cols + 0.5 + float(rng.uniform(-0.05, 0.05))) * cw
                y = s + (i // cols + 0.5 + float(rng.uniform(-0.05, 0.05))) * ch
                rx, ry = 0.82 * cw, 0.82 * ch  # 0.82 = sqrt(2)/2 / cos(30 deg): the hexagon holds its cell's corners
                ring = [[round(min(e, max(w, x + rx * math.cos(a))), 6), round(min(n, max(s, y + ry * math.sin(a))), 6)]
                        for a in np.linspace(0, 2 * math.pi, 7)]
                ring[-1] = ring[0]
                geom = {"type": "Polygon", "coordinates": [ring]}
                props["code"] = str(int(rng.choice([11100, 11210, 12100, 14100, 21000, 31000, 50000])))
                props["area_ha"] = round(float(rng.uniform(0.25, 40.0)), 2)
            features.append({"type": "Feature", "id": i + 1, "geometry": geom, "properties": props})
        doc = {"type": "FeatureCollection", "name": _stem(spec, start, None),
               "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:OGC:1.3:CRS84"}}, "features": features}
        path.write_text(json.dumps(doc, sort_keys=True, separators=(",", ":")), encoding="utf-8")

    # ---------------------------------------------------------------- tiles and zips

    def tiles(self, key: str, bbox: Sequence[float] | None = None, year: int | None = None,
              grid_codes: bool = True) -> list[Path]:
        """Plain GeoTIFF tiles of one date of a tiled dataset (what a CLMS-API result zip holds).

        ``year``: the first time step in that year (default: the last time step).
        ``grid_codes=False`` renames grid-coded tiles without their code (``..._part003.tif``),
        to test clients that must mosaic by geotransform.
        """
        spec = self._data_spec(self.dataset(key))
        if not spec.tiled:
            raise ValueError(f"{spec.key} is not tiled ({spec.pattern}); use items() and materialize()")
        start, end = self.tile_step(spec.key, year)
        fmt = "tif"
        paths = []
        for tile in self.spec_tiles(spec.key):
            if bbox is not None and not _intersects(tile.bbox, tuple(bbox)):
                continue
            item = self._make_item(spec, fmt, start, end, tile)
            path = self.materialize(item)
            if not grid_codes and spec.pattern == "europe_tiles":
                path = self._renamed_copy(path, re.sub(r"_E\d\dN\d\d", "", path.stem) +
                                          f"_part{self.spec_tiles(spec.key).index(tile) + 1:03d}.tif")
            paths.append(path)
        return paths

    def tile_step(self, key: str, year: int | None = None) -> tuple[dt.datetime, dt.datetime]:
        """(start, end) of the time step :meth:`tiles` serves: the first in ``year``, or the last one."""
        spec = self._data_spec(self.dataset(key))
        if year is not None:
            steps = list(islice(_steps(spec, self.size_class.hours, _year_start(int(year)),
                                       dt.datetime(int(year), 12, 31, 23, 59, 59, tzinfo=UTC)), 1))
            if not steps:
                raise ValueError(f"{spec.key}: no data in {year} (covers {spec.start} to {spec.end})")
        else:
            steps = list(_steps(spec, self.size_class.hours, _as_dt(spec.end, upper=False)))[-1:] or \
                list(_steps(spec, self.size_class.hours))[-1:]
        return steps[0]

    def _renamed_copy(self, src: Path, name: str) -> Path:
        target = src.parent.parent / "nogrid-names" / src.parent.name / name

        def link(tmp: Path) -> None:
            try:
                os.link(src, tmp)
            except OSError:
                shutil.copyfile(src, tmp)

        return self._produce(target, link)

    def downloadable_file_members(self, key: str, file_id: str) -> list[Path]:
        """The tiles behind a pre-packaged file (``downloadable_files`` ``@id``) of a CLMS-API dataset."""
        spec = self.dataset(key)
        entry = next((f for f in spec.downloadable_files if f["@id"] == file_id), None)
        if entry is None:
            raise KeyError(f"{spec.key}: no downloadable file {file_id!r}")
        if not entry.get("path") or not entry.get("source"):
            raise ValueError("Error, the FileID is not valid")
        area = str(entry.get("area") or "Full")
        if area == "Full":  # the size class's extent: tiles beyond it hold no data, so "Full" stops there
            grid = self.grid(spec.key)
            r0, r1, c0, c1 = self.data_window(spec.key)
            xs, ys = grid.xs(c0, c1), grid.ys(r0, r1)
            extent = (min(xs[0], xs[-1]), min(ys[0], ys[-1]), max(xs[0], xs[-1]), max(ys[0], ys[-1]))
            from pyproj import Transformer

            west, south, east, north = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True).transform_bounds(
                *extent, densify_pts=21)
            return self.tiles(spec.key, bbox=(west, south, east, north),
                              year=int(entry["year"]) if entry.get("year") else None,
                              grid_codes=spec.pattern == "europe_tiles")
        paths = self.tiles(spec.key, year=int(entry["year"]) if entry.get("year") else None,
                           grid_codes=spec.pattern == "europe_tiles")
        return [p for p in paths if area in p.name] or paths

    def product_zip(self, item: Item) -> Path:
        """A zip of the product folder (``<product>/`` holding the data file and its metadata), for HDA."""
        data = self.materialize(item)
        folder = item.product_name or item.stem
        target = self.root / "zips" / "products" / f"{folder}.zip"

        def write(tmp: Path) -> None:
            with zipfile.ZipFile(tmp, "w") as zf:
                _add_file(zf, f"{folder}/{data.name}", data, zipfile.ZIP_STORED)
                zf.writestr(_zinfo(f"{folder}/{item.stem}.xml"),
                            _metadata_xml(item.stem, item.start, item.end, item.bbox))

        return self._produce(target, write)

    def result_zip(self, members: list[Path], layout: str = "results_inner", hostile: str | None = None,
                   corrupt: bool = False, name: str | None = None, **params: Any) -> Path:
        """A CLMS-API result zip holding ``members`` (cached; deterministic).

        Layouts: ``results_inner`` (``Results/<name>.zip`` holding ``<name>/DATA/<tiles>``,
        metadata .xml and a user-manual .pdf), ``flat`` (tiles and metadata at the top, no
        ``Results/``), ``folder`` (the same under one folder ``<name>/``, as WEkEO delivers old IDs),
        ``multi_inner`` (several inner zips), ``nested3`` (a zip in a zip in a zip).
        ``corrupt``: one data member's stored bytes are flipped (its CRC check fails; the central
        directory is intact).  ``hostile``: adds one entry of the kind named (see ``HOSTILE_NAMES``):
        ``slip``, ``absolute``, ``symlink``, ``bomb`` (``bomb_bytes`` of zeros deflated to ~1/1000),
        ``many`` (``entries`` empty members).
        """
        if layout not in LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
        if hostile is not None and hostile not in HOSTILE_VARIANTS:
            raise ValueError(f"unknown hostile variant {hostile!r}; expected one of {HOSTILE_VARIANTS}")
        members = [Path(m) for m in members]
        if not members:
            raise ValueError("a result zip needs at least one member")
        bomb_bytes = parse_size(params.get("bomb_bytes", self.bomb_bytes))
        entries = int(params.get("entries", self.many_entries))
        base = name or _result_name(members)
        key = [[m.name, m.stat().st_size] for m in members] + [layout, hostile, corrupt, base, bomb_bytes, entries]
        digest = hashlib.sha1(json.dumps(key).encode()).hexdigest()[:16]
        target = self.root / "zips" / "results" / f"{base}_{digest}.zip"

        def write(tmp: Path) -> None:
            with zipfile.ZipFile(tmp, "w", allowZip64=True) as zf:
                _write_layout(zf, layout, base, members, tmp.parent)
                if hostile is not None:
                    _add_hostile(zf, hostile, bomb_bytes, entries)
            if corrupt:
                _corrupt_member(tmp)

        return self._produce(target, write)

    # ---------------------------------------------------------------- bulk files for benchmarks

    def bulk_item(self, nbytes: int | str, kind: str = "bin") -> Item:
        """A single big file for benchmarks: ``bin`` has exactly ``nbytes`` bytes; ``nc`` is a valid
        uncompressed NetCDF of about ``nbytes``. Written in 4 MiB chunks (flat memory)."""
        n = parse_size(nbytes)
        if kind not in ("bin", "nc"):
            raise ValueError(f"bulk kind must be 'bin' or 'nc', not {kind!r}")
        return self._bulk_from_id(f"bulk_{n}_{kind}")

    def _bulk_params(self, item_id: str) -> tuple[int, str]:
        m = re.fullmatch(r"bulk_(\d+)_(bin|nc)", item_id)
        if not m:
            raise KeyError(f"unknown product {item_id!r}")
        return int(m.group(1)), m.group(2)

    def _bulk_from_id(self, item_id: str) -> Item:
        n, kind = self._bulk_params(item_id)
        ext = ".nc" if kind == "nc" else ".bin"
        t0 = dt.datetime(2024, 1, 1, tzinfo=UTC)
        return Item(id=item_id, dataset="bulk", name=f"sandbox_bulk_{n}{ext}", start=t0,
                    end=t0 + dt.timedelta(days=1, seconds=-1), bbox=(-180.0, -90.0, 180.0, 90.0),
                    format=kind, size_hint=n, product_name=f"sandbox_bulk_{n}_{kind}",
                    uuid=_stable_uuid("item", item_id))

    # ---------------------------------------------------------------- CDSE / CLMS API helpers

    def cdse_attributes(self, item: Item) -> dict[str, Any]:
        """CDSE OData ``Attributes`` of an item's product (name -> value)."""
        spec = self.dataset(item.dataset)
        ident = spec.dataset_identifier or spec.key
        alias = re.sub(r"_v\d+$", "", ident)
        return {
            "origin": "CLMS", "component": spec.component, "productType": spec.product_type or spec.short_name.lower(),
            "datasetIdentifier": ident, "datasetAlias": alias, "datasetShortName": spec.short_name,
            "fileFormat": item.format, "temporalRepeatRate": spec.frequency,
            "areaOfInterest": (spec.spatial_coverage or "global").lower(), "gridLabel": item.tile or "GLOBE",
            "metricGridSpacing": _meters(spec.resolution) or 0,
            "nominalDate": item.start.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "productVersion": spec.version,
        }

    def s3_path(self, item: Item) -> str:
        """``/eodata/CLMS/<component>/<productType>/<datasetIdentifier>/YYYY/MM/DD/<product name>``."""
        spec = self.dataset(item.dataset)
        ident = spec.dataset_identifier or spec.key
        return (f"/eodata/CLMS/{spec.component}/{spec.product_type or spec.short_name.lower()}/{ident}/"
                f"{item.start:%Y/%m/%d}/{item.product_name}")

    def clms_api_record(self, key: str) -> dict[str, Any]:
        """The ``@search`` fields of one CLMS-API dataset (without the portal-specific ``@id``)."""
        spec = self.dataset(key)
        w, s, e, n = spec.bbox
        return {
            "@type": "DataSet", "portal_type": "DataSet", "review_state": "published",
            "id": spec.key, "UID": spec.uid, "title": spec.title,
            "dataset_download_information": {"items": [dict(i) for i in spec.download_information]},
            "downloadable_files": {"items": [dict(f) for f in spec.downloadable_files],
                                   "items_total": len(spec.downloadable_files)},
            "coordinateReferenceSystemList": list(spec.crs_list or (spec.crs,)),
            "temporalExtentStart": f"{spec.start.isoformat()}T00:00:00",
            "temporalExtentEnd": f"{spec.end.isoformat()}T00:00:00",
            "geographicBoundingBox": {"items": [{"west": str(w), "south": str(s), "east": str(e), "north": str(n)}]},
        }


# --------------------------------------------------------------------------- naming


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def _date_token(spec: DatasetSpec, start: dt.datetime) -> str:
    when = spec.nominal if spec.frequency == "static" and spec.nominal else start
    return when.strftime(spec.date_format)


def _stem(spec: DatasetSpec, start: dt.datetime, tile: Tile | None) -> str:
    return spec.template.format(date=_date_token(spec, start), tile=tile.code if tile is not None else "")


def _stem_untiled(spec: DatasetSpec, start: dt.datetime) -> str:
    """A tiled product's file stem without its tile code (a cut-out spans tiles)."""
    return re.sub(r"_+", "_", spec.template.format(date=_date_token(spec, start), tile="")).strip("_")


def _template_regex(spec: DatasetSpec) -> re.Pattern[str]:
    parts = re.split(r"(\{date\}|\{tile\})", spec.template)
    rx = ""
    for part in parts:
        if part == "{date}":
            rx += r"(?P<date>[0-9]{4}(?:[0-9]{2}){0,4})"
        elif part == "{tile}":
            rx += r"(?P<tile>[A-Za-z0-9]+?)"
        else:
            rx += re.escape(part)
    return re.compile(rx)


def _disambiguate(specs: list[DatasetSpec]) -> list[DatasetSpec]:
    """Give every spec a distinct file-name template (products of one family may share a short name)."""
    from dataclasses import replace

    seen: dict[str, DatasetSpec] = {}
    out = []
    for spec in sorted(specs, key=lambda s: s.key):
        template = spec.template
        n = 1
        while template in seen:
            n += 1
            other = seen[template]
            tag = spec.frequency.upper() if other.frequency != spec.frequency and n == 2 else str(n)
            template = spec.template.replace(f"_{spec.short_name}_", f"_{spec.short_name}-{tag}_", 1)
            if template == spec.template:
                template = f"{spec.template}_{n}"
        seen[template] = spec
        out.append(spec if template == spec.template else
                   replace(spec, template=template, short_name=template.split("_")[2] if template.startswith("c_gls_")
                           else spec.short_name))
    order = {s.key: i for i, s in enumerate(specs)}
    out.sort(key=lambda s: order[s.key])
    return out


_WKT_4326 = (
    'GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563,AUTHORITY["EPSG","7030"]],'
    'AUTHORITY["EPSG","6326"]],PRIMEM["Greenwich",0,AUTHORITY["EPSG","8901"]],UNIT["degree",0.0174532925199433,'
    'AUTHORITY["EPSG","9122"]],AXIS["Latitude",NORTH],AXIS["Longitude",EAST],AUTHORITY["EPSG","4326"]]'
)


# --------------------------------------------------------------------------- zip building


def _zinfo(name: str, compress: int = zipfile.ZIP_DEFLATED, mode: int = stat.S_IFREG | 0o644) -> zipfile.ZipInfo:
    zi = zipfile.ZipInfo(name, date_time=ZIP_TIME)
    zi.compress_type = compress
    zi.create_system = 3
    zi.external_attr = mode << 16
    return zi


def _add_file(zf: zipfile.ZipFile, arcname: str, path: Path, compress: int = zipfile.ZIP_STORED) -> None:
    zi = _zinfo(arcname, compress)
    zi.file_size = path.stat().st_size
    with open(path, "rb") as src, zf.open(zi, "w", force_zip64=zi.file_size > 0x7FFFFFFF) as dst:
        shutil.copyfileobj(src, dst, 4 << 20)


def _metadata_xml(stem: str, start: dt.datetime | None = None, end: dt.datetime | None = None,
                  bbox: Sequence[float] | None = None) -> bytes:
    w, s, e, n = bbox or (-31.3, 27.6, 44.9, 71.2)
    when = f"<begin>{start:%Y-%m-%dT%H:%M:%SZ}</begin><end>{end:%Y-%m-%dT%H:%M:%SZ}</end>" if start and end else ""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<gmd:MD_Metadata xmlns:gmd="http://www.isotc211.org/2005/gmd">\n'
        f"  <title>{stem}</title>\n  <organisation>European Environment Agency</organisation>\n"
        f"  <extent><west>{w}</west><south>{s}</south><east>{e}</east><north>{n}</north>{when}</extent>\n"
        "  <lineage>Synthetic sandbox product (intake_clms.sandbox)</lineage>\n"
        "</gmd:MD_Metadata>\n"
    ).encode()


def _pdf_bytes(title: str) -> bytes:
    body = f"BT /F1 12 Tf 72 720 Td ({title} - Product User Manual) Tj ET".encode()
    return (b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n"
            b"2 0 obj << /Type /Pages /Kids [3 0 R] /Count 1 >> endobj\n"
            b"3 0 obj << /Type /Page /Parent 2 0 R /Contents 4 0 R >> endobj\n"
            + f"4 0 obj << /Length {len(body)} >> stream\n".encode() + body + b"\nendstream endobj\n"
            b"trailer << /Root 1 0 R >>\n%%EOF\n")


def _result_name(members: Sequence[Path]) -> str:
    stem = members[0].stem
    stem = re.sub(r"_(E\d\dN\d\d|part\d+|[EW]\d{3}[NS]\d\d)", "", stem)
    stem = re.sub(r"^([EW]\d{3}[NS]\d\d)_", "", stem)
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem)[:80] or "result"


def _inner_zip(path: Path, folder: str, members: Sequence[Path], with_docs: bool = True) -> None:
    with zipfile.ZipFile(path, "w", allowZip64=True) as zf:
        for m in members:
            _add_file(zf, f"{folder}/DATA/{m.name}", m, zipfile.ZIP_STORED)
        if with_docs:
            zf.writestr(_zinfo(f"{folder}/Metadata/{folder}.xml"), _metadata_xml(folder))
            zf.writestr(_zinfo(f"{folder}/Documents/{folder}_Product_User_Manual.pdf"), _pdf_bytes(folder))


def _write_layout(zf: zipfile.ZipFile, layout: str, base: str, members: Sequence[Path], workdir: Path) -> None:
    scratch = workdir / f".inner-{os.getpid()}-{threading.get_ident()}"
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        if layout in ("flat", "folder"):
            top = f"{base}/" if layout == "folder" else ""
            for m in members:
                _add_file(zf, f"{top}{m.name}", m, zipfile.ZIP_STORED)
            zf.writestr(_zinfo(f"{top}{base}.xml"), _metadata_xml(base))
            zf.writestr(_zinfo(f"{top}{base}_Product_User_Manual.pdf"), _pdf_bytes(base))
        elif layout == "results_inner":
            inner = scratch / f"{base}.zip"
            _inner_zip(inner, base, members)
            _add_file(zf, f"Results/{base}.zip", inner, zipfile.ZIP_STORED)
        elif layout == "multi_inner":
            groups = [list(members[0::2]), list(members[1::2])]
            for i, group in enumerate(groups, 1):
                inner = scratch / f"{base}_{i}.zip"
                _inner_zip(inner, f"{base}_{i}", group)
                _add_file(zf, f"Results/{base}_{i}.zip", inner, zipfile.ZIP_STORED)
        else:  # nested3: outer -> Results/<base>.zip -> <base>_data.zip -> DATA/<tiles>
            innermost = scratch / f"{base}_data.zip"
            _inner_zip(innermost, base, members, with_docs=False)
            middle = scratch / f"{base}.zip"
            with zipfile.ZipFile(middle, "w", allowZip64=True) as mz:
                _add_file(mz, f"{base}_data.zip", innermost, zipfile.ZIP_STORED)
                mz.writestr(_zinfo(f"{base}.xml"), _metadata_xml(base))
                mz.writestr(_zinfo(f"{base}_Product_User_Manual.pdf"), _pdf_bytes(base))
            _add_file(zf, f"Results/{base}.zip", middle, zipfile.ZIP_STORED)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _add_hostile(zf: zipfile.ZipFile, variant: str, bomb_bytes: int, entries: int) -> None:
    name = HOSTILE_NAMES[variant]
    if variant in ("slip", "absolute"):
        zf.writestr(_zinfo(name), f"sandbox {variant} entry: written outside the extraction folder\n".encode())
    elif variant == "symlink":
        zf.writestr(_zinfo(name, zipfile.ZIP_STORED, stat.S_IFLNK | 0o777), b"/etc/passwd")
    elif variant == "many":
        _add_empty_entries(zf, [f"{name}{i:07d}.txt" for i in range(entries)])
    else:
        _add_bomb(zf, name, bomb_bytes)


def _raw_member(zf: zipfile.ZipFile, zi: zipfile.ZipInfo, chunks: Iterable[bytes]) -> None:
    """Append a member whose (already compressed) bytes, sizes and CRC are given by the caller."""
    fp = zf.fp
    assert fp is not None
    zip64 = zi.file_size > 0xFFFFFFFF or zi.compress_size > 0xFFFFFFFF
    zi.header_offset = fp.tell()
    fp.write(zi.FileHeader(zip64))
    for chunk in chunks:
        fp.write(chunk)
    zf.filelist.append(zi)
    zf.NameToInfo[zi.filename] = zi
    zf.start_dir = fp.tell()
    zf._didModify = True  # type: ignore[attr-defined]  # so close() writes the central directory


def _add_empty_entries(zf: zipfile.ZipFile, names: Sequence[str]) -> None:
    """Many empty stored members, written directly (zipfile's writestr costs ~30 us each)."""
    for name in names:
        zi = _zinfo(name, zipfile.ZIP_STORED)
        zi.file_size = zi.compress_size = 0
        zi.CRC = 0
        _raw_member(zf, zi, ())


def _add_bomb(zf: zipfile.ZipFile, name: str, nbytes: int) -> None:
    """A deflated member of ``nbytes`` zeros, written raw (compressing 1 GiB would take seconds).

    With a full flush after every MiB the compressor's output for each MiB is identical,
    so it is computed once and repeated.
    """
    block = 1 << 20
    zeros = bytes(block)
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = comp.compress(zeros) + comp.flush(zlib.Z_FULL_FLUSH)
    full, rest = divmod(nbytes, block)
    tail = (comp.compress(bytes(rest)) if rest else b"") + comp.flush(zlib.Z_FINISH)
    crc = 0
    for _ in range(full):
        crc = zlib.crc32(zeros, crc)
    crc = zlib.crc32(bytes(rest), crc)
    zi = _zinfo(name, zipfile.ZIP_DEFLATED)
    zi.file_size = nbytes
    zi.compress_size = len(first) * full + len(tail)
    zi.CRC = crc
    _raw_member(zf, zi, [*(first for _ in range(full)), tail])


def _corrupt_member(path: Path) -> None:
    """Flip bytes in the middle of the first stored data member (its CRC check then fails)."""
    with zipfile.ZipFile(path) as zf:
        target = next((i for i in zf.infolist() if i.compress_type == zipfile.ZIP_STORED and i.file_size >= 64
                       and not i.filename.endswith((".xml", ".pdf"))), None)
        if target is None:
            target = max(zf.infolist(), key=lambda i: i.compress_size)
    with open(path, "r+b") as fh:
        fh.seek(target.header_offset + 26)
        name_len, extra_len = int.from_bytes(fh.read(2), "little"), int.from_bytes(fh.read(2), "little")
        where = target.header_offset + 30 + name_len + extra_len + target.compress_size // 2
        fh.seek(where)
        chunk = fh.read(4)
        fh.seek(where)
        fh.write(bytes(b ^ 0xA5 for b in chunk))


# --------------------------------------------------------------------------- bulk files


def _write_bulk(path: Path, nbytes: int, kind: str, seed: int) -> None:
    chunk = 4 << 20
    if kind == "bin":
        block = np.random.default_rng(_hash_int(seed, "bulk")).integers(0, 256, chunk, dtype=np.uint8).tobytes()
        with open(path, "wb") as fh:
            written, n = 0, 0
            while written < nbytes:
                piece = n.to_bytes(8, "little") + block[8:]
                piece = piece[: nbytes - written]
                fh.write(piece)
                written += len(piece)
                n += 1
        return
    import netCDF4

    cols = 4096
    rows = max(1, -(-max(nbytes - 20_000, 0) // (2 * cols)))
    with _netcdf_lock():
        _bulk_nc(netCDF4.Dataset(str(path), "w", format="NETCDF4"), rows, cols, chunk, seed)


def _bulk_nc(ds: Any, rows: int, cols: int, chunk: int, seed: int) -> None:
    try:
        ds.createDimension("y", rows)
        ds.createDimension("x", cols)
        v = ds.createVariable("value", "i2", ("y", "x"), contiguous=True)
        v.set_auto_maskandscale(False)
        v.setncatts({"long_name": "bulk benchmark values", "units": "1", "scale_factor": 0.01})
        step = max(1, chunk // (2 * cols))
        base = (np.arange(cols, dtype=np.int32) % 1000)[None, :]
        for r0 in range(0, rows, step):
            r1 = min(rows, r0 + step)
            v[r0:r1, :] = ((np.arange(r0, r1, dtype=np.int32)[:, None] * 7 + base) % 10_000).astype("i2")
        ds.setncatts({"title": "sandbox bulk file", "comment": f"seed {seed}"})
    finally:
        ds.close()


# --------------------------------------------------------------------------- inspection


def inspect_file(path: Path | str) -> dict[str, Any]:
    """A quick summary of a generated file (NetCDF, GeoTIFF/COG, GeoJSON or zip), for tests and debugging."""
    path = Path(path)
    head = path.read_bytes()[:8]
    if head.startswith(b"PK"):
        with zipfile.ZipFile(path) as zf:
            return {"kind": "zip", "names": zf.namelist(), "bad": zf.testzip() if len(zf.infolist()) < 1000 else None}
    if head.startswith(b"\x89HDF") or head.startswith(b"CDF"):
        import netCDF4

        with _netcdf_lock(), netCDF4.Dataset(str(path)) as ds:
            return {"kind": "netcdf", "dims": {k: len(v) for k, v in ds.dimensions.items()},
                    "variables": {k: str(v.dtype) for k, v in ds.variables.items()},
                    "attrs": {k: ds.getncattr(k) for k in ds.ncattrs()}}
    if head[:2] in (b"II", b"MM"):
        import rasterio

        with rasterio.open(path) as src:
            return {"kind": "geotiff", "crs": src.crs.to_string() if src.crs else None, "dtype": src.dtypes[0],
                    "nodata": src.nodata, "shape": (src.height, src.width), "transform": tuple(src.transform)[:6],
                    "overviews": src.overviews(1), "blocks": src.block_shapes[0],
                    "layout": src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT")}
    if head.startswith(b"{"):
        doc = json.loads(path.read_text(encoding="utf-8"))
        return {"kind": "geojson", "features": len(doc.get("features", []))}
    return {"kind": "binary", "size": path.stat().st_size}
