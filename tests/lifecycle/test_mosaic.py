"""GeoTIFF tiles mosaicked by geotransform: lazily, checked, cropped, stacked, through the contract.

Real GeoTIFFs written here with rasterio (EPSG:3035 uint8 tiles with nodata, deflate,
internally tiled, like the CLMS API's), and the sandbox's own tiled products.  Most tests
open with ``decode=False`` (the stored integers and nodata, every pixel comparable with
the tiles); the decoded values (float32, NaN for nodata) are checked too.
"""

from __future__ import annotations

import random
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.warp import transform_bounds

from intake_clms import assemble
from intake_clms.assemble import mosaic
from intake_clms.assemble import tiles as tiles_mod
from intake_clms.assemble.contract import spatial_dims
from intake_clms.errors import IntegrityError
from intake_clms.sandbox.datagen import ProductStore

ORIGIN = (4_300_000.0, 2_900_000.0)  # upper-left corner of the test grids, EPSG:3035 metres (central Europe)
RES = 100.0
TH, TW = 48, 64  # tile rows, cols: not square, so a swapped axis cannot pass
WORLD = [-180.0, -90.0, 180.0, 90.0]
STATIC = tiles_mod._label("FTY", None)  # the index label of the grid products' variable, without a date


def open_geotiff(files: list[Path], times: list[str | None], bbox: Any, *, decode: bool = False,
                 name: str | None = None, **kwargs: Any) -> Any:
    """The one variable of GeoTIFF tiles as the contract opens them (stored integers unless ``decode``);
    ``name`` names every file's variable (tiles named anyhow, one product)."""
    if name is not None:
        kwargs["names"] = [name] * len(files)
    ds = assemble.open_files("geotiff", files, times, bbox, decode=decode, **kwargs)
    (name,) = ds.data_vars
    assert name != "band_data"
    return ds[name]


def static(files: list[Path], bbox: Any, **kwargs: Any) -> Any:
    """A product without a date: the contract's one ``time`` step, dropped."""
    var = open_geotiff(files, [None] * len(files), bbox, **kwargs)
    assert var.dims[0] == "time" and var.sizes["time"] == 1
    return var.isel(time=0)


def write_tile(path: Path, data: np.ndarray, row: int, col: int, *, res: float = RES, crs: str = "EPSG:3035",
               nodata: float | None = 255, shift: tuple[float, float] = (0.0, 0.0), **extra: Any) -> Path:
    """One GeoTIFF tile at grid position (row, col) of ``data.shape`` tiles (deflate, 16x16 internal blocks)."""
    height, width = data.shape[-2:]
    x = ORIGIN[0] + col * width * RES + shift[0]
    y = ORIGIN[1] - row * height * RES + shift[1]
    profile = dict(driver="GTiff", width=width, height=height, count=1 if data.ndim == 2 else data.shape[0],
                   dtype=str(data.dtype), crs=crs, transform=from_origin(x, y, res, res), nodata=nodata,
                   compress="deflate", tiled=True, blockxsize=16, blockysize=16, **extra)
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data if data.ndim == 3 else data[None])
    return path


def tile_values(seed: int, shape: tuple[int, int] = (TH, TW)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 250, size=shape, dtype=np.uint8)
    data[rng.random(shape) < 0.1] = 255  # some nodata inside tiles
    return data


