"""Recovery and edge paths of the lifecycle against the sandbox: waiting out a near quota, re-ordering
a forgotten order or a dead link, the GeoTIFF mosaic end to end, refusing bad parameters before any
network call, product-level attributes, and tokens renewed in time on their honest lifetime."""

from __future__ import annotations

import datetime as dt
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import xarray as xr
from rasterio.warp import transform_bounds

from intake_clms import cli
from intake_clms.errors import ParameterError
from intake_clms.engine import PreloadError, QuotaError
from intake_clms.errors import OrderExpiredError
from intake_clms.catalog.resolve import load_sources
from intake_clms.source import ClmsSource

from .lifecycle_helpers import FAST, NDVI, Lockstep, ndvi_source, store, view_of

ONE = {"start": "2024-01-01", "end": "2024-01-05"}  # a single 10-daily product


def _use(sb: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Point the HDA_* variables at another sandbox (the cache stays hda_env's)."""
    for name, value in sb.env().items():
        monkeypatch.setenv(name, value)
    return sb


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under root with its size and mtime: what "the cache is unchanged" compares."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


# --------------------------------------------------------------------------- 1. quota


def test_near_quota_reset_is_waited_out_then_the_order_goes_through(hda_env):
    reset_after = 15.0  # sandbox seconds: a quarter of a real second at the test clock's 60x
    hda_env.faults.add("quota", "hda", "order", reset_after=reset_after)
    t0 = time.monotonic()
    ds = ndvi_source(**ONE).to_dask()
    assert ds.sizes["time"] == 1 and int(ds["NDVI"].count()) > 0  # the product arrived
    orders = hda_env.log.entries("hda", "order")
    assert [e.status for e in orders] == [429, 200]  # one refusal, one retry: not hammered
    # the retry came once the quota had freed (log times are sandbox-clock seconds) ...
    assert orders[1].time >= orders[0].time + reset_after - 0.5
    # ... which, X-Quota-Reset being wall-clock, is a quarter of a real second, not an hour
    assert time.monotonic() - t0 >= reset_after / hda_env.clock.speed


def test_far_quota_reset_names_the_wall_clock_time_it_frees(hda_env):
    # test_failures covers this branch (QuotaError, one order, nothing published); this checks the time it names
    reset_after = 6 * 3600.0  # sandbox seconds: 6 real minutes at 60x, beyond the client's quota_wait
    hda_env.faults.add("quota", "hda", "order", reset_after=reset_after)
    expected = time.time() + reset_after / hda_env.clock.speed
    with pytest.raises(QuotaError) as info:
        ndvi_source(**ONE).to_dask()
    m = re.search(r"frees at (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC", str(info.value))
    assert m, str(info.value)
    named = dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=dt.timezone.utc).timestamp()
    assert abs(named - expected) < 5, "the message names when the quota frees on the user's clock"


# --------------------------------------------------------------------------- 2. forgotten orders, dead links


def _download_ids(sb: Any, endpoint: str) -> list[str]:
    return [e.path.rsplit("/", 1)[-1] for e in sb.log.entries("hda", endpoint)]


@pytest.mark.parametrize(
    "kind, endpoint",
    [
        ("order_expired", "download_head"),  # the server forgot the order while it queued
        ("order_expired", "download"),  # ... or between the ready HEAD and the GET
        ("expired_link", "download_head"),  # the finished order's link answers 404
    ],
)
def test_forgotten_order_or_dead_link_is_ordered_again_once(hda_env, kind, endpoint):
    hda_env.faults.add(kind, "hda", endpoint)
    src = ndvi_source(**ONE)
    ds = src.to_dask()
    assert ds.sizes["time"] == 1
    assert [e.status for e in hda_env.log.entries("hda", "order")] == [200, 200]  # exactly one new order
    assert 404 in [e.status for e in hda_env.log.entries("hda", endpoint)]
    first, second = dict.fromkeys(_download_ids(hda_env, "download_head"))  # two orders, polled in turn
    assert _download_ids(hda_env, "download")[-1] == second  # the file came from the new order
    assert store().jobs.all() == []  # the job is over once its product is stored
    assert first != second
    assert view_of(src) is not None


def test_a_dead_download_link_asks_the_same_order_again_before_ordering_anew(hda_env):
    """Issue 18 (7): a 404 on the GET of a finished order cost a second order; the order still stood."""
    hda_env.faults.add("expired_link", "hda", "download")
    ds = ndvi_source(**ONE).to_dask()
    assert ds.sizes["time"] == 1
    assert [e.status for e in hda_env.log.entries("hda", "order")] == [200]
    assert [e.status for e in hda_env.log.entries("hda", "download")][:2] == [404, 200]
    assert len(set(_download_ids(hda_env, "download"))) == 1  # the one order's file, fetched twice


def test_an_order_forgotten_twice_fails_instead_of_looping(hda_env):
    hda_env.faults.add("order_expired", "hda", "download_head", times=2)
    src = ndvi_source(**ONE)
    with pytest.raises(PreloadError) as info:
        src.to_dask()
    assert all(isinstance(e, OrderExpiredError) for e in info.value.failures.values())
    assert hda_env.log.count("hda", "order") == 2
    assert view_of(src) is None


# --------------------------------------------------------------------------- 3. GeoTIFF tiles mosaicked


HRL_ENTRY = "eo_eea_dat_hrl_imp"  # HRL imperviousness, old WEkEO ID: EPSG:3035 uint8 tiles (sandbox pattern europe_tiles)
HRL_BBOX = [9.5, 47.8, 10.8, 48.8]  # across four 100 km tiles of the EEA grid (E42-43, N27-28)


def test_geotiff_tiles_are_mosaicked_by_their_geotransforms(hda_env):
    args = load_sources(None)[HRL_ENTRY]["args"]
    spec = hda_env.ctx.store.dataset(args["dataset_id"])
    assert spec.pattern == "europe_tiles" and spec.crs == "EPSG:3035"
    src = ClmsSource(dataset_id=args["dataset_id"], bbox=HRL_BBOX, start="2018-01-01", end="2018-12-31",
                     service="wekeo", **FAST)
    ds = src.to_dask()

    items = hda_env.ctx.store.items(spec.key, HRL_BBOX, "2018-01-01", "2018-12-31")
    assert len({i.tile for i in items}) >= 4, "the bbox spans several tiles"
    assert hda_env.log.count("hda", "order") == len(items)
    (var,) = ds.data_vars.values()
    assert ds.rio.crs.to_epsg() == 3035
    assert var.dims == ("time", "y", "x") and ds.sizes["time"] == 1
    assert var.chunks is not None  # lazy
    assert np.uint8 in (var.dtype, var.encoding.get("dtype")), f"native uint8 kept (got {var.dtype})"
    xs, ys = ds["x"].values, ds["y"].values
    res = float(xs[1] - xs[0])
    assert res > 0 and float(ys[0] - ys[1]) == pytest.approx(res)  # x ascending, y descending, square pixels

    # the crop rule: exactly the pixels whose centres lie in the bbox (projected to the tiles' CRS), of the data
    west, south, east, north = transform_bounds("EPSG:4326", "EPSG:3035", *HRL_BBOX, densify_pts=21)
    assert west <= xs.min() and xs.max() <= east and south <= ys.min() and ys.max() <= north
    from intake_clms.sandbox.truth import reference

    ref = reference(hda_env.ctx.store, spec.key, HRL_BBOX, "2018-01-01", "2018-12-31", decode=False)
    np.testing.assert_allclose(xs, ref.x.values, rtol=0, atol=1e-6)
    np.testing.assert_allclose(ys, ref.y.values, rtol=0, atol=1e-6)

    # every pixel equals the source tile's pixel at the same coordinates; the tiles together fill the mosaic
    values = var.isel(time=0).values
    compared = nodata_seen = 0
    for item in items:
        with rasterio.open(hda_env.ctx.store.materialize(item)) as tif:
            tile, nodata, b = tif.read(1), tif.nodata, tif.bounds
            inv = ~tif.transform
        cols = np.flatnonzero((xs > b.left) & (xs < b.right))
        rows = np.flatnonzero((ys > b.bottom) & (ys < b.top))
        if not cols.size or not rows.size:
            continue
        tc = np.floor((inv * (xs[cols], np.full(cols.size, ys[rows[0]])))[0]).astype(int)
        tr = np.floor((inv * (np.full(rows.size, xs[cols[0]]), ys[rows]))[1]).astype(int)
        want = tile[np.ix_(tr, tc)]
        got = values[np.ix_(rows, cols)]
        valid = want != nodata
        assert valid.any(), f"tile {item.tile} has data in the bbox"
        np.testing.assert_array_equal(got[valid], want[valid], err_msg=f"tile {item.tile}")
        masked = got[~valid]  # nodata stays nodata: NaN if decoded to float, else the native fill value
        assert np.all(np.isnan(masked)) if masked.dtype.kind == "f" else np.all(masked == nodata)
        compared += got.size
        nodata_seen += masked.size
    assert compared == values.size, "each mosaic pixel comes from exactly one tile"
    (name,) = ref.data_vars
    fill = ref[name].attrs["_FillValue"]
    assert nodata_seen == int((ref[name].values == fill).sum()), "nodata where the product has nodata, nowhere else"


# --------------------------------------------------------------------------- 4. bad parameters


BAD = [
    ({"bbox": [10, 45, 5, 50]}, "bbox"),  # west > east
    ({"bbox": [5, 45, 10, 95]}, "bbox"),  # north out of range
    ({"bbox": [5, 45, 10]}, "bbox"),  # three numbers
    ({"start": "2024-02-01", "end": "2024-01-01"}, "end"),  # end before start
    ({"start": "2024-13-45"}, "start"),  # no such date
    ({"end": "last tuesday"}, "end"),
]


def _cli_args(bbox: Any, start: str, end: str, cache: Path) -> list[str]:
    box = ",".join(str(v) for v in bbox)
    return ["preload", NDVI["dataset_identifier"], "--bbox", box, "--start", start, "--end", end,
            "--service", "wekeo", "--cache-dir", str(cache), "-q"]


@pytest.fixture
def cache_with_content(hda_env, tmp_path: Path) -> Path:
    """The test cache folder holding a file, so "left as it was" compares something."""
    root = tmp_path / "cache"
    root.mkdir()
    (root / "keep.txt").write_text("untouched")
    return root


@pytest.mark.parametrize("bad, field", BAD)
def test_bad_parameters_are_refused_before_any_http_call(hda_env, cache_with_content, bad, field):
    before = _snapshot(cache_with_content)
    params = {"bbox": [5, 45, 10, 50], **ONE, **bad}
    with pytest.raises(ParameterError) as info:
        ClmsSource(**NDVI, service="wekeo", **params, **FAST).preload()
    assert info.value.name == field and str(info.value).startswith(f"{field}: ")
    assert hda_env.log.count() == 0  # not one request, on any service
    assert _snapshot(cache_with_content) == before


@pytest.mark.parametrize("bad, field", BAD)
def test_preload_command_refuses_bad_parameters_with_exit_2(hda_env, cache_with_content, capsys, bad, field):
    before = _snapshot(cache_with_content)
    params = {"bbox": [5, 45, 10, 50], **ONE, **bad}
    code = cli.main(_cli_args(params["bbox"], params["start"], params["end"], cache_with_content))
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"intake-clms preload: error: {field}: "), err
    assert hda_env.log.count() == 0
    assert _snapshot(cache_with_content) == before


