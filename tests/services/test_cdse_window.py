"""Window reads of CDSE COGs against the sandbox, through the engine: the pixels whose centres lie in the bbox,
equal to the source file's; few bytes; the connection cap; credentials kept out of reprs, logs, graphs and the
store; scoped GDAL settings; kept windows reopen offline and compute on dask.distributed workers alike."""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")

from intake_clms.errors import ClmsError, CredentialsError, ParameterError  # noqa: E402
from intake_clms.sandbox import cog  # noqa: E402
from intake_clms.services.cdse import s3  # noqa: E402
from intake_clms.source import ClmsSource  # noqa: E402

from .conftest import use_cdse  # noqa: E402

NDVI = "ndvi_global_300m_10daily_v2"


def corners(i0: int, j0: int, i1: int, j1: int) -> tuple[float, float, float, float]:
    """The lon/lat box whose edges are pixel corners of NDVI 300 m's grid (pixel centres at lon -180 + i/336,
    lat 80 - j/336): global columns i0..i1-1, rows j0..j1-1."""
    return (-180 + (i0 - 0.5) / 336, 80 - (j1 - 0.5) / 336, -180 + (i1 - 0.5) / 336, 80 - (j0 - 0.5) / 336)


# The tiny sandbox's NDVI COGs hold columns 62329..63671 and rows 10249..11591 (1343 x 1343 px, about 5.5-9.5 E,
# 45.5-49.5 N) in 128 px internal tiles, 121 of them; so "pixel (c, r) of the file" is column 62329 + c, row
# 10249 + r.  No edge below falls on a tile edge (a multiple of 128 px): there cog.tiles_under's float arithmetic
# can count a row or column of tiles more than the reader needs (px 256..768: 347439 B counted, 281693 B read).
BBOX = corners(62831, 10769, 62881, 10819)  # 50 x 50 px from pixel (502, 520): across one tile column edge,
# within one tile row; even offsets, so the 2x overview holds 25 x 25 of its own pixels
WIDE = corners(62529, 10449, 62929, 10749)  # 400 x 300 px from pixel (200, 200): 4 x 3 internal tiles per file
LARGE = corners(62629, 10549, 63329, 10849)  # 700 x 300 px from pixel (300, 300): 6 x 3 of the 121 tiles, so
# the tiles, not the headers, dominate the bytes, and still a small part of each file


GDAL_CHUNK = 16384  # GDAL's default CPL_VSIL_CURL_CHUNK_SIZE


def source(**kw) -> ClmsSource:
    args = dict(dataset_id="EO:JRC:DAT:CLMS", dataset_identifier=NDVI, bbox=list(BBOX), start="2020-01-01",
                end="2020-01-31", service="cdse", access="window")
    args.update(kw)
    return ClmsSource(**args)


def local_path(sb, name: str) -> Path:
    st = sb.ctx.state["cdse"]
    return st.path(st.find_by_name(name))


def centre_slice(first: float, step: float, n: int, lo: float, hi: float) -> slice:
    """The pixels of an axis whose centres lie in [lo, hi] (the contract's crop rule), computed here."""
    centres = first + (np.arange(n) + 0.5) * step
    inside = np.nonzero((centres >= lo - 1e-9) & (centres <= hi + 1e-9))[0]
    return slice(int(inside[0]), int(inside[-1]) + 1)


def local_window(path, bbox=BBOX, overview_level=None) -> np.ndarray:
    """The stored integers of the source file under ``bbox`` by the centre rule."""
    with rasterio.open(path, **({} if overview_level is None else {"overview_level": overview_level})) as src:
        t = src.transform
        cols = centre_slice(t.c, t.a, src.width, bbox[0], bbox[2])
        rows = centre_slice(t.f, t.e, src.height, bbox[3], bbox[1]) if t.e > 0 else \
            centre_slice(-t.f, -t.e, src.height, -bbox[3], -bbox[1])
        return src.read(1)[rows, cols]


def products_of(ds) -> list[str]:
    """The COG names of the dataset's dates (the sandbox names products by date)."""
    dates = [str(t)[:10].replace("-", "") for t in ds.time.values]
    return [f"c_gls_NDVI300_{d}0000_GLOBE_OLCI_V2.0.1_cog" for d in dates]


