"""Assembly: a view's stored files -> one lazy ``xarray.Dataset`` (the contract) or one ``GeoDataFrame``.

Readers (:mod:`.netcdf`, :mod:`.tiles` through the one raster reader :mod:`.raster`,
:mod:`.vector`) hand stored integers to :func:`.contract.normalise`, the one function every
raster path ends in.  Assembly reads files; it imports no service and writes nothing
but, at publish time, a view's mosaic indexes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import IntegrityError
from .contract import Provenance, normalise

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
               provenance: Provenance | None = None, steps: Sequence[str | None] | None = None) -> Any:
    """Open one request's data files (no network).

    Rasters give the contract's ``xarray.Dataset`` (``steps``: each product's nominal date, in
    order, for its ``time``); vector files a ``GeoDataFrame`` (``period`` filters their times).
    """
    from . import mosaic

    if kind == "vector":
        from .vector import open_vector

        return open_vector(files, times, bbox, period)
    if kind == "netcdf":
        from .netcdf import open_netcdf

        raw, crs = open_netcdf(files, bbox, chunks)
    elif kind == "geotiff":
        from .tiles import names_of, open_tiles

        raw, crs = open_tiles(files, times, list(names) if names is not None else names_of(files), bbox, chunks,
                              index_dir)
    else:
        raise IntegrityError(f"cannot open {kind!r} data")
    dates = [mosaic.parse_time(t) for t in (steps if steps is not None else _distinct(times))]
    if kind == "geotiff" and None not in dates:
        dates = sorted(dates)  # open_tiles stacks the dates in time order, whatever the files' order
    return normalise(raw, crs=crs, times=dates, decode=decode, provenance=provenance)


def _distinct(times: Sequence[str | None]) -> list[str | None]:
    seen: list[str | None] = []
    for t in times:
        if t not in seen:
            seen.append(t)
    return seen


__all__ = ["DATA_SUFFIXES", "GEOTIFF", "NETCDF", "VECTOR", "Provenance", "data_kind", "normalise", "open_files"]