def grid_product(folder: Path, rows: int, cols: int, *, names: str = "grid", skip: tuple[tuple[int, int], ...] = (),
                 seed: int = 0) -> tuple[list[Path], np.ndarray]:
    """A rows x cols mosaic of tiles (some positions left out): the tile files and the expected full array."""
    expected = np.full((rows * TH, cols * TW), 255, dtype=np.uint8)
    files = []
    order = list(range(rows * cols))
    random.Random(seed).shuffle(order)  # names unrelated to positions (part001 is not the first tile)
    for r in range(rows):
        for c in range(cols):
            if (r, c) in skip:
                continue
            data = tile_values(seed * 1000 + r * cols + c)
            expected[r * TH:(r + 1) * TH, c * TW:(c + 1) * TW] = data
            if names == "grid":
                name = f"FTY_2015_100m_eu_03035_d02_E{43 + c:02d}N{29 - r:02d}.tif"
            else:
                name = f"CLMS_CLCplus_RASTER_2018_010m_eu_03035_V1_1_part{order[r * cols + c] + 1:03d}.tif"
            files.append(write_tile(folder / "Results" / f"sub{(r + c) % 2}" / name, data, r, c))
    random.Random(seed + 1).shuffle(files)
    return files, expected


# --------------------------------------------------------------------------- values, dtype, nodata


@pytest.mark.parametrize("names", ["grid", "nogrid"])
def test_mosaic_equals_every_tile_pixel_and_keeps_uint8_and_nodata(tmp_path: Path, names: str) -> None:
    files, expected = grid_product(tmp_path / "p", 3, 4, names=names, skip=((1, 2),))
    ds = assemble.open_files("geotiff", files, [None] * len(files), WORLD, decode=False)
    (name,) = ds.data_vars
    assert name == ("FTY" if names == "grid" else "CLCPLUS")  # contract.variable_name of the file name
    var = ds[name].isel(time=0)
    assert ds[name].dims == ("time", "y", "x") and var.shape == expected.shape
    assert var.dtype == np.uint8 and var.chunks is not None  # lazy, stored dtype
    assert var.attrs["_FillValue"] == 255 and var.rio.nodata == 255
    assert ds.rio.crs.to_epsg() == 3035 and "spatial_ref" in ds.coords
    values = var.values
    assert values.dtype == np.uint8
    np.testing.assert_array_equal(values, expected)  # every pixel, the missing tile (1, 2) is nodata
    assert (values[TH:2 * TH, 2 * TW:3 * TW] == 255).all()
    assert var.x.values[0] == ORIGIN[0] + RES / 2 and var.y.values[0] == ORIGIN[1] - RES / 2
    assert var.x.values[-1] == ORIGIN[0] + (4 * TW - 0.5) * RES
    assert tuple(var.rio.transform())[:6] == (RES, 0.0, ORIGIN[0], 0.0, -RES, ORIGIN[1])
    decoded = static(files, WORLD, decode=True)  # the default: float32, nodata -> NaN, same pixels
    assert decoded.dtype == np.float32 and decoded.chunks is not None
    dv = decoded.values
    np.testing.assert_array_equal(np.isnan(dv), expected == 255)
    np.testing.assert_array_equal(dv[expected != 255], expected[expected != 255].astype("float32"))


def test_default_chunks_follow_the_tiles(tmp_path: Path) -> None:
    files, _ = grid_product(tmp_path / "p", 2, 3)
    var = static(files, WORLD)
    assert var.chunks == ((TH, TH), (TW, TW, TW))  # one chunk per tile: a window read needs only its tiles
    big = mosaic._axis_chunks([0, 5000, 10000], 0, 10000, 4096, 256)
    assert big == (2560, 2440, 2560, 2440) and sum(big) == 10000  # big tiles split in block multiples
    chunked = static(files, WORLD, chunks={"x": 32, "y": 16})
    assert chunked.chunks == ((16,) * 6, (32,) * 6)


