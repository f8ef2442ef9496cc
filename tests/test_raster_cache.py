"""The per-thread cache of open local rasters never answers for a file that changed at its path (a product
fetched again after damage is stored at the same path: the old handle, or GDAL's cache of its blocks, would
serve the old pixels; found as a flaky damage test in CI)."""

from __future__ import annotations

import os

import numpy as np
import rasterio
import rasterio.transform

from intake_clms.assemble import raster


def write(path, value):
    with rasterio.open(path, "w", driver="GTiff", width=4, height=3, count=1, dtype="uint8", crs="EPSG:4326",
                       transform=rasterio.transform.from_origin(0, 3, 1, 1)) as out:
        out.write(np.full((1, 3, 4), value, dtype="uint8"))


def test_a_file_replaced_at_its_path_is_read_anew(tmp_path):
    path = tmp_path / "tile.tif"
    write(path, 7)
    src = raster.RasterSource(str(path))
    assert (raster.using(src, lambda ds: ds.read(1)) == 7).all()
    write(tmp_path / "new.tif", 9)
    os.replace(tmp_path / "new.tif", path)  # as the store replaces a product: a new file at the same path
    assert (raster.using(src, lambda ds: ds.read(1)) == 9).all()


def test_an_unchanged_file_keeps_its_handle(tmp_path):
    path = tmp_path / "tile.tif"
    write(path, 7)
    src = raster.RasterSource(str(path))
    first = raster.using(src, lambda ds: ds)
    assert raster.using(src, lambda ds: ds) is first and not first.closed
