"""One truth per product: the NetCDF, COG, GeoTIFF tiles and CLMS API cut-outs of a product hold the same
integers at the same pixel centres on its real grid, and agree pixel by pixel with ``truth.reference``."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

rasterio = pytest.importorskip("rasterio")

from intake_clms.sandbox import rasters  # noqa: E402
from intake_clms.sandbox.datagen import ProductStore  # noqa: E402
from intake_clms.sandbox.truth import reference  # noqa: E402

UTC = dt.timezone.utc
NDVI = "ndvi_global_300m_10daily_v2"
TCD = "clms_hrl_tree-cover-density_europe_10m_3yearly_v1"
ALPS = (5.0, 45.0, 6.0, 46.0)  # the small Alps box of the tests
HRL = (9.5, 47.8, 10.8, 48.8)  # across four 100 km EEA tiles


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> ProductStore:
    return ProductStore(tmp_path_factory.mktemp("truth"), seed=0, size="tiny")


def _tcd(store: ProductStore) -> str:
    """A pan-European tiled product of the catalog (tree cover density, 10 or 20 m)."""
    for key in (TCD, "clms_hrl_tree-cover-density_europe_20m_3yearly_v1"):
        try:
            return store.dataset(key).key
        except KeyError:
            continue
    return next(s.key for s in store.datasets() if s.pattern == "europe_tiles")


# --------------------------------------------------------------------------- the array and the grids


def test_values_do_not_depend_on_the_window(store: ProductStore) -> None:
    t = dt.datetime(2024, 1, 1, tzinfo=UTC)
    for key in (NDVI, _tcd(store), "forest-type-2015", "global-dynamic-land-cover"):
        r0, r1, c0, c1 = store.data_window(key)
        whole = store.raw(key, t, (r0, r1, c0, c1))
        for dr, dc, h, w in ((0, 0, 7, 9), (3, 5, 50, 33), (101, 13, 17, 250), (r1 - r0 - 5, c1 - c0 - 6, 5, 6)):
            part = store.raw(key, t, (r0 + dr, r0 + dr + h, c0 + dc, c0 + dc + w))
            np.testing.assert_array_equal(part, whole[dr:dr + h, dc:dc + w], err_msg=f"{key} at {dr},{dc}")
        assert len(np.unique(whole)) > 1


def test_grids_are_the_products_real_ones(store: ProductStore) -> None:
    g = store.grid(NDVI)  # 300 m: 1/336 degree, centres at -180 + i/336 and 80 - j/336
    assert g.res == pytest.approx(1 / 336) and g.x0 == -180.0 and g.y0 == 80.0 and (g.width, g.height) == (120960, 47040)
    assert store.grid("lai_global_1km_10daily_v2").res == pytest.approx(1 / 112)
    assert store.grid("soil-water-index-12-5km-10-daily-v3").res == pytest.approx(0.1)
    g = store.grid("forest-type-2015")  # 100 m on the EEA grid: pixel edges on the 100 km tile edges
    assert g.crs == "EPSG:3035" and g.res == 100.0 and g.x0 == 50.0
    tiny, small = store.data_window(NDVI), ProductStore(store.data_dir, size="small").data_window(NDVI)
    assert small[0] < tiny[0] and small[2] < tiny[2]  # a larger extent on the same grid
    with xr.open_dataset(store.materialize(store.items(NDVI, start="2024-01-01", end="2024-01-01")[0])) as ds:
        i = np.rint((ds.lon.values + 180) * 336)
        j = np.rint((80 - ds.lat.values) * 336)
        np.testing.assert_allclose(ds.lon.values, -180 + i / 336, atol=1e-9)
        np.testing.assert_allclose(ds.lat.values, 80 - j / 336, atol=1e-9)
        assert (np.diff(i) == 1).all() and (np.diff(j) == 1).all()


# --------------------------------------------------------------------------- every format agrees with the reference


def _netcdf(path: Path, bbox, decode: bool) -> xr.Dataset:
    ds = xr.open_dataset(path, mask_and_scale=decode)
    w, s, e, n = bbox
    return ds.sel(lat=slice(n, s), lon=slice(w, e)).load()


def test_netcdf_and_cog_hold_the_reference_pixels(store: ProductStore) -> None:
    start, end = "2024-01-01", "2024-01-20"
    ref = reference(store, NDVI, ALPS, start, end, decode=False)
    dec = reference(store, NDVI, ALPS, start, end)
    assert ref.NDVI.dims == ("time", "lat", "lon") and ref.sizes["time"] == 2 and ref.sizes["lat"] > 100
    assert float(ref.lat[0]) > float(ref.lat[-1])
    ncs = [store.materialize(i) for i in store.items(NDVI, start=start, end=end)]
    cogs = [store.materialize(i) for i in store.items(NDVI, start=start, end=end, format="cog")]
    for k, (nc, cog) in enumerate(zip(ncs, cogs)):
        raw = _netcdf(nc, ALPS, decode=False)
        np.testing.assert_array_equal(raw.NDVI.values[0], ref.NDVI.values[k])
        np.testing.assert_allclose(raw.lat.values, ref.lat.values, atol=1e-9)
        np.testing.assert_allclose(raw.lon.values, ref.lon.values, atol=1e-9)
        assert raw.time.values[0] == ref.time.values[k]
        decoded = _netcdf(nc, ALPS, decode=True)
        assert decoded.NDVI.dtype == np.float32
        np.testing.assert_array_equal(decoded.NDVI.values[0], dec.NDVI.values[k])  # bit for bit, NaN for fill
        with rasterio.open(cog) as src:
            t = src.transform
            col0 = int(round((float(ref.lon[0]) - t.c) / t.a - 0.5))
            row0 = int(round((t.f - float(ref.lat[0])) / -t.e - 0.5))
            window = ((row0, row0 + ref.sizes["lat"]), (col0, col0 + ref.sizes["lon"]))
            np.testing.assert_array_equal(src.read(1, window=window), ref.NDVI.values[k])
            assert t.c + (col0 + 0.5) * t.a == pytest.approx(float(ref.lon[0]), abs=1e-9)
            # the same metadata in every format
            var = store.variable(NDVI)
            assert src.descriptions[0] == var.name == "NDVI" and "NDVI" in raw.data_vars
            assert src.dtypes[0] == str(raw.NDVI.dtype) == "uint8"
            assert src.nodata == raw.NDVI.attrs["_FillValue"] == ref.NDVI.attrs["_FillValue"] == 255
            assert src.scales[0] == pytest.approx(float(raw.NDVI.attrs["scale_factor"]))
            assert src.offsets[0] == pytest.approx(float(raw.NDVI.attrs["add_offset"]))
            assert src.units[0] == raw.NDVI.attrs["units"] == ref.NDVI.attrs["units"]
            assert src.tags(1)["long_name"] == raw.NDVI.attrs["long_name"] == ref.NDVI.attrs["long_name"]
        assert raw.crs.attrs["grid_mapping_name"] == "latitude_longitude"


def _mosaic(paths: list[Path], ref: xr.Dataset, name: str) -> np.ndarray:
    """The reference's crop, read from tiles by each tile's own geotransform (nodata where no tile has it)."""
    first = ref[name]
    out = np.full(first.shape[1:], -1, dtype=np.int32)
    xs, ys = ref.x.values, ref.y.values
    for path in paths:
        with rasterio.open(path) as src:
            t = src.transform
            assert src.descriptions[0] == name
            data = src.read(1)
            cols = np.rint((xs - t.c) / t.a - 0.5).astype(int)
            rows = np.rint((t.f - ys) / -t.e - 0.5).astype(int)
            ci = np.nonzero((cols >= 0) & (cols < src.width))[0]
            ri = np.nonzero((rows >= 0) & (rows < src.height))[0]
            if len(ci) and len(ri):
                out[np.ix_(ri, ci)] = data[np.ix_(rows[ri], cols[ci])]
    return out


def test_tiles_and_pan_european_cogs_hold_the_reference_pixels(store: ProductStore) -> None:
    key = _tcd(store)
    spec = store.dataset(key)
    year = spec.start.year
    ref = reference(store, key, HRL, f"{year}-01-01", f"{year}-12-31", decode=False)
    name = rasters.variable_name(spec)
    assert list(ref.data_vars) == [name] and ref[name].dims == ("time", "y", "x")
    assert ref.sizes["y"] > 100 and ref.sizes["x"] > 100 and float(ref.y[0]) > float(ref.y[-1])
    tiles = store.tiles(key, bbox=HRL, year=year)
    assert len(tiles) == 4  # the extent spans the corner of four tiles
    np.testing.assert_array_equal(_mosaic(tiles, ref, name), ref[name].values[0])
    cogs = [store.materialize(i) for i in store.items(key, bbox=HRL, start=f"{year}-01-01", end=f"{year}-01-01",
                                                       format="cog")]
    np.testing.assert_array_equal(_mosaic(cogs, ref, name), ref[name].values[0])


def test_clms_cutouts_are_crops_of_the_reference(store: ProductStore) -> None:
    ref = reference(store, "forest-type-2015", HRL, decode=False)
    step = store.tile_step("forest-type-2015")[0]
    with rasterio.open(store.cutout("forest-type-2015", step, HRL)) as src:
        assert (src.height, src.width) == (ref.sizes["y"], ref.sizes["x"])  # exactly the centres in the bbox
        assert src.transform.c + src.transform.a / 2 == pytest.approx(float(ref.x[0]))
        assert src.transform.f + src.transform.e / 2 == pytest.approx(float(ref.y[0]))
        np.testing.assert_array_equal(src.read(1), ref.FTY.values[0])
        assert src.descriptions[0] == "FTY" and ref.time.values[0] == np.datetime64("2015-01-01")
    swi = "soil-water-index-12-5km-10-daily-v3"
    ref = reference(store, swi, ALPS, "2020-01-01", "2020-01-01", decode=False)
    with xr.open_dataset(store.cutout(swi, dt.datetime(2020, 1, 1, tzinfo=UTC), ALPS, "nc"),
                         mask_and_scale=False) as ds:
        np.testing.assert_array_equal(ds.SWI_010.values, ref.SWI_010.values)
        np.testing.assert_allclose(ds.lat.values, ref.lat.values, atol=1e-9)


def test_cut_to_order_results_hold_the_reference_crop(sandbox) -> None:
    """The CLMS API's result builder for a bbox request: its zip holds the crop of the one array."""
    import io
    import zipfile

    from intake_clms.sandbox.clms_api import state

    store = sandbox.ctx.store
    ds = next(d for d in state(sandbox.ctx).catalog(sandbox.ctx) if d.spec is not None
              and d.spec.key == "forest-type-2015")
    from intake_clms.sandbox.clms_api import _data_files

    members = _data_files(sandbox.ctx, ds, {"kind": "general", "bbox": HRL, "output": "Geotiff"})
    ref = reference(store, "forest-type-2015", HRL, decode=False)
    assert len(members) == 1
    with rasterio.open(members[0]) as src:
        np.testing.assert_array_equal(src.read(1), ref.FTY.values[0])
    # and the result zip holds those bytes
    zpath = store.result_zip(members)
    with zipfile.ZipFile(zpath) as zf:
        inner = next(n for n in zf.namelist() if n.endswith(".zip"))
        with zipfile.ZipFile(io.BytesIO(zf.read(inner))) as iz:
            tif = next(n for n in iz.namelist() if n.endswith(".tif"))
            assert iz.read(tif) == Path(members[0]).read_bytes()
