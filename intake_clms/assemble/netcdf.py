"""NetCDF products stacked along ``time``, read through xarray with the contract's decoding policy.

Files are opened with ``mask_and_scale=False``: the stored integers and their packing
reach :func:`~.contract.normalise`, which decodes every path the same way.  Each file
is cropped by :mod:`.grid`'s rule before stacking (lazily), so a global product costs
only the pixels of the bbox.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import xarray as xr

from ..errors import IntegrityError
from . import contract

#: netCDF4's ``nc_open`` is not thread-safe (HDF5 is not built thread-safe) and xarray does not lock the
#: open itself, only later reads: concurrent preloads in one process opening their views at once
#: crashed with SIGBUS (bench/overlap_bench.py).  Our opens take turns.
_OPEN_LOCK = threading.Lock()


def grid_crs(ds: xr.Dataset) -> Any:
    """The CRS named by the CF grid mapping (crs_wkt / spatial_ref), default WGS 84 for lon/lat grids."""
    for name in ds.variables:
        attrs = ds[name].attrs
        if "grid_mapping_name" in attrs or "crs_wkt" in attrs:
            return attrs.get("crs_wkt") or attrs.get("spatial_ref") or "EPSG:4326"
    return "EPSG:4326"


def open_netcdf(files: Sequence[Path], bbox: Sequence[float] | None, chunks: Any = None) -> tuple[xr.Dataset, Any]:
    """(raw Dataset stacked along ``time`` and cropped, its CRS); nothing read but coordinates."""
    with _OPEN_LOCK:
        first = xr.open_dataset(files[0], engine="netcdf4", mask_and_scale=False, decode_coords=False)
        try:
            crs = grid_crs(first)
        finally:
            first.close()

        def cut(ds: xr.Dataset) -> xr.Dataset:
            if "time" not in ds.dims:
                ds = ds.expand_dims("time")
            return contract.crop(ds, crs, bbox)

        try:
            ds = xr.open_mfdataset(
                [str(f) for f in files], combine="nested", concat_dim="time", data_vars="minimal",
                coords="minimal", compat="override", join="override", combine_attrs="drop_conflicts",
                preprocess=cut, chunks=chunks if chunks is not None else {}, parallel=False,
                mask_and_scale=False, decode_coords=False, engine="netcdf4")
        except ValueError as exc:
            raise IntegrityError(f"cannot stack the NetCDF products: {exc}") from exc
    return ds, crs
