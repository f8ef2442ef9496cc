"""One truth per product: the grid a raster product lives on and the one array every format is written from.

Why: the client reads a product through many paths (WEkEO NetCDF, CLMS API cut-outs and tiles, CDSE NetCDF,
CDSE COG downloads and window reads); tests compare them with one reference (:mod:`.truth`), so every file
the sandbox serves for one product and time step is a view of the same integers on the same grid.

**Grids** (:func:`grid_for`) are the products' real ones, whatever the size class:

* global/regional CGLS products (``global_nc``): EPSG:4326, 300 m = 1/336 degree and 1 km = 1/112 degree
  (multiples for 3 km, ...), pixel centres at ``lon = -180 + i*res``, ``lat = 80 - j*res`` (the CGLS
  convention: the corner is half a pixel outside -180/80); coarser grids (>= 5 km: 0.05, 0.1 degree) have
  their corner at -180/90 (centres half a pixel inside);
* pan-European tiles (``europe_tiles*``): EPSG:3035 at the product's resolution (10, 20, 60, 100 m) on the
  EEA reference grid (corner at 0/0, so pixel edges fall on the 100 km tile edges);
* global land-cover tiles (``global_tiles``): EPSG:4326 at 1/1008 degree (100 m), corner at -180/80.

**Size classes shrink the extent, never the grid** (:func:`data_window`). Design (a) of the two considered:
files hold the size class's extent on the true grid (a NetCDF's lat/lon coordinates are that extent's pixel
centres; a tile holds its part of the extent).  Files on the whole global grid made sparse (HDF5 unwritten
chunks, GDAL ``SPARSE_OK``) would keep bytes small too, but any client or test that loads a whole file would
then allocate a 120960 x 47040 array, and COG overviews of a sparse global raster take GDAL seconds to
compute.  The extent is a lon/lat box per class (``tiny``: 4..11 E, 44..51 N, which holds the Alps boxes
the tests use and still leaves a 5 x 5 degree window a small part of a COG), shrunk around its centre to at
most ``geo_px`` pixels a side (fine global products at 10 or 100 m); pan-European products hold a square of
``proj_px`` pixels a side centred on the corner of four EEA tiles near Ulm (4300 km E, 2800 km N), so a
mosaic always spans four tiles.  Products whose coverage misses the box get it centred on their coverage.

**Values** (:func:`raw_window`): a pure function of (seed, product, time step, pixel's global row and
column): smooth seeded fields evaluated in float64 on blocks of :data:`BLOCK` x :data:`BLOCK` pixels of the
global grid (anchored at row/column 0, so any window sees the same blocks), plus per-pixel noise that is a
hash of the pixel's global index (no random stream: the same pixel gets the same value whatever window is
computed).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["BLOCK", "EXTENTS", "Grid", "Var", "data_window", "grid_for", "raw_window", "var_for",
           "write_geotiff", "tile_window", "decode"]

UTC = dt.timezone.utc
EEA_CRS = "EPSG:3035"
#: Smooth fields are evaluated once per BLOCK x BLOCK pixels of the global grid (1/16 of the cost).
BLOCK = 4


def hash_int(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "little")


# --------------------------------------------------------------------------- encodings


@dataclass(frozen=True)
class Var:
    """How a product's main variable is encoded (raw integers, CF packing)."""

    name: str
    dtype: str
    scale: float
    offset: float
    fill: int
    vmin: int
    vmax: int
    units: str
    long_name: str
    classes: tuple[int, ...] = ()  # categorical: the raw values that occur


def decode(var: Var, raw: np.ndarray) -> np.ndarray:
    """CF decoding as xarray does it: float32 for 8/16-bit integers, scale then offset, fill -> NaN."""
    ftype = np.float32 if np.dtype(var.dtype).itemsize <= 2 else np.float64
    out = raw.astype(ftype)
    out *= ftype(var.scale)
    out += ftype(var.offset)
    out[raw == np.asarray(var.fill, dtype=var.dtype)] = np.nan
    return out


def var_for(spec: Any) -> Var:
    """The encoding of a raster product (datagen's tables; tiles get a name derived from the product)."""
    from . import datagen

    family = datagen._family_of(spec)
    if spec.pattern == "global_nc":
        return datagen._nc_var(family)
    base = datagen._tile_var(family)
    return Var(variable_name(spec), base.dtype, base.scale, base.offset, base.fill, base.vmin, base.vmax,
               base.units, base.long_name, base.classes)


