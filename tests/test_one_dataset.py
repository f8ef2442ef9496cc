"""One request, one Dataset: the same answer through every service, access, cache state, worker and export.

The matrix (issue 14): a product family x the paths that can serve it, each compared with one reference
on variable names, dims, coords, dtype, variable attributes, values and CRS (the Dataset's ``clms_*``
provenance attributes are the only thing allowed to differ).  The sandbox serves one array per product in
every format (NetCDF, COG, GeoTIFF tiles, CLMS cut-outs), so the values must agree exactly.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest
import xarray as xr

from intake_clms.sandbox import Sandbox
from intake_clms.source import ClmsSource

NDVI = {"dataset_id": "EO:JRC:DAT:CLMS", "dataset_identifier": "ndvi_global_300m_10daily_v2"}
QUERY = {"bbox": [5, 45, 6, 46], "start": "2024-01-01", "end": "2024-01-15"}
FAST = {"poll_first": 0.05, "poll_cap": 0.2, "poll_deadline": 60, "backoff": 0.01}
CLOSED = "http://127.0.0.1:9"  # nothing listens there: a read that needs the network fails


@pytest.fixture(scope="module")
def sb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    box = Sandbox(data_dir=tmp_path_factory.mktemp("one-dataset-sandbox"), speed=60.0, queue_delay=6.0).start()
    yield box
    box.stop()


def environment(values: dict[str, str]):  # noqa: ANN201
    """These variables set for the duration of a block, then restored."""
    return mock.patch.dict(os.environ, values)


def _fresh_process_state() -> None:
    from intake_clms.services.cdse import auth, budget

    auth.forget_managers()
    budget._BUDGET = None


def read(sb: Sandbox, cache: Path, *, offline: bool = False, load: bool = True, **kw: Any) -> xr.Dataset:
    """A request through the sandbox (or with every service URL pointing at a closed port: offline)."""
    env = {**sb.env(), "INTAKE_CLMS_CACHE": str(cache), "HDA_RC": str(cache / "no-hdarc"),
           "NETRC": str(cache / "no-netrc")}
    if offline:
        env.update({k: CLOSED for k in env if k.endswith("_URL") or k.endswith("ENDPOINT")})
    _fresh_process_state()
    with environment(env):
        args = {**QUERY, **FAST, **kw}
        ds = ClmsSource(**NDVI, **args).to_dask()
        return ds.load() if load else ds


def assert_same(a: xr.Dataset, b: xr.Dataset, what: str) -> None:
    """Everything but the provenance attributes is identical (values exactly: one array per product)."""
    assert list(a.data_vars) == list(b.data_vars), what
    assert dict(a.sizes) == dict(b.sizes), what
    assert set(a.dims) == set(b.dims), what  # each variable's dims are compared in order below
    for name in a.data_vars:
        va, vb = a[name], b[name]
        assert va.dims == vb.dims, (what, name)
        assert va.dtype == vb.dtype, (what, name, va.dtype, vb.dtype)
        assert set(va.attrs) == set(vb.attrs), (what, name, va.attrs, vb.attrs)
        for key in va.attrs:
            np.testing.assert_array_equal(np.asarray(va.attrs[key]), np.asarray(vb.attrs[key]), err_msg=f"{what}: {key}")
        np.testing.assert_array_equal(va.values, vb.values, err_msg=f"{what}: {name}")
    for c in ("time", *a[list(a.data_vars)[0]].dims[1:]):
        np.testing.assert_array_equal(a[c].values, b[c].values, err_msg=f"{what}: coordinate {c}")
    assert a.rio.crs == b.rio.crs, what
    keep = {k: v for k, v in a.attrs.items() if not k.startswith("clms_")}
    assert keep == {k: v for k, v in b.attrs.items() if not k.startswith("clms_")}, what


def test_the_contract_of_one_request(sb: Sandbox, tmp_path: Path) -> None:
    """The reference path's Dataset is what the contract promises: names, dims, decoding, CRS, provenance."""
    ds = read(sb, tmp_path / "ref", service="wekeo")
    assert list(ds.data_vars) == ["NDVI"] and ds["NDVI"].dims == ("time", "lat", "lon")
    assert ds["NDVI"].dtype == np.float32 and float(ds["NDVI"].max()) <= 1.0
    assert ds["NDVI"].encoding["dtype"] == np.uint8 and "scale_factor" in ds["NDVI"].encoding
    assert ds.rio.crs.to_epsg() == 4326 and "spatial_ref" in ds.coords
    assert ds.attrs["clms_service"] == "wekeo" and ds.attrs["clms_access"] == "download"
    west, south, east, north = QUERY["bbox"]
    assert float(ds.lon.min()) >= west and float(ds.lon.max()) <= east
    assert float(ds.lat.min()) >= south and float(ds.lat.max()) <= north
    assert ds.lat.values[0] > ds.lat.values[-1]  # north-up, as the product
    text = repr(ds) + repr(ds.attrs) + repr({n: ds[n].encoding for n in ds.variables})
    assert str(tmp_path) not in text  # no path of the cache shows in the data


