"""Assembly: a view's stored files -> one lazy ``xarray.Dataset`` (the contract) or one ``GeoDataFrame``.

Readers (:mod:`.netcdf`, :mod:`.tiles` through the one raster reader :mod:`.raster`,
:mod:`.vector`) hand stored integers to :func:`.contract.normalise`, the one function every
raster path ends in.  Assembly reads files; it imports no service and writes nothing
but a view's own files: its mosaic indexes and a window view's stack (:mod:`.stack`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import IntegrityError
from .contract import Provenance, normalise
from .damage import OnDamage
from .stack import StackWriter

NETCDF = (".nc", ".nc4", ".cdf")
GEOTIFF = (".tif", ".tiff")
VECTOR = (".geojson", ".gpkg", ".shp", ".fgb")
DATA_SUFFIXES = NETCDF + GEOTIFF + VECTOR


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


def open_files(kind: str, files: Sequence[Path], times: Sequence[str | None], bbox: Sequence[float] | None, *,
               chunks: Any = None, index_dir: Path | None = None, names: Sequence[str] | None = None,
               period: tuple[Any, Any] = (None, None), decode: bool = True,
               provenance: Provenance | None = None, steps: Sequence[str | None] | None = None,
               on_damage: OnDamage | None = None) -> Any:
    """Open one request's data files (no network).

    Rasters give the contract's ``xarray.Dataset`` (``steps``: each product's nominal date, in
    order, for its ``time``); vector files a ``GeoDataFrame`` (``period`` filters their times).
    ``on_damage``: what a read error in a stored file means, when the pixels are read (:mod:`.damage`).
    """
    from . import mosaic

    if kind == "vector":
        from .vector import open_vector

        return open_vector(files, times, bbox, period)
    if kind == "netcdf":
        from .netcdf import open_netcdf

        raw, crs = open_netcdf(files, bbox, chunks, on_damage)
    elif kind == "geotiff":
        from .tiles import names_of, open_tiles

        raw, crs = open_tiles(files, times, list(names) if names is not None else names_of(files), bbox, chunks,
                              index_dir, on_damage)
    else:
        raise IntegrityError(f"cannot open {kind!r} data")
    dates = [mosaic.parse_time(t) for t in (steps if steps is not None else _distinct(times))]
    if kind == "geotiff" and None not in dates:
        dates = sorted(dates)  # open_tiles stacks the dates in time order, whatever the files' order
    return normalise(raw, crs=crs, times=dates, decode=decode, provenance=provenance)


def write_stack(files: Sequence[Path], times: Sequence[str | None], steps: Sequence[str | None],
                target: Path, on_damage: OnDamage | None = None) -> tuple[int, list[str]]:
    """Stack a window view's kept GeoTIFFs into one NetCDF in the contract's stored form (integers, packing,
    coordinates, CRS); (its size, each file's variable name).  ``times``: each file's product date; ``steps``:
    each product's.  Windows of one grid (one product per date) are written a product at a time by a
    :class:`.stack.StackWriter` (memory: one product's windows, however long the series), which the engine
    also feeds while the reads run; windows of several tiles are mosaicked first, as stored tiles are."""
    import dask
    import rasterio

    from . import damage, raster
    from .contract import variable_name
    from .stack import stack_chunks

    writer = StackWriter(target, steps, on_damage)
    groups = [[p for p, t in zip(files, times) if t == s] for s in steps]
    if writer.broken is None and sum(map(len, groups)) == len(files):
        for index, group in enumerate(groups):
            if not writer.add(index, group):
                break
    done = writer.finish()
    if done is not None:
        return done
    names = []
    with rasterio.Env(**raster.LOCAL_ENV):  # one GDAL environment for every header (entering one costs)
        for path in files:
            try:
                with rasterio.open(path) as ds:
                    names.append(variable_name(raster.band_of(ds).name, path.name))
            except Exception as exc:  # noqa: BLE001 - a kept window damaged since it was read
                raise damage.read_error(str(path), path.name, exc, on_damage) from exc
    # windows of several tiles (or products sharing a date): mosaicked like stored tiles, then stacked the same
    scratch = target.parent / ".mosaic-index"
    scratch.mkdir(exist_ok=True)
    try:
        raw = open_files("geotiff", files, times, None, index_dir=scratch, names=names, decode=False,
                         steps=list(steps), on_damage=on_damage)
        for var in raw.data_vars.values():  # checksummed chunks, as the writer's
            var.encoding.update(fletcher32=True, chunksizes=stack_chunks(var.shape, var.dtype.itemsize))
        with dask.config.set(scheduler="synchronous"):
            raw.to_netcdf(target, engine="netcdf4")
    finally:
        import shutil

        shutil.rmtree(scratch, ignore_errors=True)
    return target.stat().st_size, names


#: Bytes of decoded values per chunk of a stacked window view (time steps are grouped up to it).
STACK_CHUNK_BYTES = 64 * 2**20


def open_stack(path: Path, *, chunks: Any = None, decode: bool = True, provenance: Provenance | None = None,
               on_damage: OnDamage | None = None) -> Any:
    """A stacked window view: one open, then the contract (the file already holds its form).

    Chunks: as many whole time steps as fit :data:`STACK_CHUNK_BYTES` of decoded values (a point's long
    series is one chunk, a large window a few steps each); ``chunks=`` overrides per dimension.
    """
    import xarray as xr

    from .contract import from_stored
    from .netcdf import _OPEN_LOCK, Guarded, grid_crs

    def opened(mask_and_scale: bool) -> Any:
        with _OPEN_LOCK:  # lazily indexed, then chunked: each chunk reads its own steps (opened with
            raw = xr.open_dataset(path, engine=Guarded, mask_and_scale=mask_and_scale,  # chunks={}, a stack is
                                  decode_coords="all", on_damage=on_damage)  # one chunk: every task reads all)
        pixels = 1
        for dim, size in raw.sizes.items():
            if dim != "time":
                pixels *= max(1, size)
        rule = {"time": max(1, STACK_CHUNK_BYTES // (4 * pixels))}
        return raw.chunk({**rule, **chunks} if isinstance(chunks, dict) else (rule if chunks is None else chunks),
                         token=_token(path, mask_and_scale))

    fast = from_stored(opened(decode), decode=decode, provenance=provenance)
    if fast is not None:
        return fast
    raw = opened(False)
    return normalise(raw, crs=grid_crs(raw), times=None, decode=decode, provenance=provenance)


def _token(path: Path, decode: bool) -> str:
    """The dask token of a stack's arrays: the file (path, inode, size, mtime) and how it is decoded.  Without
    it, ``chunk`` tokenizes each lazily indexed array by pickling it with its file manager (a third of a
    reopen); xarray names arrays opened with ``chunks=`` from the file's path and mtime the same way."""
    import hashlib
    import os

    st = os.stat(path)
    blob = f"{os.path.abspath(path)}\0{st.st_ino}\0{st.st_size}\0{st.st_mtime_ns}\0{decode}"
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _distinct(times: Sequence[str | None]) -> list[str | None]:
    seen: list[str | None] = []
    for t in times:
        if t not in seen:
            seen.append(t)
    return seen


__all__ = ["DATA_SUFFIXES", "GEOTIFF", "NETCDF", "VECTOR", "Provenance", "StackWriter", "data_kind", "normalise",
           "open_files"]
