"""CDSE direct downloads through the engine, against the sandbox: the redirect to another host (token kept
back), Range resume, size and MD5 checks (bad bytes never stored), a 401 mid-transfer, 429 back-off,
a product that is gone, and the connection budget under eight workers."""

from __future__ import annotations

import hashlib
import logging
import threading

import pytest

from intake_clms.errors import IntegrityError, PreloadError
from intake_clms.services.base import DOWNLOAD, Hit
from intake_clms.services import ProductNotThereError
from intake_clms.services.cdse import budget as budget_mod
from intake_clms.services.cdse.service import connect
from intake_clms.source import ClmsSource

from lifecycle.lifecycle_helpers import Lockstep, assert_nothing_published, store, stored_files

NDVI = {"dataset_id": "EO:JRC:DAT:CLMS", "dataset_identifier": "ndvi_global_300m_10daily_v2"}
BBOX = [5, 45, 10, 50]


def source(sb, start="2024-01-01", end="2024-01-31", **kw) -> ClmsSource:
    kw.setdefault("access", "download")
    return ClmsSource(**NDVI, bbox=BBOX, start=start, end=end, service="cdse", backoff=0.01, clock=Lockstep(sb), **kw)


def user(sb) -> str:
    return sb.credentials["cdse"]["username"]


def test_download_follows_the_redirect_without_sending_the_token_there(cdse_env, caplog):
    st = cdse_env.ctx.state["cdse"]
    src = source(cdse_env)
    with caplog.at_level(logging.DEBUG):
        ds = src.to_dask()
    assert "GET /download/odata/v1/Products(" in caplog.text  # urllib3 logged the requests ...
    assert "X-Amz-Signature" not in caplog.text and "Bearer" not in caplog.text  # ... but no presigned link or token
    assert ds.sizes["time"] == 3 and float(ds["NDVI"].count()) > 0
    transfers = [e for e in cdse_env.log.entries(service="cdse", endpoint="download") if e.path.startswith("/s3/")]
    assert len(transfers) == 3 and all(e.status == 200 for e in transfers)
    assert st.bearer_on_transfer == 0  # the redirect named another host: the token stayed home
    files = stored_files(src, "*.nc")
    assert len(files) == 3
    for f in files:  # every stored file is the catalogue's bytes
        product = st.find_by_name(f.name[: -len(".nc")] + "_nc")  # kept under the name of the product's file
        assert product is not None and hashlib.md5(f.read_bytes()).hexdigest() == product.md5


def test_the_token_goes_to_a_redirect_on_a_configured_host(cdse_env):
    st = cdse_env.ctx.state["cdse"]
    st.transfer_host = "127.0.0.1"  # the host of CDSE_DOWNLOAD_URL: a CDSE host we trust
    source(cdse_env, end="2024-01-10").to_dask()
    assert st.bearer_on_transfer == 1


def test_a_dropped_transfer_resumes_with_range(cdse_env):
    cdse_env.faults.add("truncate", service="cdse", endpoint="download", after_bytes=20_000)
    src = source(cdse_env, end="2024-01-10")
    src.to_dask()
    transfers = [e for e in cdse_env.log.entries(service="cdse", endpoint="download") if e.path.startswith("/s3/")]
    assert [e.range for e in transfers] == [None, "bytes=20000-"]
    size = cdse_env.ctx.state["cdse"].find_by_name("c_gls_NDVI300_202401010000_GLOBE_OLCI_V2.0.1_nc").size
    assert [e.bytes_sent for e in transfers] == [20_000, size - 20_000]  # only the missing bytes came again
    rec = store().products.check(store().views.get(src.request.key()).products[0].key)
    assert rec.payload["hashes"]["md5"] == rec.payload["announced"]["md5"]


def test_bad_bytes_never_reach_the_store(cdse_env):
    cdse_env.faults.add("bad_checksum", service="cdse", endpoint="download", times=None)
    src = source(cdse_env, end="2024-01-10")
    with pytest.raises(PreloadError) as err:
        src.to_dask()
    (exc,) = err.value.failures.values()
    assert isinstance(exc, IntegrityError) and "md5" in str(exc)
    assert_nothing_published(src)
    assert not [p for p in store().root.rglob("*") if p.is_file() and p.suffix in (".nc", ".part")]


def test_a_401_mid_transfer_refreshes_once_and_resumes(cdse_env):
    cdse_env.faults.add("token_cut", service="cdse", endpoint="download", after_bytes=10_000)
    src = source(cdse_env, end="2024-01-10")
    src.to_dask()
    downloads = [e for e in cdse_env.log.entries(service="cdse", endpoint="download") if "$value" in e.path]
    assert [e.status for e in downloads] == [307, 401, 307]
    from intake_clms.services.cdse import auth

    (tm,) = auth._MANAGERS.values()
    assert (tm.logins, tm.refreshes) == (1, 1)
    assert len(stored_files(src, "*.nc")) == 1


