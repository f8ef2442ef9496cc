"""Turning published files into one lazy, dask-backed ``xarray.Dataset``, or one ``GeoDataFrame``.

NetCDF time steps are stacked along a sorted ``time``; GeoTIFF tiles are
mosaicked by their geotransforms (their coordinates), never by file names,
after checking that CRS and resolution agree.  Everything is cropped lazily
to the request's bbox and carries its CRS (rioxarray + CF grid mapping); CF
scale factors and fill values are decoded by xarray, the encoding keeps the
native dtype.

Vector products (GeoJSON, GeoPackage, shapefile, FlatGeobuf) are read with
geopandas (pyogrio) into one ``GeoDataFrame``, concatenated over products: the
features whose geometry intersects the request's bbox (a lon/lat rectangle, tested
in lon/lat whatever the file's CRS), in the request's dates when the data has a
time column, else stamped with their product's time; the file's CRS is kept.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .errors import IntegrityError

log = logging.getLogger(__name__)

NETCDF = (".nc", ".nc4", ".cdf")
GEOTIFF = (".tif", ".tiff")
VECTOR = (".geojson", ".gpkg", ".shp", ".fgb")
DATA_SUFFIXES = NETCDF + GEOTIFF + VECTOR
#: Columns taken as a feature's own time (case-insensitive, first match), before the product's time.
TIME_COLUMNS = ("time", "datetime", "date", "timestamp")
WGS84 = "EPSG:4326"


def _suffix_kind(path: Path) -> str | None:
    suffix = path.suffix.lower()
    if suffix in NETCDF:
        return "netcdf"
    if suffix in GEOTIFF:
        return "geotiff"
    return "vector" if suffix in VECTOR else None


def data_kind(paths: Sequence[Path]) -> str:
    """``netcdf``, ``geotiff`` or ``vector`` by name (the data files of one product set must share one kind)."""
    kinds = {k for k in map(_suffix_kind, paths) if k is not None}
    if not kinds:
        raise IntegrityError("the products hold no NetCDF, GeoTIFF or vector file")
    if len(kinds) > 1:
        raise IntegrityError(f"the products mix {', '.join(sorted(kinds))} files; cannot assemble one dataset")
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


# --------------------------------------------------------------------------- vector products


def _spatial_layers(path: Path) -> list[str]:
    """The layers of a file that hold geometries (a GeoPackage may also hold plain tables)."""
    import pyogrio

    layers = [str(name) for name, geom in pyogrio.list_layers(path) if geom is not None]
    if not layers:
        raise IntegrityError(f"{path} holds no layer with geometries")
    return layers


def _prefilter_window(bbox: Sequence[float], crs: Any) -> tuple[float, float, float, float] | None:
    """The lon/lat bbox's envelope in the layer's CRS (for the reader's spatial index), clipped to the
    CRS's area of use; None when it cannot be computed (the exact test after reading still applies)."""
    from pyproj import CRS, Transformer

    target = CRS.from_user_input(crs)
    west, south, east, north = bbox
    area = target.area_of_use
    if area is not None:
        west, south = max(west, area.west), max(south, area.south)
        east, north = min(east, area.east), min(north, area.north)
        if west >= east or south >= north:
            return None
    try:
        to_layer = Transformer.from_crs(WGS84, target, always_xy=True)
        box = to_layer.transform_bounds(west, south, east, north, densify_pts=21)
    except Exception:  # noqa: BLE001 - a CRS pyproj cannot bound: read everything, filter exactly after
        return None
    return box if all(np.isfinite(box)) else None


def _time_column(frame: Any) -> str | None:
    """The first column named like a time (:data:`TIME_COLUMNS`) whose values read as times."""
    import pandas as pd

    by_lower = {str(c).lower(): c for c in frame.columns if c != frame.geometry.name}
    for name in TIME_COLUMNS:
        column = by_lower.get(name)
        if column is None:
            continue
        values = frame[column]
        if pd.api.types.is_datetime64_any_dtype(values):
            return column
        if not (pd.api.types.is_object_dtype(values) or pd.api.types.is_string_dtype(values)):
            continue  # numbers (a year, a count) are no instants to compare with dates
        parsed = pd.to_datetime(values, errors="coerce", utc=True, format="mixed") if len(values) else values
        if len(values) and parsed.notna().sum() == values.notna().sum():
            return column
    return None


def _in_period(frame: Any, column: str, period: tuple[Any, Any]) -> Any:
    """Rows whose time falls in [start, end] (whole days, UTC); rows without a time are kept."""
    import pandas as pd

    when = pd.to_datetime(frame[column], errors="coerce", utc=True, format="mixed")
    start, end = period
    keep = pd.Series(True, index=frame.index)
    if start is not None:
        keep &= when.isna() | (when >= pd.Timestamp(start, tz="UTC"))
    if end is not None:
        keep &= when.isna() | (when < pd.Timestamp(end, tz="UTC") + pd.Timedelta(days=1))
    return keep


def _read_vector_file(path: Path, when: str | None, bbox: Sequence[float] | None, period: tuple[Any, Any]) -> list[Any]:
    """The features of one file (each spatial layer) inside bbox and period, as GeoDataFrames."""
    import geopandas as gpd
    import pyogrio
    from shapely.geometry import box

    from .mosaic import parse_time

    layers = _spatial_layers(path)
    frames = []
    for layer in layers:
        crs = pyogrio.read_info(path, layer=layer).get("crs") or WGS84  # GeoJSON's default; a .shp without .prj
        window = _prefilter_window(bbox, crs) if bbox is not None else None
        frame = gpd.read_file(path, layer=layer, bbox=window, engine="pyogrio")
        if frame.crs is None:
            frame = frame.set_crs(crs)
        if bbox is not None:
            lonlat = frame.geometry if frame.crs.equals(WGS84) else frame.geometry.to_crs(WGS84)
            frame = frame[lonlat.intersects(box(*bbox)).to_numpy()]
        column = _time_column(frame)
        if column is not None:
            frame = frame[_in_period(frame, column, period).to_numpy()]
        elif "time" not in frame.columns:  # never over a column of the data's own
            stamp = parse_time(when)
            frame = frame.assign(time=np.datetime64("NaT", "ns") if stamp is None else np.datetime64(stamp, "ns"))
        if len(layers) > 1:
            frame = frame.assign(layer=layer)
        frames.append(frame)
    return frames


def open_vector(files: Sequence[Path], times: Sequence[str | None], bbox: Sequence[float] | None,
                period: tuple[Any, Any] = (None, None)) -> Any:
    """One GeoDataFrame of every file's features in bbox (lon/lat) and period, in the first file's CRS.

    ``times`` are the products' times (one per file): a file without a time column gets a ``time``
    column from its product (unless it has a column of that name); one with a time column
    (``time``, ``datetime``, ``date``, ``timestamp``: datetimes or ISO text) keeps its rows within
    ``period`` (dates, both ends included, either may be None).  A file without a CRS is taken as
    EPSG:4326; files in another CRS than the first are reprojected to it, so the frame has one CRS.
    """
    import geopandas as gpd
    import pandas as pd

    if len(files) != len(times):
        raise IntegrityError(f"{len(files)} vector files but {len(times)} dates")
    frames = [f for path, when in zip(files, times) for f in _read_vector_file(Path(path), when, bbox, period)]
    crs = frames[0].crs
    frames = [f if f.crs is None or f.crs.equals(crs) else f.to_crs(crs) for f in frames]
    merged = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0].reset_index(drop=True)
    if merged.empty and bbox is not None:  # say why: an area outside the data is not an area without features
        log.warning("no feature in bbox %s%s: the products' features lie within %s (lon/lat)", [float(v) for v in bbox],
                    " and the dates" if any(period) else "", _lonlat_extent(files))
    return gpd.GeoDataFrame(merged, geometry=frames[0].geometry.name, crs=crs)


