"""Turning published files into one lazy, dask-backed ``xarray.Dataset``.

NetCDF time steps are stacked along a sorted ``time``; GeoTIFF tiles are
mosaicked by their geotransforms (their coordinates), never by file names,
after checking that CRS and resolution agree.  Everything is cropped lazily
to the request's bbox and carries its CRS (rioxarray + CF grid mapping); CF
scale factors and fill values are decoded by xarray, the encoding keeps the
native dtype.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .errors import IntegrityError

NETCDF = (".nc", ".nc4", ".cdf")
GEOTIFF = (".tif", ".tiff")
DATA_SUFFIXES = NETCDF + GEOTIFF


def data_kind(paths: Sequence[Path]) -> str:
    """``netcdf`` or ``geotiff`` (the data files of one product set must share one kind)."""
    kinds = {"netcdf" if p.suffix.lower() in NETCDF else "geotiff" for p in paths if p.suffix.lower() in DATA_SUFFIXES}
    if not kinds:
        raise IntegrityError("the products hold no NetCDF or GeoTIFF file")
    if len(kinds) > 1:
        raise IntegrityError("the products mix NetCDF and GeoTIFF files; cannot assemble one Dataset")
    return kinds.pop()


def _crop_slice(values: np.ndarray, low: float, high: float) -> slice:
    """A label slice selecting [low, high] whatever the coordinate's direction."""
    return slice(low, high) if values.size < 2 or values[0] <= values[-1] else slice(high, low)


def _xy_names(ds: xr.Dataset | xr.DataArray) -> tuple[str, str]:
    for x, y in (("lon", "lat"), ("longitude", "latitude"), ("x", "y")):
        if x in ds.dims and y in ds.dims:
            return x, y
    raise IntegrityError(f"cannot find the spatial dimensions among {list(ds.dims)}")


def _grid_crs(ds: xr.Dataset) -> Any:
    """The CRS named by the CF grid mapping (crs_wkt / spatial_ref), default WGS 84 for lon/lat grids."""
    for name in ds.variables:
        attrs = ds[name].attrs
        if "grid_mapping_name" in attrs:
            return attrs.get("crs_wkt") or attrs.get("spatial_ref") or "EPSG:4326"
    return "EPSG:4326"


#: netCDF4's ``nc_open`` is not thread-safe (HDF5 is not built thread-safe) and xarray does not lock the
#: open itself, only later reads: concurrent preloads in one process opening their views at once
#: crashed with SIGBUS (bench/overlap_bench.py).  Our opens take turns.
_OPEN_LOCK = threading.Lock()


def open_netcdf(files: Sequence[Path], bbox: Sequence[float], chunks: Any = "auto") -> xr.Dataset:
    """Stack time steps along sorted ``time``, crop lazily to bbox (lon/lat), attach the CRS."""
    with _OPEN_LOCK:
        return _open_netcdf(files, bbox, chunks)


def _open_netcdf(files: Sequence[Path], bbox: Sequence[float], chunks: Any) -> xr.Dataset:
    import rioxarray  # noqa: F401  (registers .rio)

    west, south, east, north = bbox

    def crop(ds: xr.Dataset) -> xr.Dataset:
        x, y = _xy_names(ds)
        return ds.sel({x: _crop_slice(ds[x].values, west, east), y: _crop_slice(ds[y].values, south, north)})

    ds = xr.open_mfdataset(
        [str(f) for f in files],
        combine="nested",
        concat_dim="time",
        data_vars="minimal",
        coords="minimal",
        compat="override",
        join="override",
        combine_attrs="drop_conflicts",  # the product's attrs are what all steps share, not the first step's
        preprocess=crop,
        chunks=chunks,
        parallel=False,
    )
    if "time" in ds.indexes:
        ds = ds.sortby("time")
    x, y = _xy_names(ds)
    crs = _grid_crs(ds)
    ds = ds.rio.set_spatial_dims(x_dim=x, y_dim=y).rio.write_crs(crs)
    return ds


