"""Global Cloud-Optimised GeoTIFFs for the sandbox's CDSE products (format ``cog``): block sizes and layout checks.

Why a module: the client reads COG windows over S3/HTTP and must be shown to read only the internal tiles
under its bbox, so a global COG has to hold many tiles.  Since ``cog2`` a product's COG and its NetCDF hold
the same integers at the same pixel centres, on the product's real grid (:mod:`.rasters`: 1/336 degree for
300 m): the ``tiny`` class's 4..11 E, 44..51 N is 2352 x 2352 pixels in 256 px DEFLATE tiles (10 x 10 = 100
tiles; a 1 x 1 degree window touches 4 of them, a 5 x 5 degree one 49), with overviews; the IFDs come first
in the file, as GDAL's COG driver lays them out.  The writer is :func:`.rasters.write_geotiff` (one for every
GeoTIFF the sandbox serves).  Files can be kept in a cache shared by stores
(``ProductStore(cache_dir=...)`` or ``$INTAKE_CLMS_SANDBOX_CACHE``), keyed by :data:`VERSION`, seed and size
class.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: Bumped whenever the bytes of a global COG change, so shared caches never serve stale files.
VERSION = "cog2"


@dataclass(frozen=True)
class CogGrid:
    block: int  # internal tile size in pixels


#: Internal tile size of global COGs by size class (the grid is the product's: :mod:`.rasters`).
GRIDS: dict[str, CogGrid] = {
    "tiny": CogGrid(128),
    "small": CogGrid(512),
    "large": CogGrid(512),
}


def grid(size: str) -> CogGrid:
    return GRIDS.get(size, GRIDS["tiny"])


def layout(path: Path | str) -> dict[str, Any]:
    """What a test checks of a COG: shape, block size, overviews, tile count and the tiles' byte ranges.

    ``tiles``: {(row, col): (offset, nbytes)} of the full-resolution band, from the
    TIFF tags (``TileOffsets``/``TileByteCounts``) as GDAL reports them.
    """
    import rasterio

    with rasterio.open(path) as src:
        bw, bh = src.block_shapes[0][1], src.block_shapes[0][0]
        rows, cols = -(-src.height // bh), -(-src.width // bw)
        tiles = {}
        for r in range(rows):
            for c in range(cols):
                off = src.get_tag_item(f"BLOCK_OFFSET_{c}_{r}", "TIFF", bidx=1)
                size = src.get_tag_item(f"BLOCK_SIZE_{c}_{r}", "TIFF", bidx=1)
                tiles[(r, c)] = (int(off), int(size))
        return {
            "shape": (src.height, src.width), "block": (bh, bw), "grid": (rows, cols),
            "overviews": src.overviews(1), "layout": (src.tags(ns="IMAGE_STRUCTURE") or {}).get("LAYOUT"),
            "compression": src.compression.name if src.compression else None, "transform": src.transform,
            "tiles": tiles,
        }


def tiles_under(info: dict[str, Any], bbox: tuple[float, float, float, float]) -> list[tuple[int, int]]:
    """(row, col) of the internal tiles a lon/lat bbox touches, from :func:`layout`'s answer."""
    t = info["transform"]
    west, south, east, north = bbox
    bh, bw = info["block"]
    rows, cols = info["grid"]
    c0 = max(0, int((west - t.c) / t.a) // bw)
    c1 = min(cols - 1, int(np.ceil((east - t.c) / t.a) - 1) // bw)
    r0 = max(0, int((t.f - north) / -t.e) // bh)
    r1 = min(rows - 1, int(np.ceil((t.f - south) / -t.e) - 1) // bh)
    return [(r, c) for r in range(r0, r1 + 1) for c in range(c0, c1 + 1)]


__all__ = ["GRIDS", "VERSION", "CogGrid", "grid", "layout", "tiles_under"]