def _lonlat_extent(files: Sequence[Path]) -> list[float]:
    """[west, south, east, north] of every feature of the files, in degrees (from their headers)."""
    import pyogrio
    from pyproj import CRS, Transformer

    boxes = []
    for path in files:
        for layer in _spatial_layers(Path(path)):
            info = pyogrio.read_info(path, layer=layer, force_total_bounds=True)
            to_lonlat = Transformer.from_crs(CRS.from_user_input(info.get("crs") or WGS84), WGS84, always_xy=True)
            boxes.append(to_lonlat.transform_bounds(*info["total_bounds"]))
    return [round(f(b[i] for b in boxes), 4) for i, f in enumerate((min, min, max, max))] if boxes else []


def open_files(kind: str, files: Sequence[Path], times: Sequence[str | None], bbox: Sequence[float],
               chunks: Any = None, index_dir: Path | None = None, period: tuple[Any, Any] = (None, None)) -> Any:
    """Open one request's data files (no network): NetCDF stacked in time, a GeoTIFF mosaic per date
    (both ``xarray.Dataset``), or vector features (a ``GeoDataFrame``; ``period`` filters their times)."""
    if kind == "netcdf":
        return open_netcdf(files, bbox, chunks if chunks is not None else {})
    if kind == "geotiff":
        return open_geotiff(files, times, bbox, chunks if chunks is not None else True, index_dir=index_dir)
    if kind == "vector":
        return open_vector(files, times, bbox, period)
    raise IntegrityError(f"cannot open {kind!r} data")