def _geotiff_dates(files: Sequence[Path], times: Sequence[str | None]) -> list[tuple[Any, list[Path]]]:
    """The tiles grouped by date (parsed, so two spellings of one instant are one date)."""
    from .mosaic import parse_time

    if len(files) != len(times):
        raise IntegrityError(f"{len(files)} GeoTIFF files but {len(times)} dates")
    by_time: dict[Any, list[Path]] = {}
    for path, when in zip(files, times):
        by_time.setdefault(parse_time(when), []).append(Path(path))
    return list(by_time.items())


def _label(when: Any) -> str:
    return "static" if when is None else str(np.datetime_as_string(when, unit="s"))


def index_geotiff(files: Sequence[Path], times: Sequence[str | None], index_dir: Path | None = None) -> list[Path]:
    """Check each date's tiles and write its VRT index into ``index_dir``; the paths written.

    For the publish stage (in the view's staging folder: the indexes hold relative paths, and
    staging and views lie at the same depth, so the rename keeps them valid), so that opening
    a published view never writes.
    """
    from . import mosaic

    built = [mosaic.open_mosaic(paths, label=_label(when), index_dir=index_dir)
             for when, paths in _geotiff_dates(files, times)]
    return [m.vrt for m in built if m.vrt is not None]


def open_geotiff(files: Sequence[Path], times: Sequence[str | None], bbox: Sequence[float],
                 chunks: Any = True, index_dir: Path | None = None) -> xr.Dataset:
    """Mosaic the tiles of each date by their geotransforms, crop lazily to bbox, stack dates along ``time``.

    Tiles must agree on CRS, resolution, dtype, nodata and pixel grid (:mod:`.mosaic` checks and
    names the odd tile); the native dtype and nodata are kept (``_FillValue`` / ``rio.nodata``, no
    float conversion).  Each date's VRT index is reused from, or else written to, the tiles' folder
    (kept in memory if that folder is read-only).  Reading a window opens only the tiles under it.
    """
    from rasterio.warp import transform_bounds

    from . import mosaic

    groups = [(when, mosaic.open_mosaic(paths, label=_label(when), index_dir=index_dir))
              for when, paths in _geotiff_dates(files, times)]
    crs = groups[0][1].crs
    window = None
    if bbox is not None and crs is not None:
        # Clip the request to the tiles' own lon/lat footprint first: a world-wide bbox has no
        # meaning in a regional CRS such as EPSG:3035 (it would project to nonsense).
        bounds = [m.bounds() for _, m in groups]
        union = (min(b[0] for b in bounds), min(b[1] for b in bounds),
                 max(b[2] for b in bounds), max(b[3] for b in bounds))
        foot = transform_bounds(crs, "EPSG:4326", *union, densify_pts=21)
        west, south = max(bbox[0], foot[0]), max(bbox[1], foot[1])
        east, north = min(bbox[2], foot[2]), min(bbox[3], foot[3])
        if west >= east or south >= north:
            raise IntegrityError(f"no tile overlaps the requested bbox {list(bbox)}; "
                                 f"the tiles cover {[round(v, 6) for v in foot]} (lon/lat)")
        if (west, south, east, north) != tuple(foot):
            window = transform_bounds("EPSG:4326", crs, west, south, east, north, densify_pts=21)
    data = mosaic.stack(groups, window, chunks)
    return data.to_dataset()


def open_files(kind: str, files: Sequence[Path], times: Sequence[str | None], bbox: Sequence[float],
               chunks: Any = None, index_dir: Path | None = None) -> xr.Dataset:
    """Open one request's data files (no network): NetCDF stacked in time, or a GeoTIFF mosaic per date."""
    if kind == "netcdf":
        return open_netcdf(files, bbox, chunks if chunks is not None else {})
    if kind == "geotiff":
        return open_geotiff(files, times, bbox, chunks if chunks is not None else True, index_dir=index_dir)
    raise IntegrityError(f"cannot open {kind!r} data as an xarray Dataset")