@pytest.mark.parametrize("path", ["clms", "cdse-download", "cdse-window"])
def test_every_service_and_access_gives_the_reference(sb: Sandbox, tmp_path: Path, path: str) -> None:
    ref = read(sb, tmp_path / "ref", service="wekeo")
    kw = {"clms": {"service": "clms"}, "cdse-download": {"service": "cdse", "access": "download"},
          "cdse-window": {"service": "cdse", "access": "window"}}[path]
    got = read(sb, tmp_path / path, **kw)
    assert got.attrs["clms_service"] == kw["service"]
    assert_same(ref, got, path)


def test_decode_false_gives_the_same_integers_on_every_path(sb: Sandbox, tmp_path: Path) -> None:
    ref = read(sb, tmp_path / "ref", service="wekeo", decode=False)
    assert ref["NDVI"].dtype == np.uint8 and {"scale_factor", "add_offset", "_FillValue"} <= set(ref["NDVI"].attrs)
    for label, kw in [("clms", {"service": "clms"}), ("cdse-window", {"service": "cdse", "access": "window"})]:
        assert_same(ref, read(sb, tmp_path / label, decode=False, **kw), f"{label} decode=False")
    decoded = read(sb, tmp_path / "ref", service="wekeo")  # the same stored request, decoded
    raw = ref["NDVI"]
    expected = np.where(raw.values == raw.attrs["_FillValue"], np.nan,
                        raw.values.astype("float32") * np.float32(raw.attrs["scale_factor"])
                        + np.float32(raw.attrs["add_offset"]))
    np.testing.assert_array_equal(decoded["NDVI"].values, expected)


def test_reopen_offline_and_a_second_service_give_the_stored_answer(sb: Sandbox, tmp_path: Path) -> None:
    ref = read(sb, tmp_path / "c", service="cdse", access="window")
    assert_same(ref, read(sb, tmp_path / "c", offline=True, service="cdse", access="window"), "offline reopen")
    assert_same(ref, read(sb, tmp_path / "c", offline=True, service="wekeo"), "second service on a stored request")