def variable_name(spec: Any) -> str:
    """The variable of a GeoTIFF-only product: its short name (``FTY``, ``CLC``, ``TCD``, ``LC100``, ...)."""
    if spec.pattern == "global_nc":
        return var_for(spec).name
    name = re.sub(r"[^A-Za-z0-9_]", "_", spec.short_name or spec.key).upper()
    return name if name[:1].isalpha() else f"V{name}"


# --------------------------------------------------------------------------- grids


@dataclass(frozen=True)
class Grid:
    """A product's whole grid: pixel (row j, column i) has its centre at (x0 + i*res, y0 - j*res)."""

    crs: str
    res: float
    x0: float
    y0: float
    width: int
    height: int

    @property
    def geographic(self) -> bool:
        return self.crs == "EPSG:4326"

    def xs(self, c0: int, c1: int) -> np.ndarray:
        return self.x0 + np.arange(c0, c1, dtype=np.float64) * self.res

    def ys(self, r0: int, r1: int) -> np.ndarray:
        return self.y0 - np.arange(r0, r1, dtype=np.float64) * self.res

    def transform(self, r0: int, c0: int) -> Any:
        """The affine transform of a window whose top-left pixel is (r0, c0) (corner half a pixel out)."""
        from affine import Affine

        return Affine(self.res, 0.0, self.x0 + (c0 - 0.5) * self.res, 0.0, -self.res, self.y0 - (r0 - 0.5) * self.res)

    def window(self, bounds: Sequence[float]) -> tuple[int, int, int, int]:
        """(r0, r1, c0, c1): the pixels whose centres lie in ``bounds`` (closed: edges count), clipped to the grid."""
        w, s, e, n = (float(v) for v in bounds)
        eps = 1e-9
        c0 = max(0, math.ceil((w - self.x0) / self.res - eps))
        c1 = min(self.width, math.floor((e - self.x0) / self.res + eps) + 1)
        r0 = max(0, math.ceil((self.y0 - n) / self.res - eps))
        r1 = min(self.height, math.floor((self.y0 - s) / self.res + eps) + 1)
        return r0, max(r0, r1), c0, max(c0, c1)


def _meters_of(spec: Any) -> int | None:
    from . import datagen

    m = datagen._meters(spec.resolution)
    if m is None and spec.pattern.startswith("europe"):
        found = re.search(r"_(\d{3})m_", spec.template)
        m = int(found.group(1)) if found else None
    return m