def tile_bytes(path, bbox=BBOX) -> int:
    info = cog.layout(path)
    return sum(info["tiles"][t][1] for t in cog.tiles_under(info, bbox))


# --------------------------------------------------------------------------- values and bytes


def test_window_equals_the_source_pixels_decoded_and_raw(cdse_env):
    sb = cdse_env
    sb.log.clear()
    ds = source().to_dask()
    raw = source(decode=False).to_dask()  # the same stored request, its integers
    assert dict(ds.sizes) == {"time": 3, "lat": 50, "lon": 50} and list(ds.data_vars) == ["NDVI"]
    assert ds.NDVI.dims == ("time", "lat", "lon") and ds.NDVI.dtype == np.float32
    assert raw.NDVI.dtype == np.uint8 and raw.NDVI.attrs["_FillValue"] == 255
    assert ds.rio.crs.to_epsg() == 4326 and "spatial_ref" in ds.coords
    assert ds.attrs["clms_access"] == "window" and ds.attrs["clms_service"] == "cdse"
    paths = [local_path(sb, n) for n in products_of(ds)]
    stored, decoded = raw.NDVI.values, ds.NDVI.values
    for t, path in enumerate(paths):
        want = local_window(path)
        np.testing.assert_array_equal(stored[t], want)
        with rasterio.open(path) as src:
            scale, offset, nodata = src.scales[0], src.offsets[0], src.nodata
        np.testing.assert_array_equal(np.isnan(decoded[t]), want == nodata)
        np.testing.assert_allclose(decoded[t][want != nodata], (want[want != nodata] * scale + offset), rtol=1e-6)
        with rasterio.open(path) as src:  # the first pixel centre inside the bbox, on the file's grid
            first = src.transform.c + (np.ceil((BBOX[0] - src.transform.c) / src.transform.a - 0.5) + 0.5) \
                * src.transform.a
        assert abs(float(ds.lon[0]) - first) < 1e-9
    reads = [e for e in sb.log.entries(service="cdse", endpoint="s3") if e.method == "GET"]
    assert reads and all(e.range for e in reads)  # range requests only: no whole file


READ_IN_A_FRESH_PROCESS = """
import json, sys
from intake_clms.source import ClmsSource
src = ClmsSource(**json.loads(sys.argv[1]))
ds = src.to_dask()
print(json.dumps({"dates": [str(t)[:10] for t in ds.time.values], "reads": src.reads()}))
"""


