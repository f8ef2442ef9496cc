"""What a request must return, computed from the sandbox's one array per product (for tests).

Why: every client path (WEkEO NetCDF, CLMS API cut-outs and tiles, CDSE NetCDF and COG downloads, CDSE
window reads) is compared with one reference; this module builds it straight from :mod:`.rasters`, without
reading any file the sandbox serves, so a test that compares a path with it checks the path, not the files.

The contract it encodes:

* variables: the product's NetCDF name (``NDVI``, ``LAI``, ...); a GeoTIFF-only product's variable is its
  short name upper-cased (``FTY``, ``CLC``, ``TCD``, ``LC100``: :func:`.rasters.variable_name`), the
  band description of its GeoTIFFs and COGs;
* dims ``time`` first, then ``lat``/``lon`` (geographic) or ``y``/``x`` (projected), pixel centres,
  north-up (``lat``/``y`` descending);
* the crop: the pixels whose centres lie in the bbox (closed: a centre on an edge is in); for a projected
  product the lon/lat bbox is first transformed as a rectangle,
  ``rasterio.warp.transform_bounds("EPSG:4326", crs, *bbox, densify_pts=21)``; only pixels of the size
  class's data extent count (files hold nothing else);
* values decoded (``raw * scale_factor + add_offset`` in float32 for 8/16-bit integers, fill -> NaN), or
  the stored integers with ``decode=False`` (``scale_factor``, ``add_offset``, ``_FillValue`` then in attrs);
* time: the product's nominal start (a time step's start; a static product's ``nominal`` date);
* attributes ``units``, ``long_name``, ``flag_values`` (classes) and ``grid_mapping``; a ``spatial_ref``
  coordinate with the CRS as ``crs_wkt`` (CF grid mapping, as rioxarray writes it).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Sequence

import numpy as np

from . import rasters

__all__ = ["reference", "time_steps"]


def time_steps(store: Any, dataset_key: str, start: Any, end: Any,
               bbox: Sequence[float] | None = None) -> list[tuple[dt.datetime, np.datetime64]]:
    """(step start, the time coordinate) of every time step of a request."""
    spec = store._data_spec(store.dataset(dataset_key))
    out = []
    for s in store.step_starts_between(spec.key, start, end, bbox):
        when = dt.datetime(spec.nominal.year, spec.nominal.month, spec.nominal.day) \
            if spec.frequency == "static" and spec.nominal else s.replace(tzinfo=None)
        out.append((s, np.datetime64(when, "ns")))
    return out


def reference(store: Any, dataset_key: str, bbox: Sequence[float], start: Any = None, end: Any = None,
              decode: bool = True) -> Any:
    """The Dataset a request (``dataset_key``, lon/lat ``bbox``, [start, end]) must return under the contract."""
    import xarray as xr

    spec = store._data_spec(store.dataset(dataset_key))
    grid = rasters.grid_for(spec)
    var = rasters.var_for(spec)
    window = store.crop_window(spec.key, bbox)
    r0, r1, c0, c1 = window if window is not None else (0, 0, 0, 0)
    steps = time_steps(store, spec.key, start, end, bbox)
    raw = np.stack([store.raw(spec.key, s, (r0, r1, c0, c1)) for s, _ in steps]) if steps else \
        np.zeros((0, r1 - r0, c1 - c0), dtype=var.dtype)
    ydim, xdim = ("lat", "lon") if grid.geographic else ("y", "x")
    attrs: dict[str, Any] = {"long_name": var.long_name, "units": var.units, "grid_mapping": "spatial_ref"}
    if var.classes:
        attrs["flag_values"] = np.array(sorted(set(var.classes)), dtype=var.dtype)
    if decode:
        data = rasters.decode(var, raw)
    else:
        data = raw
        ftype = np.float32 if np.dtype(var.dtype).itemsize <= 2 else np.float64
        attrs.update(scale_factor=ftype(var.scale), add_offset=ftype(var.offset),
                     _FillValue=np.asarray(var.fill, dtype=var.dtype)[()])
    wkt = rasters.crs_wkt(grid.crs)
    coords = {"time": [t for _, t in steps], ydim: grid.ys(r0, r1), xdim: grid.xs(c0, c1),
              "spatial_ref": ((), np.int32(0), {"crs_wkt": wkt, "spatial_ref": wkt})}
    da = xr.DataArray(data, dims=("time", ydim, xdim), attrs=attrs)
    return xr.Dataset({var.name: da}, coords=coords, attrs={"dataset": spec.key})