# --------------------------------------------------------------------------- 5. product attributes


def test_dataset_attrs_hold_only_what_every_time_step_shares(hda_env):
    ds = ndvi_source().to_dask()  # three 10-daily steps
    assert ds.sizes["time"] == 3
    store = hda_env.ctx.store
    steps = []
    for item in store.items(NDVI["dataset_identifier"], None, "2024-01-01", "2024-01-31"):
        with xr.open_dataset(store.materialize(item)) as f:
            steps.append(dict(f.attrs))
    assert len(steps) == 3
    keys = set().union(*steps)
    common = {k: steps[0][k] for k in keys if all(k in s and s[k] == steps[0][k] for s in steps)}
    differing = keys - set(common)
    # the generator's per-file attributes: a step's date must not pass for the product's
    assert {"time_coverage_start", "time_coverage_end", "title", "identifier"} <= differing
    assert not differing & set(ds.attrs), f"step-specific attrs presented as the product's: {sorted(differing & set(ds.attrs))}"
    # the contract: the Dataset's attributes are the conventions and the provenance, nothing of one file
    assert set(ds.attrs) - {"Conventions"} <= {"clms_entry", "clms_dataset_id", "clms_dataset_identifier",
                                               "clms_service", "clms_access", "clms_products"}
    assert ds.attrs["clms_service"] == "wekeo" and ds.attrs["clms_access"] == "download"
    # and the variable keeps the product's CF meaning, as every file states it
    with xr.open_dataset(store.materialize(store.items(NDVI["dataset_identifier"], None, "2024-01-01",
                                                       "2024-01-31")[0])) as f:
        for name in ds.data_vars:
            for k in ("units", "long_name", "standard_name"):
                if f[name].attrs.get(k):
                    assert ds[name].attrs[k] == f[name].attrs[k], (name, k)


