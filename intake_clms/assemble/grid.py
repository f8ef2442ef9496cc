"""The crop rule, in one place: a request keeps the pixels whose *centres* lie in its bbox.

Why one module: the same request is answered from NetCDF coordinates, from GeoTIFF
geotransforms and from COG windows read remotely; if each path had its own rounding
the crops would differ by a row or a column (they did: 600 x 800 against 526 x 736).
Every path asks this module, so every path crops alike.

The bbox is in lon/lat degrees.  For a projected grid it becomes the rectangle
``transform_bounds(EPSG:4326 -> CRS, densify_pts=21)`` of the bbox (clipped to the CRS's
area of use first; a bbox that covers all of the data means "all of it", never a
projection of the poles).  A pixel whose centre lies on an edge is inside (a tolerance
of :data:`TOLERANCE` pixel absorbs float noise of stored coordinates).  A bbox narrower
than a pixel (a point's time series) keeps, along that axis, the pixel holding the
bbox's middle.
"""

from __future__ import annotations

import functools

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

#: Fraction of a pixel by which a centre may lie outside the bbox and still count as inside.
TOLERANCE = 1e-6
WORLD = (-180.0, -90.0, 180.0, 90.0)
GEOGRAPHIC = ("EPSG:4326", "OGC:CRS84")


def is_geographic(crs: Any) -> bool:
    """Whether a CRS (anything rasterio/pyproj reads) is lon/lat; None counts as lon/lat (CF default)."""
    if crs is None:
        return True
    if str(crs).upper() in GEOGRAPHIC:
        return True
    if isinstance(crs, str):  # a header's WKT: parsed once per process, not once per product of a series
        return _geographic(crs)
    from pyproj import CRS

    return bool(CRS.from_user_input(crs).is_geographic)


@functools.lru_cache(maxsize=64)
def _geographic(crs: str) -> bool:
    from pyproj import CRS

    return bool(CRS.from_user_input(crs).is_geographic)


def bbox_in(crs: Any, bbox: Sequence[float] | None, footprint: Sequence[float] | None = None) -> tuple[float, ...] | None:
    """The lon/lat bbox as a rectangle in ``crs`` (None: no crop).

    ``footprint`` is the data's own extent in ``crs``: a bbox covering all of it (in lon/lat) means no
    crop.  Otherwise the bbox is clipped to the CRS's area of use (a world-wide corner has no meaning in
    EPSG:3035) and transformed as a rectangle, ``transform_bounds(EPSG:4326 -> crs, densify_pts=21)``.
    """
    if bbox is None or tuple(float(v) for v in bbox) == WORLD:
        return None
    if is_geographic(crs):
        return tuple(float(v) for v in bbox)
    from pyproj import CRS
    from rasterio.warp import transform_bounds

    west, south, east, north = (float(v) for v in bbox)
    if footprint is not None:
        fw, fs, fe, fn = transform_bounds(crs, "EPSG:4326", *footprint, densify_pts=21)
        if west <= fw and south <= fs and east >= fe and north >= fn:
            return None
    area = CRS.from_user_input(crs).area_of_use
    if area is not None:
        west, south, east, north = max(west, area.west), max(south, area.south), min(east, area.east), min(north, area.north)
        if west >= east or south >= north:
            return (0.0, 0.0, 0.0, 0.0)  # outside where the CRS means anything: an empty crop, refused by the caller
    return tuple(transform_bounds("EPSG:4326", crs, west, south, east, north, densify_pts=21))


def axis_range(origin: float, step: float, size: int, low: float, high: float) -> tuple[int, int]:
    """[first, stop) of the pixels ``origin + (i + 0.5) * step`` (i < size) that lie in [low, high]."""
    if step == 0:
        return 0, size
    a = (low - origin) / step - 0.5
    b = (high - origin) / step - 0.5
    lo, hi = min(a, b), max(a, b)
    first = min(size, max(0, math.ceil(lo - TOLERANCE)))
    stop = min(size, math.floor(hi + TOLERANCE) + 1)
    if stop <= first and hi + 0.5 > 0 and lo + 0.5 < size:  # narrower than a pixel, on the grid: the middle's pixel
        middle = min(size - 1, max(0, math.floor((lo + hi) / 2 + 0.5)))
        return middle, middle + 1
    return first, max(first, stop)


def centre_window(transform: Any, width: int, height: int, box: Sequence[float] | None) -> tuple[int, int, int, int]:
    """(row, col, height, width) of the grid's pixels whose centres lie in ``box`` (in the grid's CRS)."""
    if box is None:
        return 0, 0, height, width
    west, south, east, north = box
    c0, c1 = axis_range(transform.c, transform.a, width, west, east)
    r0, r1 = axis_range(transform.f, transform.e, height, south, north)
    return r0, c0, r1 - r0, c1 - c0


def coord_range(values: np.ndarray, low: float, high: float) -> slice:
    """The index slice of the centres in ``values`` (regular, either direction) lying in [low, high]."""
    n = int(values.size)
    if n == 0:
        return slice(0, 0)
    step = float(values[1] - values[0]) if n > 1 else 1.0
    first, stop = axis_range(float(values[0]) - 0.5 * step, step, n, low, high)
    return slice(first, stop)


def canonical(first: float, step: float, count: int) -> np.ndarray:
    """``count`` pixel centres from the ``first`` one, ``step`` apart, computed so that every path gets the same
    floats: the step is snapped to the nearest fraction with a denominator up to 10^5 when that is within
    1e-9 of it (1/336 degree, 100 m), and the centres are ``(n + k) * step`` where ``n`` is the first centre in
    pixel units, its fraction rounded to 1e-6 pixel.  A geotransform and stored coordinates of one grid,
    which differ in their last bits, then give identical coordinates (``xr.align`` works across paths)."""
    from fractions import Fraction

    if step == 0 or not math.isfinite(step):
        return np.full(count, float(first))
    snapped = float(Fraction(step).limit_denominator(100_000))
    step = snapped if abs(snapped - step) <= 1e-9 * abs(step) else float(f"{step:.12g}")
    units = first / step
    whole = math.floor(units)
    start = whole + round(units - whole, 6)
    return (start + np.arange(count, dtype="float64")) * step


def centres(origin: float, step: float, first: int, count: int) -> np.ndarray:
    """Pixel-centre coordinates ``origin + (i + 0.5) * step`` for i in [first, first + count), canonical."""
    return canonical(origin + (first + 0.5) * step, step, count)


def regular(values: np.ndarray, step: float | None = None) -> np.ndarray:
    """Stored centre coordinates made canonical (``step``: the grid's, needed for a single pixel)."""
    n = int(values.size)
    if n == 0:
        return values.astype("float64")
    if n > 1:
        step = (float(values[-1]) - float(values[0])) / (n - 1)
    return canonical(float(values[0]), step or 0.0, n)