def grid_for(spec: Any) -> Grid:
    """The product's real grid (see the module docstring)."""
    meters = _meters_of(spec)
    if spec.pattern.startswith("europe"):
        res = float(meters or 100)
        return Grid(EEA_CRS, res, res / 2, 5_600_000.0 - res / 2, int(7_600_000 // res), int(5_600_000 // res))
    if spec.pattern == "global_tiles":
        res = 1 / 1008
        return Grid("EPSG:4326", res, -180 + res / 2, 80 - res / 2, 360 * 1008, 140 * 1008)
    meters = meters or 1000
    if meters < 5000:  # CGLS: 1/336 (300 m), 1/112 (1 km), 1/3360 (30 m), ... centres on -180 / 80
        res = 1 / 336 / max(1, round(300 / meters)) if meters < 1000 else max(1, round(meters / 1000)) / 112
        return Grid("EPSG:4326", res, -180.0, 80.0, round(360 / res), round(140 / res))
    res = 0.05 * max(1, round(meters / 5000))  # 5 km: 0.05, 12.5 km: 0.1 degree; corner on -180 / 90
    return Grid("EPSG:4326", res, -180 + res / 2, 90 - res / 2, round(360 / res), round(180 / res))


# --------------------------------------------------------------------------- size classes: the data extent


@dataclass(frozen=True)
class Extent:
    box: tuple[float, float, float, float]  # lon/lat box of geographic products
    geo_px: int  # at most this many pixels a side (geographic)
    proj_px: int  # pixels a side of pan-European products (square around PROJ_CENTRE)


#: The corner of the EEA tiles E42N27..E43N28 (near Ulm, 9.7 E 48.3 N): pan-European data is centred there.
PROJ_CENTRE = (4_300_000.0, 2_800_000.0)
EXTENTS: dict[str, Extent] = {
    "tiny": Extent((4.0, 44.0, 11.0, 51.0), 1344, 1000),
    "small": Extent((-6.0, 39.0, 12.0, 52.0), 6100, 3000),
    "large": Extent((-11.0, 34.0, 31.0, 60.0), 15000, 8000),
}


def _overlap(a: Sequence[float], b: Sequence[float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


@lru_cache(maxsize=4096)
def _data_window(spec: Any, size: str) -> tuple[int, int, int, int]:
    ext = EXTENTS.get(size, EXTENTS["tiny"])
    grid = grid_for(spec)
    if spec.pattern.startswith("europe"):
        half = ext.proj_px * grid.res / 2
        cx, cy = PROJ_CENTRE
        return grid.window((cx - half + grid.res / 2, cy - half + grid.res / 2, cx + half - grid.res / 2,
                            cy + half - grid.res / 2))
    w, s, e, n = ext.box
    cov = tuple(float(v) for v in spec.bbox)
    if not _overlap(ext.box, cov):  # e.g. Pan-tropical: the same box, centred on the coverage
        cx, cy = (cov[0] + cov[2]) / 2, (cov[1] + cov[3]) / 2
        w, s, e, n = cx - (e - w) / 2, cy - (n - s) / 2, cx + (e - w) / 2, cy + (n - s) / 2
    side = ext.geo_px * grid.res
    cx, cy = (w + e) / 2, (s + n) / 2
    w, e = max(w, cx - side / 2), min(e, cx + side / 2)
    s, n = max(s, cy - side / 2), min(n, cy + side / 2)
    w, s, e, n = max(w, cov[0]), max(s, cov[1]), min(e, cov[2]), min(n, cov[3])
    # half a pixel in from the box's edges, so an edge on a pixel centre does not add a row
    h = grid.res / 2
    return grid.window((w + h, s + h, e - h, n - h))


def data_window(spec: Any, size: str) -> tuple[int, int, int, int]:
    """(r0, r1, c0, c1) of the product's grid that holds data in this size class (its files cover it)."""
    return _data_window(spec, size)


def tile_window(spec: Any, size: str, tile_bounds: Sequence[float]) -> tuple[int, int, int, int]:
    """The part of the data window inside one tile (tile bounds in the grid's CRS; may be empty)."""
    grid = grid_for(spec)
    h = grid.res / 2
    left, bottom, right, top = tile_bounds
    tr0, tr1, tc0, tc1 = grid.window((left + h, bottom + h, right - h, top - h))
    r0, r1, c0, c1 = data_window(spec, size)
    r0, r1, c0, c1 = max(r0, tr0), min(r1, tr1), max(c0, tc0), min(c1, tc1)
    return r0, max(r0, r1), c0, max(c0, c1)


# --------------------------------------------------------------------------- values


class Field:
    """A smooth, seeded random field: a sum of plane waves, evaluated element-wise in float64.

    Element-wise (no BLAS product, whose summation order depends on the matrix shape), so a pixel's value
    does not depend on the window it was computed in.
    """

    def __init__(self, seed: int, wavelength: float, waves: int = 12):
        rng = np.random.default_rng(seed)
        angle = rng.uniform(0, 2 * np.pi, waves)
        length = wavelength * rng.uniform(0.4, 2.5, waves)
        self.kx = 2 * np.pi * np.cos(angle) / length
        self.ky = 2 * np.pi * np.sin(angle) / length
        self.phase = rng.uniform(0, 2 * np.pi, waves)
        self.speed = rng.uniform(-3.0, 3.0, waves)  # radians per year
        self.amp = rng.uniform(0.5, 1.0, waves)

    def __call__(self, xs: np.ndarray, ys: np.ndarray, t: float = 0.0) -> np.ndarray:
        """Values in [0, 1] on the grid of ``xs`` (columns) x ``ys`` (rows)."""
        out = np.zeros((len(ys), len(xs)), dtype=np.float64)
        for k in range(len(self.kx)):
            a = np.outer(ys, [self.ky[k]]).ravel() + (self.phase[k] + self.speed[k] * t)
            b = xs * self.kx[k]
            # sin(a + b) = sin(a) cos(b) + cos(a) sin(b)
            out += (self.amp[k] * np.sin(a))[:, None] * np.cos(b)[None, :]
            out += (self.amp[k] * np.cos(a))[:, None] * np.sin(b)[None, :]
        out *= 1.0 / math.sqrt(float(np.sum(self.amp**2)) / 2)
        np.tanh(out, out=out)
        return out * 0.5 + 0.5


@lru_cache(maxsize=64)
def _field(seed: int, wavelength: float) -> Field:
    return Field(seed, wavelength)


#: Rough lon/lat boxes of European land (EEA38 + UK), to keep tiles off the open sea.
EUROPE_LAND = (
    (-9.6, 36.0, 3.4, 43.8),  # Iberia
    (-5.0, 42.3, 8.3, 51.1),  # France
    (-10.6, 50.0, 1.8, 58.7),  # Britain, Ireland
    (2.5, 45.8, 24.2, 55.1),  # Benelux, Germany, central Europe
    (4.5, 55.3, 31.6, 71.2),  # Scandinavia, Finland
    (6.6, 37.9, 18.6, 47.1),  # Italy
    (8.1, 36.6, 15.7, 41.3),  # Sardinia, Sicily
    (13.3, 39.6, 30.0, 49.0),  # Balkans
    (19.5, 34.8, 28.3, 41.8),  # Greece
    (14.0, 49.0, 28.3, 59.7),  # Poland, Baltics
    (26.0, 36.0, 44.8, 42.1),  # Turkey
    (32.2, 34.5, 34.6, 35.7),  # Cyprus
    (-24.5, 63.3, -13.5, 66.6),  # Iceland
    (-18.2, 27.6, -13.4, 29.5),  # Canary Islands
    (-31.3, 36.9, -25.0, 39.8),  # Azores
)


def on_land(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    hit = np.zeros(np.shape(lon), dtype=bool)
    for w, s, e, n in EUROPE_LAND:
        hit |= (lon >= w) & (lon <= e) & (lat >= s) & (lat <= n)
    return hit


def _years(t: dt.datetime) -> float:
    return (t - dt.datetime(2000, 1, 1, tzinfo=UTC)).total_seconds() / (365.25 * 86400)


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, element-wise on uint64."""
    with np.errstate(over="ignore"):
        h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return h ^ (h >> np.uint64(31))


def pixel_noise(seed: int, rows: np.ndarray, cols: np.ndarray, k: int) -> np.ndarray:
    """Integers in [-k, k] that are a hash of (seed, global row, global column): window-independent."""
    with np.errstate(over="ignore"):
        h = (rows.astype(np.uint64)[:, None] * np.uint64(0x9E3779B97F4A7C15)
             + cols.astype(np.uint64)[None, :] * np.uint64(0xC2B2AE3D27D4EB4F) + np.uint64(seed & (2**64 - 1)))
    return (_mix(h) % np.uint64(2 * k + 1)).astype(np.int64) - k


def _smooth(grid: Grid, r0: int, r1: int, c0: int, c1: int, fn: Any) -> np.ndarray:
    """``fn(xs, ys)`` on the BLOCK x BLOCK blocks of the global grid under a window, repeated to its pixels."""
    b0, b1 = r0 // BLOCK, (r1 - 1) // BLOCK + 1
    a0, a1 = c0 // BLOCK, (c1 - 1) // BLOCK + 1
    centre = (BLOCK - 1) / 2
    xs = grid.x0 + (np.arange(a0, a1, dtype=np.float64) * BLOCK + centre) * grid.res
    ys = grid.y0 - (np.arange(b0, b1, dtype=np.float64) * BLOCK + centre) * grid.res
    coarse = fn(xs, ys)
    full = np.repeat(np.repeat(coarse, BLOCK, axis=0), BLOCK, axis=1)
    return full[r0 - b0 * BLOCK: r1 - b0 * BLOCK, c0 - a0 * BLOCK: c1 - a0 * BLOCK]


def raw_window(seed: int, spec: Any, start: dt.datetime, window: Sequence[int], var: Var | None = None) -> np.ndarray:
    """The stored integers of one time step over a window (r0, r1, c0, c1) of the product's grid.

    A pure function of (seed, product, time step, pixel): any window gives the same value at the same pixel.
    """
    var = var or var_for(spec)
    grid = grid_for(spec)
    r0, r1, c0, c1 = (int(v) for v in window)
    if r1 <= r0 or c1 <= c0:
        return np.zeros((max(0, r1 - r0), max(0, c1 - c0)), dtype=var.dtype)
    t = _years(start)
    key = spec.key

    def seeded(what: str, wavelength: float) -> Field:
        return _field(hash_int(seed, key, what), wavelength)

    if grid.geographic and spec.pattern == "global_nc":
        def value_fn(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
            v = 0.7 * seeded("value", 90.0)(xs, ys, t) + 0.3 * seeded("detail", 15.0)(xs, ys, t)
            if not var.classes:  # a seasonal cycle, opposite in the two hemispheres
                v *= (1.0 - 0.5 * np.abs(ys) / 90.0)[:, None]
                v += (0.2 * math.cos(2 * math.pi * (t % 1.0)) * np.sin(np.radians(ys)))[:, None]
                np.clip(v, 0, 1, out=v)
            return v

        def valid_fn(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
            land = 0.75 * _field(hash_int(seed, "land"), 140.0)(xs, ys) + \
                0.25 * _field(hash_int(seed, "coast"), 20.0)(xs, ys)
            land = (land > 0.45) | on_land(*np.meshgrid(xs, ys))  # Europe is land: European queries find data
            return land & (_field(hash_int(seed, "lakes"), 1.5)(xs, ys) < 0.85)  # with a few lakes
    else:
        scale = 900_000.0 if not grid.geographic else 60.0

        def value_fn(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
            return 0.6 * seeded("value", scale)(xs, ys, t) + 0.4 * seeded("detail", scale / 15)(xs, ys, t)

        def valid_fn(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
            # nodata in patches tens of km wide (shared by every layer, like a coverage mask)
            return _field(hash_int(seed, "mask", grid.crs), scale / 6)(xs, ys) > 0.15

    value = _smooth(grid, r0, r1, c0, c1, value_fn)
    valid = _smooth(grid, r0, r1, c0, c1, valid_fn)
    if var.classes:
        idx = np.minimum((value * len(var.classes)).astype(np.int64), len(var.classes) - 1)
        raw = np.asarray(var.classes, dtype=np.int64)[idx]
    else:
        span = var.vmax - var.vmin
        raw = var.vmin + np.rint(value * span).astype(np.int64)
        if span >= 20:
            k = max(1, span // 100)
            raw += pixel_noise(hash_int(seed, key, start.isoformat()), np.arange(r0, r1), np.arange(c0, c1), k)
        raw = np.clip(raw, var.vmin, var.vmax)
    return np.where(valid, raw, var.fill).astype(np.dtype(var.dtype))


def crs_wkt(crs: str) -> str:
    from pyproj import CRS

    return CRS.from_user_input(crs).to_wkt()


# --------------------------------------------------------------------------- GeoTIFF / COG writer


def write_geotiff(path: Path, raw: np.ndarray, grid: Grid, r0: int, c0: int, var: Var, tags: Mapping[str, str],
                  cog: bool, block: int) -> None:
    """``raw`` (the window whose top-left pixel is (r0, c0)) as a GeoTIFF or a COG, with the product's metadata:
    band description = variable name, scale/offset, units, nodata, and the long name and flag values as tags."""
    import rasterio

    profile: dict[str, Any] = dict(width=raw.shape[1], height=raw.shape[0], count=1, dtype=raw.dtype.name,
                                   crs=grid.crs, transform=grid.transform(r0, c0), nodata=var.fill)
    if cog:
        profile.update(driver="COG", compress="DEFLATE", level=1, blocksize=block, overviews="AUTO",
                       overview_resampling="nearest" if var.classes else "average")
    else:
        profile.update(driver="GTiff", compress="LZW")
        if min(raw.shape) >= 256:
            profile.update(tiled=True, blockxsize=256, blockysize=256)
    band_tags = {"long_name": var.long_name, "units": var.units}
    if var.classes:
        band_tags["flag_values"] = " ".join(str(v) for v in sorted(set(var.classes)))
    with rasterio.Env(GDAL_PAM_ENABLED="NO", GDAL_NUM_THREADS="1"):
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(raw, 1)
            dst.scales = (var.scale,)
            dst.offsets = (var.offset,)
            dst.units = (var.units,)
            dst.set_band_description(1, var.name)
            dst.update_tags(1, **band_tags)
            dst.update_tags(AREA_OR_POINT="Area", **dict(tags))
