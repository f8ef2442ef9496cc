"""Turning published files into one lazy, dask-backed ``xarray.Dataset``.

NetCDF time steps are stacked along a sorted ``time``; GeoTIFF tiles are
mosaicked by their geotransforms (their coordinates), never by file names,
after checking that CRS and resolution agree.  Everything is cropped lazily
to the request's bbox and carries its CRS (rioxarray + CF grid mapping); CF
scale factors and fill values are decoded by xarray, the encoding keeps the
native dtype.
"""

from __future__ import annotations

import datetime as dt
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


def open_netcdf(files: Sequence[Path], bbox: Sequence[float], chunks: Any = "auto") -> xr.Dataset:
    """Stack time steps along sorted ``time``, crop lazily to bbox (lon/lat), attach the CRS."""
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


def open_geotiff(files: Sequence[Path], times: Sequence[str | None], bbox: Sequence[float], chunks: Any = True) -> xr.Dataset:
    """Mosaic tiles per date by their geotransforms (CRS and resolution must agree), then stack dates."""
    import rioxarray
    from rasterio.warp import transform_bounds

    tiles = [rioxarray.open_rasterio(str(f), chunks=chunks, mask_and_scale=True) for f in files]
    crs = {str(t.rio.crs) for t in tiles}
    if len(crs) > 1:
        raise IntegrityError(f"tiles disagree on their CRS ({', '.join(sorted(crs))}); cannot mosaic")
    res = {tuple(round(abs(v), 9) for v in t.rio.resolution()) for t in tiles}
    if len(res) > 1:
        raise IntegrityError(f"tiles disagree on their resolution ({sorted(res)}); cannot mosaic")
    the_crs = tiles[0].rio.crs
    west, south, east, north = transform_bounds("EPSG:4326", the_crs, *bbox, densify_pts=21)
    by_time: dict[str | None, list[xr.DataArray]] = {}
    for tile, when in zip(tiles, times):
        by_time.setdefault(when, []).append(tile)
    layers = []
    for when in sorted(by_time, key=lambda t: t or ""):
        parts = [
            t.sel(x=_crop_slice(t.x.values, west, east), y=_crop_slice(t.y.values, south, north))
            for t in by_time[when]
        ]
        parts = [p for p in parts if p.sizes["x"] and p.sizes["y"]]
        if not parts:
            continue
        mosaic = parts[0]
        for part in parts[1:]:
            mosaic = mosaic.combine_first(part)  # aligned on coordinates (geotransform), lazy
        mosaic = mosaic.sortby("x").sortby("y", ascending=False)
        if when:
            mosaic = mosaic.expand_dims(time=[np.datetime64(dt.datetime.fromisoformat(when.replace("Z", "+00:00")).replace(tzinfo=None), "ns")])
        layers.append(mosaic)
    if not layers:
        raise IntegrityError("no tile overlaps the requested bbox")
    data = xr.concat(layers, dim="time") if "time" in layers[0].dims else layers[0]
    if "band" in data.dims and data.sizes["band"] == 1:
        data = data.squeeze("band", drop=True)
    ds = data.to_dataset(name=str(data.name or "band_data"))
    return ds.rio.write_crs(the_crs)


def open_manifest(root: Path, manifest: dict[str, Any], chunks: Any = None) -> xr.Dataset:
    """Open a published product from its manifest (no network)."""
    entries = manifest["files"]
    files = [root / e["path"] for e in entries]
    bbox = manifest["bbox"]
    if manifest["kind"] == "netcdf":
        return open_netcdf(files, bbox, chunks if chunks is not None else {})
    return open_geotiff(files, [e.get("start") for e in entries], bbox, chunks if chunks is not None else True)
