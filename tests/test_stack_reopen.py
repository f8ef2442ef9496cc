"""A stacked window view reopens through xarray's own decoding (``contract.from_stored``) and gives exactly
what :func:`~intake_clms.assemble.contract.normalise` gives for the same file: values, dtypes, attributes,
encodings and CRS, decoded and raw (issue 16: a reopen of a long series at the cost of one NetCDF open)."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import rasterio.transform
import xarray as xr

from intake_clms.assemble import open_stack, write_stack
from intake_clms.assemble.contract import Provenance, normalise
from intake_clms.assemble.netcdf import grid_crs

CASES = {
    # name: (crs, transform, dtype, nodata, scale, offset, description)
    "ndvi": ("EPSG:4326", rasterio.transform.from_origin(7.0, 47.0, 1 / 336, 1 / 336), "uint8", 255, 0.004, -0.08, "NDVI"),
    "imd": ("EPSG:3035", rasterio.transform.from_origin(4_000_000, 3_000_000, 100, 100), "uint8", 255, 1.0, 0.0, ""),
    "lst": ("EPSG:4326", rasterio.transform.from_origin(-10.0, 60.0, 0.05, 0.05), "int16", -32768, 0.01, 273.15, "LST"),
}


def windows(tmp_path, case, steps=5):
    crs, transform, dtype, nodata, scale, offset, desc = CASES[case]
    rng = np.random.default_rng(1)
    files, dates = [], []
    for i in range(steps):
        path = tmp_path / f"{case.upper()}_2021{i + 1:02d}01_w.tif"
        data = rng.integers(0, 200, size=(1, 6, 7)).astype(dtype)
        data[0, 0, 0] = nodata
        with rasterio.open(path, "w", driver="GTiff", width=7, height=6, count=1, dtype=dtype, crs=crs,
                           transform=transform, nodata=nodata) as out:
            out.write(data)
            out.scales, out.offsets = (scale,), (offset,)
            if desc:
                out.set_band_description(1, desc)
        files.append(path)
        dates.append(f"2021-{i + 1:02d}-01")
    return files, dates


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("decode", [True, False])
def test_reopen_equals_normalise(tmp_path, case, decode):
    files, dates = windows(tmp_path, case)
    target = tmp_path / "windows.nc"
    write_stack(files, dates, dates, target)
    prov = Provenance(entry="e", dataset_id="d", service="cdse", access="window", products=("a", "b"))
    fast = open_stack(target, decode=decode, provenance=prov)
    raw = xr.open_dataset(target, engine="netcdf4", mask_and_scale=False, decode_coords="all").chunk({"time": 2})
    slow = normalise(raw, crs=grid_crs(raw), times=None, decode=decode, provenance=prov)
    xr.testing.assert_identical(fast, slow)
    for name in fast.variables:
        assert fast[name].dtype == slow[name].dtype, name
        assert fast[name].encoding == slow[name].encoding, (name, fast[name].encoding, slow[name].encoding)
    assert fast.rio.crs == slow.rio.crs
    assert str(tmp_path) not in repr(fast.to_dict(data=False))  # no cache path in data or encoding
    loaded = fast.load()
    name = next(iter(fast.data_vars))
    if decode:
        assert np.isnan(loaded[name].values[0, 0, 0])
    else:
        assert loaded[name].values[0, 0, 0] == CASES[case][3]


def test_reopen_falls_back_for_files_not_in_stored_form(tmp_path):
    """A stacked file without the contract's CRS variable is normalised (the CRS from the grid mapping)."""
    files, dates = windows(tmp_path, "ndvi", steps=2)
    target = tmp_path / "windows.nc"
    write_stack(files, dates, dates, target)
    ds = xr.open_dataset(target, decode_coords="all").load()
    ds.drop_vars("spatial_ref").to_netcdf(tmp_path / "bare.nc")
    got = open_stack(tmp_path / "bare.nc")
    assert got.rio.crs.to_epsg() == 4326 and "spatial_ref" in got.coords
    assert list(got.data_vars) == ["NDVI"] and got.NDVI.dtype == np.float32


@pytest.mark.parametrize("crs,dims", [("EPSG:4326", ("lat", "lon")), ("EPSG:3035", ("y", "x"))])
def test_the_cached_crs_form_is_rioxarrays(crs, dims):
    """normalise works the CF form of a CRS out once per CRS; it is what rioxarray writes on the Dataset itself."""
    ny, nx = dims
    raw = xr.Dataset({"v": (("time", ny, nx), np.arange(12, dtype="uint8").reshape(1, 3, 4), {"_FillValue": 255})},
                     coords={"time": [np.datetime64("2021-01-01", "ns")], ny: [3.0, 2.0, 1.0], nx: [0.0, 1.0, 2.0, 3.0]})
    ours = normalise(raw, crs=crs, times=None)
    var = ours.v.variable.copy()
    var.encoding = {k: v for k, v in var.encoding.items() if k != "grid_mapping"}
    theirs = xr.Dataset({"v": var}, coords={"time": ours.time.values, ny: ours[ny].values, nx: ours[nx].values},
                        attrs=ours.attrs)
    theirs = theirs.rio.set_spatial_dims(x_dim=nx, y_dim=ny).rio.write_crs(crs).rio.write_coordinate_system()
    xr.testing.assert_identical(ours, theirs)
    assert ours.v.encoding["grid_mapping"] == theirs.v.encoding["grid_mapping"] == "spatial_ref"
    assert ours.rio.crs == theirs.rio.crs


def test_a_reopened_stack_has_the_rio_accessor_in_a_fresh_process(tmp_path):
    """Users read ``ds.rio.crs`` from what a reopen returns, without importing rioxarray themselves."""
    import subprocess
    import sys

    files, dates = windows(tmp_path, "imd", steps=2)
    write_stack(files, dates, dates, tmp_path / "windows.nc")
    code = ("import sys; from pathlib import Path; from intake_clms.assemble import open_stack; "
            "ds = open_stack(Path(sys.argv[1])); print(ds.rio.crs.to_epsg())")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "windows.nc")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "3035"


def test_a_long_stack_is_chunked_so_one_step_reads_its_own_chunk(tmp_path, monkeypatch):
    """Each chunk of a stacked view reads only its own time steps (no single whole-stack chunk rechunked:
    selecting one step of a long large window must not read the whole stack)."""
    import intake_clms.assemble as assemble

    files, dates = windows(tmp_path, "ndvi", steps=5)
    write_stack(files, dates, dates, tmp_path / "windows.nc")
    monkeypatch.setattr(assemble, "STACK_CHUNK_BYTES", 6 * 7 * 4 * 2)  # two steps a chunk
    ds = open_stack(tmp_path / "windows.nc")
    assert ds.NDVI.data.chunks[0] == (2, 2, 1)
    layers = list(ds.NDVI.data.__dask_graph__().layers)
    assert not [name for name in layers if name.startswith("rechunk")], layers
    from dask.core import flatten

    one = ds.NDVI.isel(time=0).data
    needed = one.__dask_graph__().cull(set(flatten(one.__dask_keys__())))
    reads = [k for k in dict(needed) if isinstance(k, tuple) and str(k[0]).startswith("xarray-NDVI")]
    assert len(reads) == 1  # the one chunk holding step 0, not all three
