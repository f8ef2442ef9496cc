"""NetCDF products stacked along ``time``, read through xarray with the contract's decoding policy.

Files are opened with ``mask_and_scale=False``: the stored integers and their packing
reach :func:`~.contract.normalise`, which decodes every path the same way.  Each file
is cropped by :mod:`.grid`'s rule before stacking (lazily), so a global product costs
only the pixels of the bbox.

Damage inside a compressed chunk shows only when the pixels are read (the header opens
fine, then HDF5 fails with a bare ``NetCDF: HDF error``, inside a dask task).  Files are
therefore opened through :class:`Guarded`, xarray's netCDF4 backend with every variable's
backend array wrapped (:class:`GuardedArray`): a read error becomes what the opener's
``on_damage`` hook makes of it (:mod:`.damage`: the store's ``DamagedProductError`` naming
the file and its product), else an ``IntegrityError`` naming the file.  The wrapper is
lazy, picklable (dask worker processes run it) and holds the path and the hook only.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import xarray as xr
from xarray.backends import BackendArray, NetCDF4BackendEntrypoint
from xarray.core import indexing

from ..errors import IntegrityError
from . import contract, damage

#: netCDF4's ``nc_open`` is not thread-safe (HDF5 is not built thread-safe) and xarray does not lock the
#: open itself, only later reads: concurrent preloads in one process opening their views at once
#: crashed with SIGBUS (bench/overlap_bench.py).  Our opens take turns.
_OPEN_LOCK = threading.Lock()


class GuardedArray(BackendArray):
    """A variable's lazy array whose reads name the file on failure (what ``on_damage`` makes of it)."""

    def __init__(self, array: Any, path: str, on_damage: damage.OnDamage | None):
        self.array, self.path, self.on_damage = array, path, on_damage
        self.shape, self.dtype = array.shape, array.dtype

    def __getitem__(self, key: Any) -> Any:
        try:
            out = indexing.apply_indexer(self.array, key)
            return out.get_duck_array() if isinstance(out, indexing.ExplicitlyIndexed) else out
        except (RuntimeError, OSError) as exc:  # netCDF4 says "NetCDF: HDF error" (RuntimeError); the OS, OSError
            raise damage.read_error(self.path, self.path, exc, self.on_damage) from exc


class Guarded(NetCDF4BackendEntrypoint):
    """xarray's netCDF4 backend, every variable not already in memory read through :class:`GuardedArray`
    (``on_damage=``: the hook, a keyword of ``open_dataset`` / ``open_mfdataset``)."""

    open_dataset_parameters = ("filename_or_obj", "mask_and_scale", "decode_times", "concat_characters",
                               "decode_coords", "drop_variables", "use_cftime", "decode_timedelta")

    def open_dataset(self, filename_or_obj: Any, *, on_damage: damage.OnDamage | None = None,  # type: ignore[override]
                     **kwargs: Any) -> xr.Dataset:
        ds = super().open_dataset(filename_or_obj, **kwargs)
        path = str(filename_or_obj)

        for name, v in ds.variables.items():  # wrapped in place (a new Dataset would align everything again)
            if name in ds.xindexes:  # an index: read at open (damage there fails the open, named by the engine)
                continue
            v._data = indexing.LazilyIndexedArray(GuardedArray(v._data, path, on_damage))  # _data: still unread
        return ds


def grid_crs(ds: xr.Dataset) -> Any:
    """The CRS named by the CF grid mapping (crs_wkt / spatial_ref), default WGS 84 for lon/lat grids."""
    for name in ds.variables:
        attrs = ds[name].attrs
        if "grid_mapping_name" in attrs or "crs_wkt" in attrs:
            return attrs.get("crs_wkt") or attrs.get("spatial_ref") or "EPSG:4326"
    return "EPSG:4326"


def open_netcdf(files: Sequence[Path], bbox: Sequence[float] | None, chunks: Any = None,
                on_damage: damage.OnDamage | None = None) -> tuple[xr.Dataset, Any]:
    """(raw Dataset stacked along ``time`` and cropped, its CRS); nothing read but coordinates.
    ``on_damage``: what a read error of a file means (:mod:`.damage`)."""
    found: dict[str, Any] = {}

    with _OPEN_LOCK:
        def cut(ds: xr.Dataset) -> xr.Dataset:  # called file by file, in order (parallel=False)
            crs = found.setdefault("crs", grid_crs(ds))  # the first file's grid mapping: no open of its own
            if "time" not in ds.dims:
                ds = ds.expand_dims("time")
            return contract.crop(ds, crs, bbox)

        try:
            ds = xr.open_mfdataset(
                [str(f) for f in files], combine="nested", concat_dim="time", data_vars="minimal",
                coords="minimal", compat="override", join="override", combine_attrs="drop_conflicts",
                preprocess=cut, chunks=chunks if chunks is not None else {}, parallel=False,
                mask_and_scale=False, decode_coords=False, engine=Guarded, on_damage=on_damage)
        except ValueError as exc:
            raise IntegrityError(f"cannot stack the NetCDF products: {exc}") from exc
    return ds, found["crs"]