def _read_in_a_fresh_process(sb, **kw) -> tuple[dict, list[Path]]:
    """A window read of ``source(**kw)``'s request in a fresh process, as a user's first read: other tests' reads
    change GDAL's process state (its read chunk stays at 16 KiB after tests/sandbox/test_cdse.py: 2x the bytes).
    (the child's dates and ``reads()``, the source files of its three products)."""
    import json
    import subprocess
    import sys

    sb.log.clear()
    args = dict(dataset_id="EO:JRC:DAT:CLMS", dataset_identifier=NDVI, bbox=list(BBOX), start="2020-01-01",
                end="2020-01-31", service="cdse", access="window")
    args.update(kw)
    run = subprocess.run([sys.executable, "-c", READ_IN_A_FRESH_PROCESS, json.dumps(args)], capture_output=True,
                         text=True, timeout=300, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    names = [f"c_gls_NDVI300_{d.replace('-', '')}0000_GLOBE_OLCI_V2.0.1_cog" for d in out["dates"]]
    paths = [local_path(sb, n) for n in names]
    assert len(paths) == 3
    return out, paths


def _fresh_read(sb) -> tuple[int, int, list[Path]]:
    """A window read of LARGE in a fresh process: (bytes the sandbox sent, compressed tile bytes under the bbox,
    files)."""
    out, paths = _read_in_a_fresh_process(sb, bbox=list(LARGE))
    tiles = sum(tile_bytes(p, LARGE) for p in paths)  # the sandbox's own count of the tiles under the bbox
    assert out["reads"]["bytes_read"] == tiles  # the records' bytes_read: exactly those tiles
    assert out["reads"]["products_size"] == sum(p.stat().st_size for p in paths)
    assert source(bbox=list(LARGE)).reads() == out["reads"]  # the same cache, read here
    reads = [e for e in sb.log.entries(service="cdse", endpoint="s3") if e.method == "GET"]
    sent = sum(e.bytes_sent for e in reads)
    assert reads and all(e.range for e in reads)
    return sent, tiles, paths


def test_bytes_read_are_the_tiles_under_the_bbox(cdse_env):
    sent, tiles, paths = _fresh_read(cdse_env)
    # the tiles within 20 %, plus one GDAL read chunk (16 KiB) per file: the test below holds without it
    assert tiles <= sent <= tiles * 1.2 + len(paths) * GDAL_CHUNK, (sent, tiles)
    assert sent * 5 < sum(p.stat().st_size for p in paths)


def test_bytes_read_are_within_a_fifth_of_the_tiles(cdse_env):
    """In a fresh process GDAL honours CdseAccess.env()'s 4 KiB read chunk: 4 KiB header reads and ranges rounded
    to 4 KiB (1.13x the tiles of LARGE on the tiny sandbox)."""
    sent, tiles, _ = _fresh_read(cdse_env)
    assert sent <= tiles * 1.2, (sent, tiles)


def test_https_path_with_the_bearer_token_when_no_s3_keys(cdse_env, monkeypatch):
    sb = cdse_env
    monkeypatch.delenv("CDSE_S3_ACCESS_KEY")
    _, paths = _read_in_a_fresh_process(sb, decode=False)  # the bytes of a first read (see above)
    assert not sb.log.entries(service="cdse", endpoint="s3")
    gets = [e for e in sb.log.entries(service="cdse") if e.method == "GET" and e.range]
    assert gets and sum(e.bytes_sent for e in gets) * 20 < sum(p.stat().st_size for p in paths)
    assert sb.ctx.state["cdse"].bearer_on_transfer == 0  # the token never went to the transfer host
    sb.log.clear()
    ds = source(decode=False).to_dask()  # here: the windows that read kept
    values = ds.NDVI.values
    for t, name in enumerate(products_of(ds)):
        np.testing.assert_array_equal(values[t], local_window(local_path(sb, name)))
    assert not [e for e in sb.log.entries(service="cdse") if e.range]


def test_overview_only_on_request(cdse_env, tmp_path):
    sb = cdse_env
    full = source().to_dask()
    over = source(overview_level=0, decode=False, cache_dir=str(tmp_path / "other")).to_dask()
    assert over.sizes["lat"] == full.sizes["lat"] // 2 and over.sizes["lon"] == full.sizes["lon"] // 2
    name = products_of(over)[1]
    with rasterio.open(local_path(sb, name), overview_level=0) as src:  # 1343 px -> 672: a step of 1343/672 px
        step = src.res[0]
    assert over.NDVI.rio.resolution()[0] == pytest.approx(step) and step == pytest.approx(
        2 * full.NDVI.rio.resolution()[0], rel=1e-3)  # the overview's own grid, about twice the pixel
    np.testing.assert_array_equal(over.NDVI.values[1], local_window(local_path(sb, name), overview_level=0))
    with pytest.raises(ClmsError, match="overview level 9"):
        source(overview_level=9, cache_dir=str(tmp_path / "third")).to_dask()


def test_an_overview_after_a_full_read_is_not_the_full_read(cdse_env):
    """overview_level changes the data, so it is part of the request: a stored full-resolution view never
    answers an overview request (nor the other way round), and a bad level is named before any call."""
    full = source().to_dask()
    over = source(overview_level=0).to_dask()
    assert over.sizes["lat"] == full.sizes["lat"] // 2
    assert source(overview_level=0).request.key() != source().request.key()
    assert source().to_dask().sizes == full.sizes  # the full view is still there, unchanged
    with pytest.raises(ParameterError, match="overview_level"):
        source(overview_level=-1)


# --------------------------------------------------------------------------- connection budget


def test_window_reads_never_exceed_the_connection_cap(cdse_env, monkeypatch):
    sb = cdse_env
    st = sb.ctx.state["cdse"]
    st.max_concurrent = 2
    monkeypatch.setenv("CDSE_MAX_CONNECTIONS", "2")
    st.reset_concurrency()
    ds = source(bbox=list(WIDE), end="2020-03-31", workers=6, decode=False).to_dask()  # 9 products at once
    seen = st.concurrency()
    user = sb.credentials["cdse"]["username"]
    assert 2 <= seen["peak"][user] <= 2 and seen["refused"].get(user, 0) == 0
    np.testing.assert_array_equal(ds.NDVI.values[0], local_window(local_path(sb, products_of(ds)[0]), WIDE))


# --------------------------------------------------------------------------- credentials


def _secrets(sb) -> list[bytes]:
    from intake_clms.services.cdse import auth

    env = sb.env()
    found = [env["CDSE_S3_SECRET_KEY"], env["CDSE_PASSWORD"], auth.process_token()]
    return [s.encode() for s in found if s]


@pytest.mark.parametrize("how", ["s3", "https"])
def test_no_secret_in_graphs_reprs_logs_or_the_store(cdse_env, monkeypatch, caplog, tmp_path, how):
    cloudpickle = pytest.importorskip("cloudpickle")
    sb = cdse_env
    if how == "https":
        monkeypatch.delenv("CDSE_S3_SECRET_KEY")
    caplog.set_level(logging.DEBUG)
    for name in ("rasterio", "urllib3", "intake_clms", "distributed", "botocore", "boto3"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    src = source()
    ds = src.to_dask()
    assert ds.NDVI.values.shape == (3, 50, 50)
    blob = cloudpickle.dumps(ds.__dask_graph__()) + pickle.dumps(ds)  # no raster access in the graph: it pickles
    shown = (repr(ds) + repr(src) + repr(ds.NDVI.data) + caplog.text + repr(dict(ds.__dask_graph__()))).encode()
    secrets = _secrets(sb)
    assert secrets
    for secret in secrets:
        assert secret not in blob and secret not in shown
    for path in (tmp_path / "cache").rglob("*"):  # kept windows and their records: no credential either
        if path.is_file():
            data = path.read_bytes()
            assert not any(secret in data for secret in secrets), path
    access = s3.CdseAccess(how, None, None, s3_keys=("AK", "a-secret-value") if how == "s3" else None)
    assert "a-secret-value" not in repr(access) and repr(access) == f"CdseAccess(mode={how!r})"
    with pytest.raises(TypeError, match="not pickled"):
        pickle.dumps(access)


def test_scoped_settings_leave_the_users_own_aws_and_gdal_settings(cdse_env, monkeypatch):
    from rasterio.env import get_gdal_config

    sb = cdse_env
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "the-users-own-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "the-users-own-secret")
    monkeypatch.setenv("AWS_S3_ENDPOINT", "s3.example.invalid")
    before = dict(os.environ)
    with rasterio.Env(GDAL_HTTP_TIMEOUT="33"):  # a setting of the user's own, around our read
        values = source().to_dask().NDVI.values
        assert get_gdal_config("GDAL_HTTP_TIMEOUT") == 33
        assert get_gdal_config("AWS_SECRET_ACCESS_KEY") == "the-users-own-secret"
    assert values.shape == (3, 50, 50)  # read with CDSE's keys and endpoint although the user's point elsewhere
    assert dict(os.environ) == before
    assert get_gdal_config("AWS_SECRET_ACCESS_KEY") == "the-users-own-secret"  # GDAL falls back to the environment
    assert get_gdal_config("GDAL_HTTP_TIMEOUT") is None and get_gdal_config("AWS_HTTPS") is None
    assert sb.log.entries(service="cdse", endpoint="s3")


def test_s3_access_without_keys_says_which_variables_to_set(monkeypatch):
    monkeypatch.delenv("CDSE_S3_ACCESS_KEY", raising=False)
    monkeypatch.delenv("CDSE_S3_SECRET_KEY", raising=False)
    with pytest.raises(CredentialsError, match="CDSE_S3_ACCESS_KEY and CDSE_S3_SECRET_KEY"):
        s3.CdseAccess(s3.S3, None, None)


def test_a_wrong_login_for_cdse_fails_instead_of_being_ignored(cdse_env):
    """S3 keys are set (they alone would read the windows): a username/password given for CDSE is the one used,
    so a wrong one fails, and nothing is stored; with service='auto' it is refused, asking for the service."""
    sb = cdse_env
    with pytest.raises(ClmsError, match="CDSE refused the credentials of user 'x'"):
        source(username="x", password="y").to_dask()
    assert source().reads()["products"] == 0  # nothing kept from the failed request
    assert not sb.log.entries(service="cdse", endpoint="s3")  # the keys were not used instead
    with pytest.raises(ClmsError, match="service="):
        source(service="auto", username="x", password="y").to_dask()


# --------------------------------------------------------------------------- kept windows


def test_a_reopen_reads_the_kept_windows_offline(sandbox_factory, tmp_path, monkeypatch):
    from intake_clms.engine.windows import window_key
    from intake_clms.store import Store

    sb = use_cdse(sandbox_factory(), tmp_path, monkeypatch)  # a sandbox of this test's own, to stop
    first = source().to_dask()
    values = first.NDVI.values
    store = Store()
    kept = sorted(p.name for p in store.products.products.iterdir() if ".w" in p.name)
    assert len(kept) == 3
    records = [store.products.check(k) for k in kept]
    assert all(r is not None and r.payload["window"][0]["height"] == 50 for r in records)
    assert kept == sorted(window_key(k.split(".w")[0], BBOX) for k in kept)  # keyed by product and bbox
    sb.stop()  # from here on, any HTTP call would fail
    again = source().to_dask()
    np.testing.assert_array_equal(again.NDVI.values, values)
    assert again.attrs["clms_access"] == "window"


# --------------------------------------------------------------------------- dask.distributed


def test_a_local_cluster_with_processes_computes_the_same_values(cdse_env):
    distributed = pytest.importorskip("distributed")
    sb = cdse_env
    ds = source(chunks={"lat": 25, "lon": 25}).to_dask()
    assert ds.NDVI.data.chunks == ((3,), (25, 25), (25, 25))  # lat/lon as asked; time steps grouped up to
    # assemble.STACK_CHUNK_BYTES (the kept windows are one stacked file)
    here = ds.NDVI.values
    sb.log.clear()
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=logging.ERROR) as cluster, distributed.Client(cluster) as client:
        there = client.compute(ds.NDVI).result().values
        pids = set(client.run(os.getpid).values())
    np.testing.assert_array_equal(there, here)
    assert os.getpid() not in pids
    assert sb.log.entries(service="cdse") == []  # the workers read the kept windows: no network, no credential


# --------------------------------------------------------------------------- the stack, written as products come


def test_the_stack_is_written_while_the_reads_run(cdse_env, monkeypatch, tmp_path):
    """Issue 16: a window view's stack is written as its products are stored (the fetched ones from the windows
    just read, those stored before from their kept files), so the publish only closes it; the Dataset is the
    one the publish-time path gives, and no staging folder is left behind."""
    from intake_clms import assemble
    from intake_clms.engine.core import Engine

    at_publish = []
    real = assemble.write_stack
    monkeypatch.setattr(assemble, "write_stack", lambda *a, **k: at_publish.append(a) or real(*a, **k))
    source(end="2020-01-15").to_dask()  # two of the month's three products, stored
    ds = source().to_dask().load()  # two stored before, one fetched: every row by the writer
    assert at_publish == []
    staging = Path(os.environ["INTAKE_CLMS_CACHE"])
    assert not [p for p in staging.rglob("*") if p.name.startswith(".view-") or "view-" in p.parent.name]

    monkeypatch.setenv("INTAKE_CLMS_CACHE", str(tmp_path / "publish-time"))
    monkeypatch.setattr(Engine, "_stack_writer", lambda self, hits: None)  # the publish stacks it all
    slow = source().to_dask().load()
    assert len(at_publish) == 1
    import xarray as xr

    xr.testing.assert_identical(ds, slow)
    for name in ds.variables:
        assert ds[name].encoding.get("dtype") == slow[name].encoding.get("dtype"), name


def test_a_failed_series_leaves_no_stack_behind(cdse_env, monkeypatch):
    """A product failing mid-series: nothing published, the stack being written removed with its staging
    folder (never a partial stack)."""
    sb = cdse_env
    sb.faults.add("status", service="cdse", endpoint="s3", status=400, times=1)  # one product's read refused
    with pytest.raises(ClmsError):
        source().to_dask()
    cache = Path(os.environ["INTAKE_CLMS_CACHE"])
    assert not list(cache.rglob("windows.nc")), "a partial stack was left"
    assert not [p for p in (cache.rglob("*view-*"))], "a staging folder was left"


RERUN = """
import sys
from intake_clms.errors import ClmsError
from intake_clms.source import ClmsSource
args = dict(dataset_id="EO:JRC:DAT:CLMS", dataset_identifier=sys.argv[1], bbox=[float(v) for v in sys.argv[2:6]],
            start="2020-01-01", end="2020-01-31", service="cdse", access="window")
try:
    ClmsSource(**args).to_dask()
    print("first: ok")
except ClmsError as exc:
    print("first: failed")
print("again:", ClmsSource(**args).to_dask().sizes["time"])
"""


def test_a_rerun_in_the_same_process_reads_the_file_again(cdse_env, tmp_path):
    """A notebook's rerun after a read error: GDAL keeps what it learnt from the error answer in its
    process-wide cache, and the rerun failed ("not recognized as being in a supported file format") without
    asking the server again, until the process ended; the failure now makes GDAL forget
    (:func:`intake_clms.net.gdalio.forget`).  A fresh process of its own: GDAL's cache is this test's alone."""
    import subprocess
    import sys

    cdse_env.faults.add("status", service="cdse", endpoint="s3", status=400, times=1)
    out = subprocess.run([sys.executable, "-c", RERUN, NDVI, *map(str, BBOX)], env=dict(os.environ),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "first: failed" in out.stdout and "again: 3" in out.stdout, out.stdout


def _flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_stack_damaged_in_place_reads_as_an_error_then_is_stacked_again_offline(sandbox_factory, tmp_path,
                                                                                  monkeypatch):
    """The stack is derived data with no hashes in any record: its chunks carry checksums, so a flipped pixel
    byte (same size) fails the read naming the file, never reads as another value; the file is then removed
    and the next open stacks the kept windows again without the network.  A header the library cannot read
    is stacked again at the open itself.  (On 4a0edb1 the flipped byte read as a wrong value.)"""
    import xarray as xr

    sb = use_cdse(sandbox_factory(), tmp_path, monkeypatch)
    values = source().to_dask().NDVI.values
    sb.stop()  # from here on, any HTTP call fails
    cache = Path(os.environ["INTAKE_CLMS_CACHE"])
    stack = next(cache.rglob("windows.nc"))
    with xr.open_dataset(stack, mask_and_scale=False) as raw:
        stored = raw.NDVI.values
        assert raw.NDVI.encoding.get("fletcher32") is True
    blob = stack.read_bytes()
    row = stored[1].tobytes()  # the second step's stored integers, somewhere in the file as they are
    at = blob.find(row)
    assert at > 0 and blob.count(row) == 1
    _flip(stack, at + len(row) // 2)
    with pytest.raises(ClmsError, match="windows.nc"):
        source().to_dask().NDVI.values
    assert not stack.exists()  # removed: derived data, stacked again from the kept windows
    np.testing.assert_array_equal(source().to_dask().NDVI.values, values)

    stack = next(p for p in cache.rglob("windows.nc"))
    _flip(stack, 2)  # the HDF5 signature: the file no longer opens
    np.testing.assert_array_equal(source().to_dask().NDVI.values, values)


def test_gdal_block_cache_is_capped_during_window_reads(cdse_env, monkeypatch):
    """Window reads cap GDAL's block cache at 64 MB unless the user set GDAL_CACHEMAX.  rasterio reports GDAL's
    cache size whether or not anyone set it, so the cap was taken for the user's own and never applied (a
    window preload held up to 5% of RAM in decoded tiles; fails on 4a0edb1)."""
    import threading

    from rasterio.env import get_gdal_config

    from intake_clms.services.cdse.budget import Budget

    monkeypatch.delenv("GDAL_CACHEMAX", raising=False)
    access = s3.CdseAccess(s3.S3, None, Budget(1), threading.Event(), s3_keys=("key", "secret"))
    with access.env():
        assert get_gdal_config("GDAL_CACHEMAX") in (64, 64 * 2**20)
    assert not s3._user_has("GDAL_CACHEMAX")
    monkeypatch.setenv("GDAL_CACHEMAX", "200")
    assert s3._user_has("GDAL_CACHEMAX")  # the user's own wins (GDAL reads the variable itself)