def test_a_dask_cluster_with_processes_computes_the_same(sb: Sandbox, tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed")
    ref = read(sb, tmp_path / "c", service="cdse", access="window")
    env = {**sb.env(), "INTAKE_CLMS_CACHE": str(tmp_path / "c")}
    with environment(env):
        lazy = ClmsSource(**NDVI, **QUERY, **FAST, service="cdse", access="window").to_dask()
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cl:
            with distributed.Client(cl):
                got = lazy.compute()
    assert_same(ref, got, "LocalCluster(processes=True)")


@pytest.mark.parametrize("fmt", ["netcdf", "zarr"])
def test_an_export_opens_to_the_same_dataset(sb: Sandbox, tmp_path: Path, fmt: str) -> None:
    import intake

    from intake_clms.export import export_catalog

    ref = read(sb, tmp_path / "c", service="cdse", access="window")
    path = export_catalog(tmp_path / "out", cache_dir=tmp_path / "c", zarr=fmt == "zarr")
    cat = intake.open_catalog(str(path))
    (name,) = list(cat)
    got = cat[name].to_dask().load()
    assert_same(ref, got, f"export {fmt}")


# --------------------------------------------------------------------------- the other "Why" rows of issue 14


def test_auto_reads_small_and_large_areas_as_the_same_variable(sb: Sandbox, tmp_path: Path) -> None:
    """With CDSE credentials, auto reads a small bbox by window and a large one by download: same Dataset shape."""
    small = read(sb, tmp_path / "a", bbox=[5, 45, 6, 46])
    large = read(sb, tmp_path / "b", bbox=[-100, -50, 100, 60], load=False)
    assert small.attrs["clms_access"] == "window" and large.attrs["clms_access"] == "download"
    assert list(small.data_vars) == list(large.data_vars) == ["NDVI"]
    assert small["NDVI"].dtype == large["NDVI"].dtype == np.float32
    assert small["NDVI"].attrs == large["NDVI"].attrs
    part = large["NDVI"].sel(lon=slice(5, 6), lat=slice(46, 45))
    assert float(part.max()) <= 1.0 and float(small["NDVI"].max()) <= 1.0  # decoded, not counts
    np.testing.assert_array_equal(part.values, small["NDVI"].values)  # the same pixels whichever access


def test_a_login_is_refused_under_auto_naming_the_keyword() -> None:
    from intake_clms.errors import ParameterError

    with pytest.raises(ParameterError) as err:
        ClmsSource(**NDVI, **QUERY, username="someone", password="secret")
    assert err.value.name == "username" and "service='wekeo'" in str(err.value) and "secret" not in str(err.value)


@pytest.mark.parametrize("service", ["wekeo", "cdse"])
def test_a_login_reaches_only_the_identity_server_of_its_service(sb: Sandbox, tmp_path: Path, service: str) -> None:
    """Both services' credentials are in the environment too; the keywords go to the named service only,
    and the other identity server receives no request at all."""
    env = sb.env()
    login = ({"username": env["HDA_USER"], "password": env["HDA_PASSWORD"]} if service == "wekeo"
             else {"username": env["CDSE_USERNAME"], "password": env["CDSE_PASSWORD"]})
    before = len(sb.log.entries())
    read(sb, tmp_path / service, service=service, **login, **({"access": "window"} if service == "cdse" else {}))
    hosts = {e.service for e in sb.log.entries()[before:] if "token" in e.endpoint or "auth" in e.endpoint}
    assert hosts == {"hda" if service == "wekeo" else "cdse"}


def test_a_cdse_login_given_is_used_for_window_reads_never_ignored(sb: Sandbox, tmp_path: Path) -> None:
    """S3 keys are in the environment; a wrong CDSE password given as keywords fails instead of being ignored."""
    from intake_clms.errors import ClmsError

    with pytest.raises(ClmsError) as err:
        read(sb, tmp_path / "w", service="cdse", access="window", username=sb.env()["CDSE_USERNAME"],
             password="not-the-password")
    assert "not-the-password" not in str(err.value)


def test_preload_on_the_command_line_reports_what_to_dask_gives(sb: Sandbox, tmp_path: Path) -> None:
    """`intake-clms preload forest-type-2015 --service clms --file ...` and to_dask() of the same request agree."""
    import re
    import subprocess
    import sys

    env = {**os.environ, **sb.env(), "INTAKE_CLMS_CACHE": str(tmp_path / "c"), "HDA_RC": str(tmp_path / "x")}
    run = subprocess.run([sys.executable, "-m", "intake_clms.cli", "preload", "forest-type-2015", "--service", "clms",
                          "--file", "FTY_2015_100m_eu_03035_d02_Full", "-q"], env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    reported = dict((k, int(v)) for k, v in re.findall(r"'(\w+)': (\d+)", run.stderr.split("dims", 1)[1]))
    with environment({**sb.env(), "INTAKE_CLMS_CACHE": str(tmp_path / "c")}):
        ds = ClmsSource("forest-type-2015", service="clms", file="FTY_2015_100m_eu_03035_d02_Full").to_dask()
    assert reported == dict(ds.sizes)
    assert ds.rio.crs.to_epsg() == 3035 and set(ds.dims) == {"time", "y", "x"}


# --------------------------------------------------------------------------- other product families, against the truth

HRL = [9.5, 47.8, 10.8, 48.8]  # across four 100 km EEA tiles


def _tiled(sb: Sandbox) -> str:
    """A pan-European product in GeoTIFF tiles (EPSG:3035) that WEkEO and CDSE both serve."""
    store = sb.ctx.store
    return next(s.key for s in store.datasets() if s.pattern == "europe_tiles" and s.dataset_identifier
                and s.migration_status != "not migrated" and "cog" in store.formats(s.key))


def _truth(sb: Sandbox, key: str, bbox: list[float], start: Any, end: Any, decode: bool = True) -> xr.Dataset:
    from intake_clms.sandbox.truth import reference

    return reference(sb.ctx.store, key, bbox, start, end, decode=decode)


def assert_truth(ref: xr.Dataset, got: xr.Dataset, what: str) -> None:
    """A path's Dataset against the sandbox's reference: names, dims, coords, dtype, attributes, values, CRS."""
    assert list(got.data_vars) == list(ref.data_vars), what
    for name in ref.data_vars:
        assert got[name].dims == ref[name].dims, (what, name)
        assert got[name].dtype == ref[name].dtype, (what, name)
        for key in ("units", "long_name", "flag_values", "scale_factor", "add_offset", "_FillValue"):
            if key in ref[name].attrs:
                np.testing.assert_array_equal(np.asarray(got[name].attrs.get(key)), np.asarray(ref[name].attrs[key]),
                                              err_msg=f"{what}: {name}.{key}")
        np.testing.assert_array_equal(got[name].values, ref[name].values, err_msg=f"{what}: {name}")
    for c in ref[list(ref.data_vars)[0]].dims:
        np.testing.assert_allclose(got[c].values.astype("float64") if c != "time" else got[c].values.astype("int64"),
                                   ref[c].values.astype("float64") if c != "time" else ref[c].values.astype("int64"),
                                   rtol=0, atol=1e-9, err_msg=f"{what}: coordinate {c}")
    assert got.rio.crs == ref.rio.crs, what


def test_the_global_netcdf_family_holds_the_truth(sb: Sandbox, tmp_path: Path) -> None:
    for decode in (True, False):
        ref = _truth(sb, "ndvi_global_300m_10daily_v2", QUERY["bbox"], QUERY["start"], QUERY["end"], decode)
        for label, kw in [("wekeo", {"service": "wekeo"}), ("cdse-window", {"service": "cdse", "access": "window"})]:
            assert_truth(ref, read(sb, tmp_path / f"{label}-{decode}", decode=decode, **kw), f"{label} decode={decode}")


@pytest.mark.parametrize("path", ["wekeo", "cdse-download", "cdse-window"])
def test_the_pan_european_tiles_family_holds_the_truth(sb: Sandbox, tmp_path: Path, path: str) -> None:
    """GeoTIFF tiles in EPSG:3035 mosaicked (WEkEO, CDSE downloads) or read by window: one answer."""
    kw = {"wekeo": {"service": "wekeo"}, "cdse-download": {"service": "cdse", "access": "download"},
          "cdse-window": {"service": "cdse", "access": "window"}}[path]
    key = _tiled(sb)
    year = sb.ctx.store.dataset(key).start.year
    span = {"bbox": HRL, "start": f"{year}-01-01", "end": f"{year}-12-31"}
    env = {**sb.env(), "INTAKE_CLMS_CACHE": str(tmp_path / "c"), "HDA_RC": str(tmp_path / "x"), "NETRC": str(tmp_path / "x")}
    _fresh_process_state()
    with environment(env):
        got = ClmsSource("EO:JRC:DAT:CLMS", key, **span, **FAST, max_products=50, **kw).to_dask().load()
    ref = _truth(sb, key, HRL, span["start"], span["end"])
    assert got.rio.crs.to_epsg() == 3035 and got[list(got.data_vars)[0]].dims == ("time", "y", "x")
    assert_truth(ref, got, path)


def test_a_clms_cut_to_order_request_holds_the_truth(sb: Sandbox, tmp_path: Path) -> None:
    """A CLMS download API cut-to-order (forest type, EPSG:3035) gives the reference crop of the one array."""
    env = {**sb.env(), "INTAKE_CLMS_CACHE": str(tmp_path / "c"), "HDA_RC": str(tmp_path / "x")}
    _fresh_process_state()
    with environment(env):
        got = ClmsSource("forest-type-2015", bbox=HRL, service="clms", output_format="Geotiff", crs="EPSG:3035",
                         **FAST).to_dask().load()
    assert_truth(_truth(sb, "forest-type-2015", HRL, None, None), got, "clms cut-to-order")


def test_a_sub_area_of_a_stored_request_says_it_is_not_kept_when_the_service_is_unreachable(
        sb: Sandbox, tmp_path: Path) -> None:
    from intake_clms.errors import ServiceUnreachableError

    read(sb, tmp_path / "c", service="cdse", access="window")
    with pytest.raises(ServiceUnreachableError) as err:
        read(sb, tmp_path / "c", offline=True, service="cdse", access="window", bbox=[5.2, 45.2, 5.8, 45.8],
             attempts=1)
    assert "not in the cache" in str(err.value) and "another bbox" in str(err.value)
