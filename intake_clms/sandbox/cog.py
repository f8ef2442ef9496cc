"""Global Cloud-Optimised GeoTIFFs for the sandbox's CDSE products (format ``cog``).

Why a grid of its own: the client reads COG windows over S3/HTTP and must be
shown to read only the internal tiles under its bbox, so a global COG has to
hold many tiles.  The NetCDF of the same time step keeps the size class's coarse
grid (tests of whole-file downloads stay fast); the COG uses :data:`GRIDS`,
e.g. 0.1 degree (3600 x 1800 px) in 256 px DEFLATE tiles for the ``tiny`` class:
15 x 8 = 120 tiles, a 5 x 5 degree window touches 1 to 4 of them, the file is
about 2 MB.  Overviews (factor 2 until the smallest fits a tile) and the IFDs
come first in the file, as GDAL's COG driver lays them out.

Values come from the same seeded field as the NetCDF (datagen's
``_global_raster``), computed on a grid :data:`UPSAMPLE` times coarser and
repeated (pixels come in 2 x 2 blocks), so a window's pixels are deterministic
per product and equal in every process.  Generation still costs a few tenths of
a second per tiny file (most of it GDAL's DEFLATE and overviews), so files can
be kept in a cache shared by stores (``ProductStore(cache_dir=...)`` or
``$INTAKE_CLMS_SANDBOX_CACHE``), keyed by :data:`VERSION`, seed and size class.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: Bumped whenever the bytes of a global COG change, so shared caches never serve stale files.
VERSION = "cog1"
#: Values are computed on a grid this many times coarser and each pixel repeated (generation time / UPSAMPLE^2).
UPSAMPLE = 2


@dataclass(frozen=True)
class CogGrid:
    res: float  # degrees per pixel
    block: int  # internal tile size in pixels


#: Grid of global COGs by size class.
GRIDS: dict[str, CogGrid] = {
    "tiny": CogGrid(0.1, 256),  # 3600 x 1800 px, ~2 MB
    "small": CogGrid(0.05, 256),  # 7200 x 3600 px, ~8 MB
    "large": CogGrid(0.025, 512),  # 14400 x 7200 px, ~30 MB
}


def grid(size: str) -> CogGrid:
    return GRIDS.get(size, GRIDS["tiny"])


def write_global_cog(path: Path, raw: np.ndarray, west: float, north: float, res: float, block: int, var: Any,
                     tags: dict[str, str]) -> None:
    """Write ``raw`` (rows from ``north`` down, columns from ``west``) as a tiled, DEFLATE (level 1: fast to make), overviewed COG."""
    import rasterio
    from affine import Affine

    profile = dict(driver="COG", width=raw.shape[1], height=raw.shape[0], count=1, dtype=raw.dtype.name,
                   crs="EPSG:4326", transform=Affine(res, 0.0, west, 0.0, -res, north), nodata=var.fill,
                   compress="DEFLATE", level=1, blocksize=block, overviews="AUTO",
                   overview_resampling="nearest" if var.classes else "average")
    with rasterio.Env(GDAL_PAM_ENABLED="NO", GDAL_NUM_THREADS="1"):
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(raw, 1)
            dst.scales = (var.scale,)
            dst.offsets = (var.offset,)
            dst.units = (var.units,)
            dst.set_band_description(1, var.name)
            dst.update_tags(**tags)


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


__all__ = ["GRIDS", "VERSION", "CogGrid", "grid", "layout", "tiles_under", "write_global_cog"]
