"""A window view's stack: its kept windows written into one NetCDF, a time step per product, as they arrive.

Why as they arrive: a window read is fetched by many worker threads that spend most of
their time waiting on the network.  Stacking the kept windows only once the last one is
stored put the whole stack (a file open, a header and a pixel read per window, the
contract's stored form) after the last read, on the critical path of every series; a
short series spent a tenth of its time there.  :class:`StackWriter` takes each product
when its windows are stored, in whatever order the threads finish, and writes its row;
the view's publish then only closes the file.

What it stacks: windows of one grid, one product per date, the same variables in every
product (a point's or a bbox's time series: the common case).  Anything else (windows of
several tiles, two products of one date, a product whose files differ) leaves the
writer :attr:`~StackWriter.broken` with the reason, and the view is stacked at publish
time through the mosaic path (:func:`intake_clms.assemble.write_stack`).  The file holds
the contract's stored form (integers, packing, coordinates, CRS), so a reopen is one open, in
checksummed chunks (:func:`stack_chunks`), so damage in place reads as an error, never as values.
It is written with netCDF4 directly, through xarray's own CF encoder: ``to_netcdf`` would ask dask
for its scheduler, which imports dask.distributed (a third of a second, more than a short series'
whole publish).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .damage import OnDamage


class StackWriter:
    """Writes a stack file product by product (thread-safe; the rows in any order)."""

    def __init__(self, target: Path, steps: Sequence[str | None], on_damage: OnDamage | None = None):
        self.target, self.steps, self.on_damage = Path(target), list(steps), on_damage
        self.broken: str | None = None  # why these products are not stacked as they come (None: they are)
        if None in self.steps or len(set(self.steps)) != len(self.steps):
            self.broken = "two products share a date, or one has none"
        self._lock = threading.Lock()
        self._nc: Any = None
        self._grid: tuple[Any, ...] | None = None
        self._names: list[str] = []  # one product's variables, in its files' order
        self._written: set[int] = set()

    def add(self, index: int, files: Sequence[Path]) -> bool:
        """Write the kept windows ``files`` of product ``index`` (in ``steps``) as its time step; False when
        they cannot be stacked this way (:attr:`broken` says why).  A file that cannot be read raises what
        the ``on_damage`` hook makes of it (the writer stays usable for nothing: it is broken)."""
        import rasterio

        from . import damage, raster
        from .contract import variable_name

        if self.broken is not None:
            return False
        rows = []
        try:
            with rasterio.Env(**raster.LOCAL_ENV):
                for path in files:
                    try:
                        with rasterio.open(path) as ds:
                            head = raster.header_of(ds)
                            rows.append((variable_name(head.band.name, Path(path).name), ds.read(1), head))
                    except Exception as exc:  # noqa: BLE001 - a kept window damaged since it was read
                        raise damage.read_error(str(path), Path(path).name, exc, self.on_damage) from exc
        except BaseException:
            self.broken = "a kept window could not be read"
            raise
        return self._add(index, rows)

    def add_windows(self, index: int, windows: Sequence[tuple[str, Any]]) -> bool:
        """As :meth:`add`, from the windows just read (:class:`.raster.Window`, by the name of the file each
        is kept as): the same rows without reading the kept files back."""
        from .contract import variable_name

        if self.broken is not None:
            return False
        return self._add(index, [(variable_name(w.header.band.name, name), w.data, w.kept_header())
                                 for name, w in windows])

    def _add(self, index: int, rows: list[tuple[str, Any, Any]]) -> bool:
        names = [name for name, _, _ in rows]
        grids = {(h.transform, h.width, h.height, h.dtype) for _, _, h in rows}
        with self._lock:
            if self.broken is not None:
                return False
            if len(grids) != 1 or len(set(names)) != len(names) or not names:
                self.broken = "a product's windows lie on several grids"
            elif self._nc is None:
                self._create(rows)
            elif names != self._names or grids != {self._grid}:
                self.broken = "the products' windows differ in grid or variables"
            if self.broken is not None:
                return False
            self._write(index, rows)
            return True

    def finish(self) -> tuple[int, list[str]] | None:
        """Close the file: (its size, each file's variable name in product order) when every step was
        written, else None (the file is removed; :attr:`broken` says why)."""
        with self._lock:
            if self._nc is not None:
                self._close()
            if self.broken is None and len(self._written) != len(self.steps):
                self.broken = f"{len(self.steps) - len(self._written)} of {len(self.steps)} products not stacked"
            if self.broken is not None:
                self.target.unlink(missing_ok=True)
                return None
            return self.target.stat().st_size, self._names * len(self.steps)

    def abandon(self, why: str) -> None:
        """Give up (the file is removed); publish stacks the products itself."""
        with self._lock:
            self.broken = self.broken or why
            if self._nc is not None:
                self._close()
            self.target.unlink(missing_ok=True)

    # -- under the lock

    def _create(self, rows: list[tuple[str, Any, Any]]) -> None:
        """The file, from the first product's headers: the contract's stored form with empty time steps."""
        import netCDF4
        import numpy as np
        import xarray as xr
        from xarray.backends.locks import HDF5_LOCK

        first = rows[0][2]
        form = stored_form([(name, head.band) for name, _, head in rows], first, self.steps)
        encoded, attrs = xr.conventions.cf_encoder(*xr.conventions.encode_dataset_coordinates(form))
        with HDF5_LOCK:  # xarray's lock of the HDF5 library, which is not thread-safe
            nc = netCDF4.Dataset(self.target, "w", format="NETCDF4")
            try:
                for dim, size in form.sizes.items():
                    nc.createDimension(str(dim), size)
                nc.setncatts(attrs)
                for name, var in encoded.items():
                    meta = dict(var.attrs)
                    fill = meta.pop("_FillValue", None)
                    checked = {"fletcher32": True, "chunksizes": stack_chunks(var.shape, var.dtype.itemsize)} \
                        if name in form.data_vars else {}
                    out = nc.createVariable(str(name), var.dtype, tuple(str(d) for d in var.dims),
                                            fill_value=False if fill is None else fill, **checked)
                    out.set_auto_maskandscale(False)  # the stored integers as they are: no packing on write
                    out.setncatts(meta)
                    if name in form.data_vars:
                        continue  # written a time step at a time
                    if var.ndim:
                        out[:] = np.asarray(var.values)
                    else:
                        out.assignValue(np.asarray(var.values))
            except BaseException:
                nc.close()
                raise
        self._nc, self._names = nc, [name for name, _, _ in rows]
        self._grid = (first.transform, first.width, first.height, first.dtype)

    def _write(self, index: int, rows: list[tuple[str, Any, Any]]) -> None:
        from xarray.backends.locks import HDF5_LOCK

        with HDF5_LOCK:
            for name, data, _ in rows:
                self._nc.variables[name][index] = data
        self._written.add(index)

    def _close(self) -> None:
        from xarray.backends.locks import HDF5_LOCK

        with HDF5_LOCK:
            self._nc.close()
        self._nc = None


#: Bytes of stored integers per HDF5 chunk of a stack (time steps grouped up to it).
CHUNK_BYTES = 2**20


def stack_chunks(shape: Sequence[int], itemsize: int) -> tuple[int, ...]:
    """HDF5 chunks of a stack's variable (time, y, x): whole steps, as many as fit :data:`CHUNK_BYTES`.

    Each chunk carries a Fletcher-32 checksum (``fletcher32``): the stack is derived data with no record of
    its own hashes, and a flipped byte would otherwise read as a wrong value; with it the read fails, the
    damage hook removes the file, and the next open stacks the kept windows again."""
    steps, *grid = shape
    step = itemsize
    for n in grid:
        step *= max(1, n)
    return (max(1, min(steps, CHUNK_BYTES // step)), *(max(1, n) for n in grid))


def stored_form(bands: Sequence[tuple[str, Any]], head: Any, steps: Sequence[str | None]) -> Any:
    """The stored form of a stack (its data variables lazy placeholders, never computed): one variable per
    ``(name, band)`` on ``head``'s grid, a time step per date of ``steps``, through the contract."""
    import dask.array as da
    import numpy as np
    import xarray as xr

    from . import grid, mosaic
    from .contract import normalise

    t = head.affine
    coords = {"time": np.array([mosaic.parse_time(s) for s in steps], dtype="datetime64[ns]"),
              "y": xr.DataArray(grid.centres(t.f, t.e, 0, head.height), dims="y", attrs={"step": t.e}),
              "x": xr.DataArray(grid.centres(t.c, t.a, 0, head.width), dims="x", attrs={"step": t.a})}
    variables = {}
    for name, band in bands:
        placeholder = da.zeros((len(steps), head.height, head.width), dtype=head.dtype)
        var = xr.DataArray(placeholder, dims=("time", "y", "x"), coords=coords, name=name)
        var.attrs = {**band.attrs, "scale_factor": band.scale, "add_offset": band.offset,
                     **({} if head.nodata is None else {"_FillValue": head.nodata})}
        variables[name] = var
    return normalise(xr.Dataset(variables), crs=head.crs, times=None, decode=False)


__all__ = ["CHUNK_BYTES", "StackWriter", "stack_chunks", "stored_form"]