def test_429_backs_off_as_asked_and_is_bounded(cdse_env):
    cdse_env.faults.add("status", service="cdse", endpoint="download", status=429, retry_after=7)
    clock = Lockstep(cdse_env)
    src = ClmsSource(**NDVI, bbox=BBOX, start="2024-01-01", end="2024-01-10", service="cdse", access="download",
                     backoff=0.01, clock=clock)
    src.to_dask()
    assert 7 in clock.slept
    cdse_env.faults.add("status", service="cdse", endpoint="products", status=429, retry_after=1, times=None)
    with pytest.raises(Exception) as err:
        source(cdse_env, start="2024-02-01", end="2024-02-10", attempts=3).to_dask()
    assert "HTTP 429" in str(err.value)
    assert cdse_env.log.count(service="cdse", endpoint="products") <= 2 + 3


def test_a_product_gone_from_cdse_is_said_so(cdse_env):
    svc = connect({"access": "download"}, threading.Event(), Lockstep(cdse_env))
    gone = Hit(key="x.nc", name="c_gls_GONE.nc", access=DOWNLOAD, ordered=False,
               extra={"id": "00000000-0000-0000-0000-000000000000", "name": "c_gls_GONE_nc"})
    with pytest.raises(ProductNotThereError) as err:
        svc.fetch(gone, None, 0)
    assert err.value.status == 404 and "c_gls_GONE_nc" in str(err.value)
    assert svc.budget.in_use == 0


def test_a_size_unlike_the_catalogue_is_refused_before_any_byte(cdse_env):
    svc = connect({"access": "download"}, threading.Event(), Lockstep(cdse_env))
    (hit,) = [h for h in svc.search(source(cdse_env, end="2024-01-10").request)]
    wrong = Hit(**{**hit.__dict__, "size": hit.size + 1})
    with pytest.raises(IntegrityError, match="announces"):
        svc.fetch(wrong, None, 0)
    assert svc.budget.in_use == 0
    r = svc.fetch(hit, None, 1000)  # a resume: 206 from the offset, the full size in Content-Range
    assert r.status_code == 206 and r.headers["Content-Range"].endswith(f"/{hit.size}")
    assert svc.budget.in_use == 1  # the body holds its slot ...
    r.close()
    assert svc.budget.in_use == 0  # ... until the response is closed


@pytest.mark.parametrize("cap", [4, 2])
def test_eight_workers_never_exceed_the_connection_budget(cdse_env, monkeypatch, cap):
    st = cdse_env.ctx.state["cdse"]
    if cap != 4:  # a user whose CDSE allows 2
        monkeypatch.setenv("CDSE_MAX_CONNECTIONS", str(cap))
        st.max_concurrent = cap
    st.reset_concurrency()
    cdse_env.faults.add("trickle", service="cdse", endpoint="download", rate=1_000_000, times=None)  # ~60 ms a file
    src = source(cdse_env, start="2024-01-01", end="2024-04-30", workers=8)
    ds = src.to_dask()
    assert ds.sizes["time"] == 12
    seen = st.concurrency()
    assert seen["peak"][user(cdse_env)] <= cap and not seen["refused"]
    assert budget_mod.budget().peak == cap  # the workers did try to go wider: the budget held them


def test_a_fault_while_storing_reuses_the_payload_not_a_second_transfer(cdse_env, monkeypatch):
    """Issue 18 (6): CDSE's payload was moved into staging, which the rerun deleted: 314 MB downloaded again."""
    from intake_clms.errors import LocalStorageError
    from intake_clms.store import products as products_module

    real = products_module.ProductStore.put
    state = {"fail": True}

    def full(self, staging, record):
        if state.pop("fail", False):
            raise LocalStorageError(staging, "no space left on the device")
        return real(self, staging, record)

    monkeypatch.setattr(products_module.ProductStore, "put", full)
    with pytest.raises(LocalStorageError):
        source(cdse_env, end="2024-01-10").to_dask()
    ds = source(cdse_env, end="2024-01-10").to_dask()
    assert ds.sizes["time"] == 1
    transfers = [e for e in cdse_env.log.entries(service="cdse", endpoint="download") if e.path.startswith("/s3/")]
    assert [e.status for e in transfers] == [200]  # one transfer over both runs
    assert not [p for p in store().downloads.rglob("*") if p.is_file()]


def test_a_kill_between_the_download_and_its_record_reuses_the_file(cdse_env, monkeypatch):
    """A kill after the payload's rename into place but before ``payload.json`` (the CDSE kill trial that
    downloaded all three payloads twice): the rerun checks the file against the catalogue's size and MD5 and
    reuses it, no second transfer."""
    from intake_clms.engine import core as core_module

    real = core_module.write_json_atomic

    def killed(path, data, *a, **kw):
        if path.name == core_module.PAYLOAD:
            raise KeyboardInterrupt("killed before the payload was recorded")
        return real(path, data, *a, **kw)

    monkeypatch.setattr(core_module, "write_json_atomic", killed)
    with pytest.raises(BaseException, match="killed before"):
        source(cdse_env, end="2024-01-10").to_dask()
    monkeypatch.setattr(core_module, "write_json_atomic", real)
    left = [p for p in store().downloads.rglob("*") if p.is_file()]
    assert left and not [p for p in left if p.name == core_module.PAYLOAD]  # the file, unrecorded
    ds = source(cdse_env, end="2024-01-10").to_dask()
    assert ds.sizes["time"] == 1
    transfers = [e for e in cdse_env.log.entries(service="cdse", endpoint="download") if e.path.startswith("/s3/")]
    assert [e.status for e in transfers] == [200]  # one transfer over both runs
