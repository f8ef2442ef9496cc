"""GeoTIFF products (stored tiles, downloaded COGs, kept windows): one mosaic per variable and date.

Tiles are grouped by variable (:func:`~.contract.variable_name` of their band) and by
date, mosaicked by their geotransforms (:mod:`.mosaic`, never by file names), cropped
by :mod:`.grid`'s rule and stacked along ``time``; every pixel goes through the one
raster reader (:mod:`.raster`).  Each group's VRT index is written once, at publish
(:func:`index`), so opening a published view reads one small XML file per group.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ..errors import IntegrityError
from . import contract, mosaic


def _label(variable: str, when: Any) -> str:
    return f"{variable}-" + ("static" if when is None else str(np.datetime_as_string(when, unit="s")))


def _groups(files: Sequence[Path], times: Sequence[str | None], names: Sequence[str]
            ) -> dict[str, list[tuple[Any, list[Path]]]]:
    """variable -> [(date, its tiles)] (dates parsed, so two spellings of one instant are one date)."""
    if not (len(files) == len(times) == len(names)):
        raise IntegrityError(f"{len(files)} GeoTIFF files but {len(times)} dates and {len(names)} names")
    out: dict[str, dict[Any, list[Path]]] = {}
    for path, when, name in zip(files, times, names):
        out.setdefault(name, {}).setdefault(mosaic.parse_time(when), []).append(Path(path))
    return {name: list(by_time.items()) for name, by_time in out.items()}


def names_of(files: Sequence[Path]) -> list[str]:
    """Each file's variable name (one header read each: for the publish stage)."""
    return [contract.variable_name(info.band.name, info.path.name) for info in mosaic.read_tiles(files)]


def index(files: Sequence[Path], times: Sequence[str | None], names: Sequence[str], index_dir: Path) -> None:
    """Check each group's tiles and write its VRT index into ``index_dir`` (a view's staging folder)."""
    for variable, dated in _groups(files, times, names).items():
        for when, paths in dated:
            mosaic.open_mosaic(paths, label=_label(variable, when), index_dir=index_dir)


def open_tiles(files: Sequence[Path], times: Sequence[str | None], names: Sequence[str], bbox: Sequence[float] | None,
               chunks: Any = None, index_dir: Path | None = None, on_damage: Any = None) -> tuple[xr.Dataset, Any]:
    """(raw Dataset of every variable's mosaics, cropped and stacked along ``time``, its CRS); ``on_damage``:
    what a tile's read error means (:mod:`.damage`)."""
    variables: dict[str, xr.DataArray] = {}
    crs = None
    for variable, dated in _groups(files, times, names).items():
        groups = [(when, mosaic.open_mosaic(paths, label=_label(variable, when), index_dir=index_dir))
                  for when, paths in dated]
        first = groups[0][1]
        crs = crs or first.crs
        data = mosaic.stack(groups, bbox, chunks if chunks is not None else True, name=variable, on_damage=on_damage)
        band = first.band
        data.attrs = {**band.attrs, "scale_factor": band.scale, "add_offset": band.offset,
                      **({} if first.nodata is None else {"_FillValue": first.nodata})}
        variables[variable] = data
    if len({v.sizes.get("time", 1) for v in variables.values()}) > 1:
        raise IntegrityError(f"the variables {sorted(variables)} have different numbers of dates")
    return xr.Dataset(variables), (crs.to_wkt() if crs is not None else None)