def test_multiband_float_tiles_keep_dtype_and_bands(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    a, b = (rng.random((2, TH, TW)).astype("float32") for _ in range(2))
    files = [write_tile(tmp_path / "a.tif", a, 0, 0, nodata=-1.0), write_tile(tmp_path / "b.tif", b, 0, 1, nodata=-1.0)]
    var = static(files, WORLD, name="v")
    assert var.dims == ("band", "y", "x") and var.dtype == np.float32
    np.testing.assert_array_equal(var.values, np.concatenate([a, b], axis=2))


# --------------------------------------------------------------------------- the VRT index


def test_vrt_index_is_relative_readable_by_gdal_and_survives_a_move(tmp_path: Path) -> None:
    files, expected = grid_product(tmp_path / "p", 2, 2)
    static(files, WORLD)
    (vrt,) = (tmp_path / "p" / "Results").glob("mosaic-*.vrt")  # beside the tiles (their common folder)
    root = ET.parse(vrt).getroot()
    names = root.findall(".//SourceFilename")
    assert len(names) == 4 and all(n.get("relativeToVRT") == "1" and not n.text.startswith("/") for n in names)
    assert root.find("VRTRasterBand").get("dataType") == "Byte"
    assert root.findtext("VRTRasterBand/NoDataValue") == "255.0"
    with rasterio.open(vrt) as ds:  # GDAL reads the same mosaic
        assert ds.crs.to_epsg() == 3035 and ds.dtypes[0] == "uint8" and ds.nodata == 255
        np.testing.assert_array_equal(ds.read(1), expected)

    moved = tmp_path / "elsewhere"
    shutil.move(str(tmp_path / "p"), moved)
    files = [moved / f.relative_to(tmp_path / "p") for f in files]
    again = mosaic.open_mosaic(files, STATIC)
    assert again.vrt == moved / "Results" / vrt.name  # the index is reused, not rebuilt
    assert sorted((moved / "Results").glob("mosaic-*.vrt")) == [again.vrt]
    values = static(files, WORLD).values
    np.testing.assert_array_equal(values, expected)


def test_index_is_reused_without_reading_headers_and_reads_stay_strict(tmp_path: Path) -> None:
    files, _ = grid_product(tmp_path / "p", 1, 2)
    first = mosaic.open_mosaic(files, STATIC)
    assert first.vrt is not None
    victim = first.tiles[1].path
    size = victim.stat().st_size
    victim.write_bytes(b"\0" * size)  # same size, unreadable header: the index name still matches
    reopened = mosaic.open_mosaic(files, STATIC)  # reads the index, not the 2 headers
    assert reopened.vrt == first.vrt and reopened.tiles == first.tiles
    var = static(files, WORLD, name="FTY")  # names as the view keeps them: no header read
    healthy = 0 if first.tiles[0].col == 0 else TW  # the healthy tile's columns
    assert var[:, healthy:healthy + TW].values.shape == (TH, TW)  # the healthy tile alone reads fine
    with pytest.raises(IntegrityError, match=victim.name):  # never silent nodata where a tile is broken
        var.values
    first.vrt.unlink()
    with pytest.raises(IntegrityError, match=f"header of tile .*{victim.name}"):
        mosaic.open_mosaic(files, STATIC)


def test_overlapping_tiles_nodata_never_hides_data(tmp_path: Path) -> None:
    a = tile_values(1)
    b = np.full((TH, TW), 255, dtype=np.uint8)
    b[:, TW // 2:] = 7  # left half nodata, right half data
    files = [write_tile(tmp_path / "a.tif", a, 0, 0),
             write_tile(tmp_path / "b.tif", b, 0, 0, shift=(TW / 2 * RES, 0.0))]  # b overlaps a's right half
    m = mosaic.open_mosaic(files)
    assert m.overlapping and m.width == TW + TW // 2
    values = static(files, WORLD, name="v").values
    np.testing.assert_array_equal(values[:, :TW], a)  # b's nodata half does not erase a
    assert (values[:, TW:] == 7).all()
    with rasterio.open(m.vrt) as ds:  # the VRT (ComplexSource + NODATA) says the same
        np.testing.assert_array_equal(ds.read(1), values)


# --------------------------------------------------------------------------- checks


def _odd(kind: str, path: Path) -> tuple[Path, str]:
    data = tile_values(9)
    if kind == "crs":
        return write_tile(path, data, 0, 1, crs="EPSG:3857"), "EPSG:3857"
    if kind == "resolution":
        return write_tile(path, data, 0, 1, res=2 * RES), "200.0"
    if kind == "dtype":
        return write_tile(path, data.astype("uint16"), 0, 1), "uint16"
    if kind == "nodata":
        return write_tile(path, data, 0, 1, nodata=0), "nodata value 0"
    if kind == "misaligned":
        return write_tile(path, data, 0, 1, shift=(30.0, 0.0)), "0.300 pixel off"
    if kind == "bands":
        return write_tile(path, np.stack([data, data]), 0, 1), "band count 2"
    if kind == "nocrs":
        return write_tile(path, data, 0, 1, crs=None), "has no CRS"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["crs", "resolution", "dtype", "nodata", "misaligned", "bands", "nocrs"])
def test_disagreeing_tiles_are_refused_naming_the_tile(tmp_path: Path, kind: str) -> None:
    good = [write_tile(tmp_path / f"good{i}.tif", tile_values(i), 1, i) for i in range(3)]
    odd, value = _odd(kind, tmp_path / "odd_one.tif")
    with pytest.raises(IntegrityError) as info:
        open_geotiff([*good, odd], [None] * 4, WORLD, names=["good"] * 4)  # one variable: one mosaic
    message = str(info.value)
    assert "odd_one.tif" in message and value in message, message
    assert not list(tmp_path.glob("*.vrt"))  # nothing half-made left behind


def test_rotated_tile_is_refused(tmp_path: Path) -> None:
    from affine import Affine

    path = write_tile(tmp_path / "rot.tif", tile_values(1), 0, 0)
    with rasterio.open(path, "r+") as ds:
        ds.transform = Affine(RES, 5.0, ORIGIN[0], 0.0, -RES, ORIGIN[1])
    with pytest.raises(IntegrityError, match="rot.tif.*rotated"):
        mosaic.open_mosaic([path])


def test_two_dates_must_share_the_grid(tmp_path: Path) -> None:
    a = write_tile(tmp_path / "d1" / "a.tif", tile_values(1), 0, 0)
    b = write_tile(tmp_path / "d2" / "b.tif", tile_values(2), 0, 0, shift=(50.0, 0.0))
    with pytest.raises(IntegrityError, match="not aligned"):
        open_geotiff([a, b], ["2020-01-01", "2021-01-01"], WORLD, name="v")


# --------------------------------------------------------------------------- crop and time


def test_bbox_crop_is_lazy_and_exact(tmp_path: Path) -> None:
    files, expected = grid_product(tmp_path / "p", 3, 3)
    full = static(files, WORLD)
    left, top = ORIGIN[0] + 50 * RES, ORIGIN[1] - 30 * RES  # a window across tile edges
    right, bottom = left + 90 * RES, top - 70 * RES
    bbox = transform_bounds("EPSG:3035", "EPSG:4326", left, bottom, right, top, densify_pts=21)
    crop = static(files, list(bbox))
    assert crop.chunks is not None and crop.dtype == np.uint8
    want = transform_bounds("EPSG:4326", "EPSG:3035", *bbox, densify_pts=21)  # the request, in the tiles' CRS
    x, y = crop.x.values, crop.y.values
    # the crop rule: exactly the pixels whose centres lie in the request (none outside, none left out)
    assert want[0] <= x[0] < want[0] + RES and want[2] - RES < x[-1] <= want[2]
    assert want[1] <= y[-1] < want[1] + RES and want[3] - RES < y[0] <= want[3]
    np.testing.assert_array_equal(crop.values, full.sel(x=crop.x, y=crop.y).values)
    r0 = int(round((ORIGIN[1] - (y[0] + RES / 2)) / RES))
    c0 = int(round((x[0] - RES / 2 - ORIGIN[0]) / RES))
    np.testing.assert_array_equal(crop.values, expected[r0:r0 + len(y), c0:c0 + len(x)])
    assert tuple(crop.rio.transform())[:6] == (RES, 0.0, x[0] - RES / 2, 0.0, -RES, y[0] + RES / 2)
    with pytest.raises(IntegrityError, match="no pixel of the tiles lies in the requested bbox"):
        static(files, [100.0, -40.0, 110.0, -30.0])


def test_dates_stacked_sorted_on_one_grid(tmp_path: Path) -> None:
    early, early_expected = grid_product(tmp_path / "p" / "2019", 2, 2, seed=1)
    late, late_expected = grid_product(tmp_path / "p" / "2021", 2, 2, seed=2, skip=((0, 0),))
    files = [late[0], early[0], *late[1:], *early[1:]]  # interleaved, latest first
    times = ["2021-06-01T00:00:00Z"] + ["2019-06-01T00:00:00Z"] + ["2021-06-01T00:00:00Z"] * (len(late) - 1) \
        + ["2019-06-01T00:00:00Z"] * (len(early) - 1)
    var = open_geotiff(files, times, WORLD)
    assert var.dims == ("time", "y", "x") and var.dtype == np.uint8
    assert list(var.time.values) == [np.datetime64("2019-06-01", "ns"), np.datetime64("2021-06-01", "ns")]
    assert var.chunks[0] == (1, 1)
    np.testing.assert_array_equal(var.sel(time="2019-06-01").values, early_expected)
    np.testing.assert_array_equal(var.isel(time=1).values, late_expected)  # the 2021 hole is nodata
    assert (var.isel(time=1).values[:TH, :TW] == 255).all()
    (early_index,) = (tmp_path / "p" / "2019" / "Results").glob("mosaic-*.vrt")
    early_index.unlink()  # one date rebuilt from its tiles, the other read from its index: same result
    again = open_geotiff(files, times, WORLD)
    np.testing.assert_array_equal(again.values, var.values)


def test_dates_with_different_extents_share_the_union_grid(tmp_path: Path) -> None:
    a = write_tile(tmp_path / "d1" / "a.tif", tile_values(1), 0, 0)
    b = write_tile(tmp_path / "d2" / "b.tif", tile_values(2), 1, 1)  # a different tile on the same grid
    var = open_geotiff([a, b], ["2020-01-01", "2021-01-01"], WORLD, name="v")
    assert var.shape == (2, 2 * TH, 2 * TW)
    np.testing.assert_array_equal(var.values[0, :TH, :TW], tile_values(1))
    np.testing.assert_array_equal(var.values[1, TH:, TW:], tile_values(2))
    assert (var.values[0, TH:, TW:] == 255).all() and (var.values[1, :TH, :TW] == 255).all()


# --------------------------------------------------------------------------- laziness


def test_reading_a_window_touches_only_the_tiles_under_it(tmp_path: Path) -> None:
    files, expected = grid_product(tmp_path / "p", 4, 4)
    var = static(files, WORLD)  # opened: all tiles present
    keep = mosaic.open_mosaic(files).tiles
    under = [t.path for t in keep if t.row == TH and t.col in (TW, 2 * TW)]  # tiles (1,1) and (1,2)
    assert len(under) == 2
    for path in files:
        if path not in under:
            path.unlink()  # 14 of 16 tiles gone
    window = var.isel(y=slice(TH + 5, 2 * TH - 5), x=slice(TW + 10, 3 * TW - 10))
    np.testing.assert_array_equal(window.values, expected[TH + 5:2 * TH - 5, TW + 10:3 * TW - 10])
    with pytest.raises(IntegrityError, match=r"cannot read .*\.tif"):
        var.values  # the full read needs the deleted tiles, and says so (never silent nodata)


def test_open_reads_headers_once_then_only_the_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files, _ = grid_product(tmp_path / "p", 3, 3)
    static(files, WORLD)
    (corner,) = [t.path for t in mosaic.open_mosaic(files).tiles if t.row == 0 and t.col == 0]
    opened: list[str] = []
    real_open = rasterio.open

    def spy(path: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(rasterio, "open", spy)  # count the files GDAL opens through rasterio
    var = static(files, WORLD, name="FTY")  # the names a view keeps
    assert opened == []  # reopening reads the VRT index only
    var.isel(y=slice(0, 10), x=slice(0, 10)).values
    assert opened == [str(corner)]  # a corner window opens the corner tile, and only it


# --------------------------------------------------------------------------- the manifest and the sandbox's products


def test_open_files_on_a_stored_layout(tmp_path: Path) -> None:
    files, expected = grid_product(tmp_path / "product" / "data" / "FTY_2015", 2, 2)
    var = open_geotiff(files, ["2015-01-01T00:00:00Z"] * len(files), WORLD, index_dir=tmp_path)
    assert var.dims == ("time", "y", "x") and var.name == "FTY"
    assert [str(t)[:10] for t in var.time.values] == ["2015-01-01"]
    assert len(list(tmp_path.glob("mosaic-*.vrt"))) == 1  # the index went where it was asked to
    np.testing.assert_array_equal(var.isel(time=0).values, expected)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> ProductStore:
    return ProductStore(tmp_path_factory.mktemp("store"), size="tiny")


def _assert_tiles_in_mosaic(var: Any, paths: list[Path]) -> int:
    """Every tile's pixels that fall in the mosaic equal the mosaic's there; the count of pixels compared."""
    xd, yd = spatial_dims(var)  # x/y on a projected grid, lon/lat on a geographic one
    x, y, values = var[xd].values, var[yd].values, var.values
    a, e = float(x[1] - x[0]), float(y[1] - y[0])
    compared = 0
    for path in paths:
        with rasterio.open(path) as src:
            data = src.read(1)
            t = src.transform
        assert abs(t.a - a) < abs(a) / 1e6 and abs(t.e - e) < abs(e) / 1e6
        c0 = (t.c + t.a / 2 - x[0]) / a  # the tile's first pixel, in mosaic pixels (may lie outside)
        r0 = (t.f + t.e / 2 - y[0]) / e
        assert abs(c0 - round(c0)) < 1e-6 and abs(r0 - round(r0)) < 1e-6  # on the mosaic's grid
        c0, r0 = round(c0), round(r0)
        cs, ce = max(0, c0), min(len(x), c0 + data.shape[1])
        rs, re_ = max(0, r0), min(len(y), r0 + data.shape[0])
        if cs >= ce or rs >= re_:
            continue
        got = values[rs:re_, cs:ce]
        np.testing.assert_array_equal(got, data[rs - r0:re_ - r0, cs - c0:ce - c0], err_msg=path.name)
        compared += got.size
    return compared


@pytest.mark.parametrize("key,grid_codes,bbox,epsg", [
    ("clms_vlcc_tree-cover-density_europe_10m_yearly_v1", True, (9.0, 45.0, 13.0, 48.0), 3035),  # europe_tiles
    ("clms_vlcc_tree-cover-density_europe_10m_yearly_v1", False, (9.0, 45.0, 13.0, 48.0), 3035),  # renamed
    ("corine-land-cover-2018", True, (0.0, 40.0, 20.0, 55.0), 3035),  # europe_tiles_nogrid
    ("global-dynamic-land-cover", True, (-10.0, 30.0, 30.0, 60.0), 4326),  # global_tiles (lon/lat)
])
def test_sandbox_tiled_products_mosaic_correctly(store: ProductStore, tmp_path: Path, key: str, grid_codes: bool,
                                                 bbox: tuple[float, ...], epsg: int) -> None:
    paths = store.tiles(key, bbox=bbox, grid_codes=grid_codes)
    assert len(paths) >= 2
    folder = tmp_path / "product"
    local = []
    for i, p in enumerate(paths):  # as a product folder holds them (nested, any names)
        target = folder / f"part{i % 3}" / p.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, target)
        local.append(target)
    random.Random(4).shuffle(local)
    var = static(local, WORLD)
    assert var.rio.crs.to_epsg() == epsg and var.dtype == np.uint8 and var.rio.nodata == 255
    assert _assert_tiles_in_mosaic(var, local) == sum(mosaic.read_tile(p).width * mosaic.read_tile(p).height
                                                      for p in local)  # every pixel of every tile
    (index,) = folder.glob("mosaic-*.vrt")  # beside the tiles (their common folder)
    with rasterio.open(index) as vrt:  # GDAL reads the same mosaic from the VRT index
        assert vrt.crs.to_epsg() == epsg  # the same grid (coordinates are rounded to 1e-9 of a unit)
        np.testing.assert_allclose(tuple(vrt.transform)[:6], tuple(var.rio.transform())[:6], rtol=0, atol=1e-9)
        np.testing.assert_array_equal(vrt.read(1), var.values)
    crop = static(local, list(bbox))
    assert 0 < crop.size <= var.size and crop.dtype == np.uint8
    xd, yd = spatial_dims(var)
    assert (xd, yd) == (("lon", "lat") if epsg == 4326 else ("x", "y"))  # the contract's dimension names
    np.testing.assert_array_equal(crop.values, var.sel({xd: crop[xd], yd: crop[yd]}).values)


def test_index_built_at_publish_survives_the_rename_and_open_writes_nothing(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    product = tmp_path / "products" / "P1"
    files, expected = grid_product(product / "data", 2, 2)
    times = ["2015-01-01T00:00:00Z"] * len(files)
    names = tiles_mod.names_of(files)
    assert set(names) == {"FTY"}
    staging = tmp_path / "views" / ".staging-v1"  # the view's staging folder, as the engine's publish makes it
    staging.mkdir(parents=True)
    tiles_mod.index(files, times, names, staging)
    (built,) = staging.glob("mosaic-*.vrt")
    view = tmp_path / "views" / "v1"
    staging.rename(view)  # the view's atomic publish
    before = sorted(p for p in tmp_path.rglob("*"))

    def no_headers(paths: Any) -> Any:
        raise AssertionError(f"read tile headers {paths} although the index exists")

    monkeypatch.setattr(mosaic, "read_tiles", no_headers)  # opening reads the renamed index, no header
    var = open_geotiff(files, ["2015-01-01"] * len(files), WORLD, names=names,  # another spelling of the date
                       index_dir=view)
    np.testing.assert_array_equal(var.isel(time=0).values, expected)
    assert sorted(p for p in tmp_path.rglob("*")) == before  # nothing written: products and view untouched
    assert (view / built.name).is_file()


def test_unwritable_index_falls_back_to_memory(tmp_path: Path) -> None:
    files, expected = grid_product(tmp_path / "p", 1, 2)
    index = tmp_path / "p" / "Results" / mosaic._index_name([f.resolve() for f in files],
                                                            (tmp_path / "p" / "Results").resolve(), STATIC)
    index.mkdir()  # something else holds the name: the index cannot be written there
    m = mosaic.open_mosaic(files, STATIC)
    assert m.vrt is None and len(m.tiles) == 2
    values = static(files, WORLD).values
    np.testing.assert_array_equal(values, expected)
    assert not [p for p in index.parent.iterdir() if p.name.endswith(".tmp")]  # no temp file left behind


def test_tiled_entry_through_the_whole_lifecycle(hda_env: Any) -> None:
    """A WEkEO entry delivered as EPSG:3035 GeoTIFF tiles (one product per tile and year), over real HTTP."""
    from intake_clms.source import ClmsSource

    from .lifecycle_helpers import FAST

    tcd = "clms_vlcc_tree-cover-density_europe_10m_yearly_v1"
    bbox = [9.5, 47.8, 10.8, 48.8]  # around the corner of four EEA tiles, where the sandbox holds data
    src = ClmsSource(dataset_id="EO:JRC:DAT:CLMS", dataset_identifier=tcd, bbox=bbox, start="2018-01-01",
                     end="2019-12-31", service="wekeo", max_products=40, **FAST)
    ds = src.to_dask()
    raw = ClmsSource(dataset_id="EO:JRC:DAT:CLMS", dataset_identifier=tcd, bbox=bbox, start="2018-01-01",
                     end="2019-12-31", service="wekeo", max_products=40, decode=False, **FAST).to_dask()
    (name,) = ds.data_vars
    assert name != "band_data" and list(raw.data_vars) == [name]
    decoded, var = ds[name], raw[name]
    assert var.dims == ("time", "y", "x") and var.dtype == np.uint8 and var.chunks is not None
    assert var.rio.nodata == 255 and ds.rio.crs.to_epsg() == 3035 and raw.rio.crs.to_epsg() == 3035
    assert decoded.dims == var.dims and decoded.dtype == np.float32  # the default: decoded, nodata -> NaN
    stored = var.values
    np.testing.assert_array_equal(np.isnan(decoded.values), stored == 255)
    assert [str(t)[:10] for t in var.time.values] == ["2018-01-01", "2019-01-01"]
    want = transform_bounds("EPSG:4326", "EPSG:3035", *bbox, densify_pts=21)
    assert want[0] <= float(var.x.min()) and float(var.x.max()) <= want[2]  # centres inside the bbox
    assert want[1] <= float(var.y.min()) and float(var.y.max()) <= want[3]
    from intake_clms.sandbox.truth import reference  # the crop: every pixel of the data inside the bbox

    ref = reference(hda_env.ctx.store, tcd, bbox, "2018-01-01", "2019-12-31", decode=False)
    np.testing.assert_allclose(var.x.values, ref.x.values, rtol=0, atol=1e-6)
    np.testing.assert_allclose(var.y.values, ref.y.values, rtol=0, atol=1e-6)
    store = hda_env.ctx.store
    for i, year in enumerate((2018, 2019)):
        tiles = store.tiles(tcd, bbox=bbox, year=year)
        assert _assert_tiles_in_mosaic(var.isel(time=i), tiles) == var.isel(time=i).size  # every pixel checked


def test_a_corine_file_without_band_description_is_named_after_the_product(tmp_path: Path) -> None:
    """Issue 17: CORINE's U2018_CLC2018_V2020_20u1.tif gave the variable ``U`` (its update code); the short
    name rule skips one-letter codes before digits (U2018, V2020, E42N30) and keeps the product's name."""
    from intake_clms.assemble.contract import variable_name

    files = [write_tile(tmp_path / "U2018_CLC2018_V2020_20u1.tif", tile_values(1), 0, 0)]
    with rasterio.open(files[0]) as src:
        assert not src.descriptions[0]  # as the real files: no band description to name it
    ds = assemble.open_files("geotiff", files, [None], None)
    assert list(ds.data_vars) == ["CLC"]
    assert variable_name("", "U2018_CHA1218_V2020_20u1_E42N30.tif") == "CHA"  # the changes layer, a tile
    for name, expected in [("IMD_2018_010m_E48N27_03035_v020.tif", "IMD"), ("U2018.tif", "U"),
                           ("c_gls_NDVI300_202401010000_GLOBE_OLCI_V2.0.1.nc", "NDVI"), ("2018.tif", "value"),
                           ("E000N60_PROBAV_LC100_global_v3.0.1_2019-nrt_Discrete-Classification-map_EPSG-4326.tif",
                            "PROBAV"), ("CLMS_CLCplus_RASTER_2018_010m_eu_03035_V1_1_part001.tif", "CLCPLUS")]:
        assert variable_name("", name) == expected, name