# --------------------------------------------------------------------------- 6. honest token lifetimes


def test_tokens_are_renewed_before_they_expire_during_a_long_queue_wait(sandbox_factory, hda_env, monkeypatch):
    # tokens live 20 s, the order queues 300 s: all on a fake clock (no real sleep, no wall-clock race;
    # the real-time version of this test failed intermittently under load)
    sb = _use(sandbox_factory(speed=1.0, token_lifetime=20.0, queue_delay=300.0), monkeypatch)
    clock = Lockstep(sb)
    ds = ndvi_source(**ONE, clock=clock, poll_first=2.0, poll_cap=10.0, poll_deadline=3600).to_dask()
    assert ds.sizes["time"] == 1
    assert sum(clock.slept) >= 300  # the whole queue wait happened, on the fake clock
    assert sb.log.count("hda", "download_head") >= 3  # several status calls across the tokens' life
    assert [e for e in sb.log.entries("hda") if e.status == 401] == []  # renewed in time: never refused
    assert sb.log.count("hda", "refresh") + sb.log.count("hda", "token") >= 10  # ... by renewals


def test_a_token_is_not_renewed_while_it_has_long_to_live(hda_env):
    # the test sandbox's tokens live 60 real seconds (a sandbox hour at 60x); the whole run takes < 1 s,
    # so a fixed early-renewal margin of a minute would refresh before every call
    ndvi_source(**ONE).to_dask()
    assert hda_env.log.count("hda", "token") == 1
    assert hda_env.log.count("hda", "refresh") == 0
