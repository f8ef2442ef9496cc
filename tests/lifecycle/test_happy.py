"""Happy path and reopening from the cache, against the sandbox over real HTTP."""

from __future__ import annotations

import numpy as np
import xarray as xr

from .lifecycle_helpers import BBOX, ndvi_source, store, view_of


def test_preload_gives_lazy_cropped_dataset_with_crs(hda_env):
    src = ndvi_source()
    ds = src.to_dask()
    assert isinstance(ds, xr.Dataset)
    ndvi = ds["NDVI"]
    assert ndvi.chunks is not None  # dask-backed, lazy
    assert ndvi.dims == ("time", "lat", "lon")
    assert ds.sizes["time"] == 3
    assert list(ds["time"].values) == sorted(ds["time"].values)
    assert float(ds.lon.min()) >= BBOX[0] and float(ds.lon.max()) <= BBOX[2]
    assert float(ds.lat.min()) >= BBOX[1] and float(ds.lat.max()) <= BBOX[3]
    assert ds.rio.crs.to_epsg() == 4326
    assert ndvi.encoding["dtype"] == np.uint8  # native dtype kept in the encoding, CF-decoded values
    # values equal the sandbox's own file, cropped the same way
    item = hda_env.ctx.store.items("ndvi_global_300m_10daily_v2", None, "2024-01-01", "2024-01-10")[0]
    ref = xr.open_dataset(hda_env.ctx.store.materialize(item))["NDVI"].sel(lat=slice(50, 45), lon=slice(5, 10))
    np.testing.assert_allclose(ndvi.isel(time=0).values, ref.isel(time=0).values, equal_nan=True)
    assert hda_env.log.count("hda", "order") == 3


def test_reopening_from_cache_makes_no_http_call(hda_env, monkeypatch):
    ndvi_source().to_dask()
    before = len(hda_env.log.entries())
    monkeypatch.delenv("HDA_USER")
    monkeypatch.delenv("HDA_PASSWORD")
    ds = ndvi_source().to_dask()
    assert ds.sizes["time"] == 3
    assert len(hda_env.log.entries()) == before
    assert view_of(ndvi_source()) is not None
    st = store()
    assert len(list(st.products.keys())) == 3
    assert not [p for p in st.downloads.rglob("*") if p.is_file()], "downloads are removed once their product is stored"
    assert not any((st.root / "staging").iterdir())
