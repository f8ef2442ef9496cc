"""CDSE window reads under transfer faults (issue 18, defects 8 and 9), against the sandbox's S3 and HTTPS:
resets and truncated bodies read again within bounds, statuses from GDAL's error class (never from a number in
a file name), an expired transfer link renewed once, and no presigned URL in GDAL's debug log."""

from __future__ import annotations

import logging

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")

from rasterio import _err as cple  # noqa: E402
from rasterio.errors import RasterioIOError  # noqa: E402

from intake_clms.errors import ClmsError, ServiceError  # noqa: E402
from intake_clms.engine import PreloadError  # noqa: E402
from intake_clms.net import gdalio  # noqa: E402
from intake_clms.net.clock import FakeClock  # noqa: E402

from intake_clms.source import ClmsSource  # noqa: E402

EXPIRED = 2  # answers from the dead link: GDAL's HEAD and GET of the header (GDAL itself absorbs one)
NDVI = "ndvi_global_300m_10daily_v2"
BBOX = (-180 + 62830.5 / 336, 80 - 10800.5 / 336, -180 + 62880.5 / 336, 80 - 10750.5 / 336)  # 50 x 50 px the tiny COG holds
JAN_2024 = {"start": "2024-01-01", "end": "2024-01-10"}  # one product: c_gls_NDVI300_202401010000_... (has "401")


def _io_error(cause: BaseException) -> RasterioIOError:
    try:
        try:
            raise cause
        except BaseException as exc:
            raise RasterioIOError(str(exc)) from exc
    except RasterioIOError as err:
        return err


# --------------------------------------------------------------------------- gdalio, on rasterio's own errors


def test_status_comes_from_the_error_class_or_the_response_never_from_a_file_name():
    """Issue 18 (8): "401" was searched in GDAL's message and found in the date 202401010000."""
    name = "/vsis3/eodata/c_gls_NDVI300_202401010000_GLOBE_OLCI_V2.0.1.tif"
    short = _io_error(cple.CPLE_AppDefinedError(3, 1, f"{name}: TIFFFillTile:Read error at row 0, col 0, tile 0; "
                                                      "got 0 bytes, expected 5912"))
    assert gdalio.http_status(short) is None and gdalio.transient(short)
    assert gdalio.http_status(_io_error(cple.CPLE_HttpResponseError(3, 11, "HTTP response code: 404"))) == 404
    assert gdalio.http_status(_io_error(cple.CPLE_AWSObjectNotFoundError(3, 13, f"{name} 403 401"))) == 404
    assert gdalio.http_status(_io_error(cple.CPLE_AWSAccessDeniedError(3, 15, "Access Denied"))) == 403
    xml = ("HTTP response code: 403 - <?xml version='1.0'?><Error><Code>AccessDenied</Code><Message>Request has "
           "expired</Message><Resource>/eodata/x.tif</Resource></Error>")
    expired = _io_error(cple.CPLE_HttpResponseError(3, 11, xml))
    assert gdalio.http_status(expired) == 403 and not gdalio.transient(expired)
    assert gdalio.message(expired) == "HTTP response code: 403 - AccessDenied: Request has expired"
    assert gdalio.http_status(_io_error(cple.CPLE_AppDefinedError(3, 1, f"{name}: IReadBlock failed"))) is None
    assert gdalio.transient(_io_error(cple.CPLE_HttpResponseError(3, 11, "HTTP response code: 503")))


def test_retrying_is_bounded_and_waits_on_the_injected_clock():
    clock = FakeClock(0.0)
    calls = []

    def flaky(attempt):
        calls.append(attempt)
        raise _io_error(cple.CPLE_AppDefinedError(3, 1, "transfer closed with 100 bytes remaining to read"))

    with pytest.raises(RasterioIOError):
        gdalio.retrying(flaky, attempts=3, backoff=1.0, clock=clock)
    assert calls == [1, 2, 3] and clock.monotonic() == pytest.approx(3.0)  # 1 s + 2 s, never a real sleep
    assert gdalio.retrying(lambda n: n if n == 2 else flaky(n), attempts=3, backoff=0.0, clock=clock) == 2
    with pytest.raises(RasterioIOError):  # a 404 is not tried again
        gdalio.retrying(lambda n: (_ for _ in ()).throw(_io_error(cple.CPLE_AWSObjectNotFoundError(3, 13, "x"))),
                        clock=clock)


def test_scrub_removes_capability_urls():
    line = ("VSICURL: Using effective URL http://localhost:1/s3/eodata/a.tif?X-Amz-Algorithm=AWS4-HMAC-SHA256&"
            "X-Amz-Signature=0123abcd&X-Amz-Expires=600 for /vsicurl/http://x/$value")
    clean = gdalio.scrub(line)
    assert "0123abcd" not in clean and "X-Amz" not in clean and "http://localhost:1/s3/eodata/a.tif?..." in clean
    assert gdalio.scrub("Authorization: Bearer abc.def") == "Authorization: Bearer ..."


# --------------------------------------------------------------------------- against the sandbox


def source(**kw) -> ClmsSource:
    args = dict(dataset_id="EO:JRC:DAT:CLMS", dataset_identifier=NDVI, bbox=list(BBOX), start="2020-01-01",
                end="2020-01-31", service="cdse", access="window", backoff=0.01)
    args.update(kw)
    return ClmsSource(**args)


