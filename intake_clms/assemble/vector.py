"""Vector products (GeoJSON, GeoPackage, shapefile, FlatGeobuf) read into one ``GeoDataFrame``.

Read with geopandas (pyogrio) and concatenated over products: the features whose
geometry intersects the request's bbox (a lon/lat rectangle, tested in lon/lat
whatever the file's CRS), in the request's dates when the data has a time column,
else stamped with their product's time; the file's CRS is kept.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import IntegrityError

log = logging.getLogger(__name__)

#: Columns taken as a feature's own time (case-insensitive, first match), before the product's time.
TIME_COLUMNS = ("time", "datetime", "date", "timestamp")
WGS84 = "EPSG:4326"


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