def truth(sb, start: str = "2020-01-01", end: str = "2020-01-31") -> np.ndarray:
    from intake_clms.sandbox.truth import reference

    return reference(sb.ctx.store, NDVI, list(BBOX), start, end)["NDVI"].values


@pytest.mark.parametrize("kind", ["reset", "truncate"])
def test_a_reset_or_truncated_body_is_read_again(cdse_env, kind):
    """Issue 18 (8): one connection reset or truncated body failed the whole computation (no retry)."""
    sb = cdse_env
    sb.faults.add(kind, "cdse", "s3", times=1, after_bytes=100)
    ds = source(**JAN_2024).to_dask()
    np.testing.assert_array_equal(ds["NDVI"].values, truth(sb, **JAN_2024))
    assert not sb.faults.pending()  # the fault fired, and was survived


def test_reads_failing_every_time_end_with_no_status_taken_from_the_file_name(cdse_env):
    """Issue 18 (8): reported as ``cdse: HTTP 401`` because the file name holds ``202401010000``."""
    sb = cdse_env
    sb.faults.add("reset", "cdse", "s3", times=None, after_bytes=10)
    with pytest.raises(ClmsError) as info:  # GDAL names the file in its message
        source(**JAN_2024).to_dask()
    failure = info.value
    if isinstance(failure, PreloadError):
        (failure,) = failure.failures.values()
    assert isinstance(failure, ServiceError) and failure.status is None and "HTTP 401" not in str(failure)
    assert "202401010000" in str(failure)
    gets = [e for e in sb.log.entries(service="cdse", endpoint="s3") if e.method == "GET"]
    assert 2 <= len(gets) <= 12  # read again, within bounds


def test_an_expired_transfer_link_is_renewed_once_through_value(cdse_env, monkeypatch):
    """Issue 18 (8): a transfer URL answering 403 "Request has expired" failed the run, with raw S3 XML."""
    sb = cdse_env
    monkeypatch.delenv("CDSE_S3_ACCESS_KEY")  # the HTTPS path: $value, redirected to a presigned transfer URL
    sb.faults.add("expired_link", "cdse", "download", times=1, status=403)
    ds = source(**JAN_2024).to_dask()
    np.testing.assert_array_equal(ds["NDVI"].values, truth(sb, **JAN_2024))
    sb.faults.add("expired_link", "cdse", "download", times=None, status=403)
    with pytest.raises(ClmsError) as info:  # a link that stays dead: renewed once, then the error
        source(start="2024-01-11", end="2024-01-20").to_dask()
    failure = info.value
    if isinstance(failure, PreloadError):
        (failure,) = failure.failures.values()
    assert isinstance(failure, ServiceError) and failure.status == 403
    assert "<Error>" not in str(failure) and "X-Amz" not in str(failure)
    dead = [e for e in sb.log.entries(service="cdse", endpoint="download") if e.path.startswith("/s3/")
            and "202401110000" in e.path]
    assert dead and {e.status for e in dead} == {403} and len(dead) <= 4


def test_presigned_urls_never_reach_the_log_with_cpl_debug(cdse_env, monkeypatch, caplog):
    """Issue 18 (9): with CPL_DEBUG=ON and DEBUG logging, HTTPS window reads logged the transfer URLs with
    their X-Amz-Signature (GDAL's "VSICURL: Using effective URL")."""
    sb = cdse_env
    monkeypatch.delenv("CDSE_S3_ACCESS_KEY")
    monkeypatch.setenv("CPL_DEBUG", "ON")
    caplog.set_level(logging.DEBUG)
    for name in ("rasterio", "intake_clms"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        with rasterio.Env(CPL_DEBUG="ON"):
            ds = source().to_dask()
    finally:
        logging.getLogger("rasterio").setLevel(logging.NOTSET)
    np.testing.assert_array_equal(ds["NDVI"].values, truth(sb))
    assert "VSICURL" in caplog.text or "effective URL" in caplog.text or "Downloading" in caplog.text
    assert "X-Amz-Signature=" not in caplog.text.replace("X-Amz-Signature=...", "")
    assert sb.ctx.state["cdse"].bearer_on_transfer == 0


def test_a_damaged_kept_window_is_read_again_and_replaced(cdse_env):
    """Issue 18 (3): a damaged kept window was re-read over S3 on every reopen and never replaced."""
    from intake_clms.store import Store

    values = source().to_dask()["NDVI"].values
    np.testing.assert_array_equal(values, truth(cdse_env))
    st = Store()
    kept = sorted(k for k in st.products.keys() if ".w" in k)
    assert len(kept) == 3
    tif = next(p for p in st.products.path(kept[0]).rglob("*.tif"))
    with open(tif, "r+b") as fh:
        fh.truncate(100)
    view = st.views.path(st.views.keys().__next__())
    for stacked in view.glob("*.nc"):  # a reopen reads the view's stack of the windows: make it read them again
        stacked.unlink()
    np.testing.assert_array_equal(source().to_dask()["NDVI"].values, values)
    assert st.products.check(kept[0]) is not None  # read again and kept again: the next open is offline
