"""CDSE protocol variants against the sandbox, both shapes each: the bearer token on redirects (trusted hosts),
bare and zipped payloads (zipper), Nodes listings under ``result`` or ``value`` and through a 301."""

from __future__ import annotations

import hashlib
import threading

import pytest

from intake_clms.services.cdse.hosts import is_trusted, trusted_hosts
from intake_clms.services.cdse.service import connect
from intake_clms.source import ClmsSource

from lifecycle.lifecycle_helpers import Lockstep, stored_files

NDVI = {"dataset_id": "EO:JRC:DAT:CLMS", "dataset_identifier": "ndvi_global_300m_10daily_v2"}
BBOX = [5, 45, 10, 50]


def source(sb, **kw) -> ClmsSource:
    return ClmsSource(**NDVI, bbox=BBOX, start="2024-01-01", end="2024-01-10", service="cdse", access="download",
                      backoff=0.01, clock=Lockstep(sb), **kw)


def test_trusted_hosts_default_env_and_suffixes(monkeypatch):
    env = {"CDSE_DOWNLOAD_URL": "http://127.0.0.1:9/download/odata/v1"}
    hosts = trusted_hosts(env)
    assert is_trusted("https://zipper.dataspace.copernicus.eu/odata/v1/Products(x)/$value", hosts)
    assert is_trusted("https://dataspace.copernicus.eu/x", hosts)
    assert is_trusted("https://catalogue.dataspace.copernicus.eu/x", hosts)  # the default CDSE_ODATA_URL's host
    assert is_trusted("http://127.0.0.1:9/anything", hosts)  # CDSE_DOWNLOAD_URL's host, always
    assert not is_trusted("https://eodata.s3.example.com/key?X-Amz-Signature=s", hosts)  # a presigned URL
    assert not is_trusted("https://evil-dataspace.copernicus.eu.example.org/", hosts)
    assert not is_trusted("https://xdataspace.copernicus.eu/", hosts)  # a suffix matches whole labels only
    mine = trusted_hosts({**env, "CDSE_TRUSTED_HOSTS": "localhost, .example.net"})
    assert is_trusted("http://localhost:1/x", mine) and is_trusted("https://a.example.net/", mine)
    assert not is_trusted("https://zipper.dataspace.copernicus.eu/", mine)  # the list replaces the default
    assert is_trusted("http://127.0.0.1:9/x", mine)  # ... but never the configured endpoints


@pytest.mark.parametrize("payload", ["file", "zip"])
def test_download_bare_file_or_zipped_folder(cdse_env, monkeypatch, payload):
    """``file``: 307 to a presigned transfer (no token there).  ``zip`` (live): 301 to zipper on another host,
    which wants the bearer token (trusted by CDSE_TRUSTED_HOSTS) and serves ``<Name>/<file>`` zipped."""
    st = cdse_env.ctx.state["cdse"]
    st.payload = payload
    if payload == "zip":
        monkeypatch.setenv("CDSE_TRUSTED_HOSTS", "localhost")  # the zipper host of the sandbox
    src = source(cdse_env)
    ds = src.to_dask()
    assert ds.sizes["time"] == 1 and float(ds["NDVI"].count()) > 0
    (stored,) = stored_files(src, "*.nc")
    product = st.find_by_name(stored.name[: -len(".nc")] + "_nc")
    assert hashlib.md5(stored.read_bytes()).hexdigest() == hashlib.md5(st.path(product).read_bytes()).hexdigest()
    zipper = [e for e in cdse_env.log.entries(service="cdse") if e.path.startswith("/zipper/")]
    transfers = [e for e in cdse_env.log.entries(service="cdse") if e.path.startswith("/s3/")]
    if payload == "zip":
        assert [e.status for e in zipper] == [200] and not transfers
        assert st.payload_path(product).read_bytes()[:4] == b"PK\x03\x04"
    else:
        assert not zipper and [e.status for e in transfers] == [200]
        assert st.bearer_on_transfer == 0


def test_zipper_without_trust_gets_no_token(cdse_env, monkeypatch):
    """A redirect host outside the trusted list never sees the token (here: zipper answers 401, a clear error)."""
    cdse_env.ctx.state["cdse"].payload = "zip"
    monkeypatch.setenv("CDSE_TRUSTED_HOSTS", ".dataspace.copernicus.eu")
    with pytest.raises(Exception) as err:
        source(cdse_env).to_dask()
    assert "401" in str(err.value) or "Not authenticated" in str(err.value)
    assert [e.status for e in cdse_env.log.entries(service="cdse") if e.path.startswith("/zipper/")] == [401]


@pytest.mark.parametrize("key, redirect", [("result", False), ("value", False), ("result", True)])
def test_nodes_listing_shapes(cdse_env, key, redirect):
    st = cdse_env.ctx.state["cdse"]
    st.nodes_key, st.nodes_redirect = key, redirect
    svc = connect({"access": "window"}, threading.Event())
    src = ClmsSource(**NDVI, bbox=BBOX, start="2024-01-01", end="2024-01-10", service="cdse", access="window")
    (hit,) = svc.search(src.request)
    files = svc.sources(hit)  # the window stage lists the product's files
    assert len(files) == 1 and files[0].name.endswith(".tif") and files[0].path.startswith("/vsis3/")
    moved = [e for e in cdse_env.log.entries(service="cdse") if e.status == 301 and "/Nodes" in e.path]
    assert bool(moved) == redirect


WINDOW = [6.0, 46.0, 6.2, 46.2]  # inside the tiny sandbox's NDVI COGs


@pytest.mark.parametrize("nodes_value", ["transfer", "zipper"])
def test_https_window_reads_through_a_redirect_to_zipper(cdse_env, monkeypatch, nodes_value):
    """``zipper``: a file's ``Nodes(..)/$value`` answers 301 to another host that wants the bearer token (as a
    product's ``$value`` does live).  GDAL's curl drops an Authorization header on such a redirect, so the client
    resolves a trusted redirect itself and hands GDAL the final URL; ``transfer``: the 307 to a presigned URL is
    left to GDAL, which reaches it without the token."""
    st = cdse_env.ctx.state["cdse"]
    st.nodes_value = nodes_value
    monkeypatch.delenv("CDSE_S3_ACCESS_KEY")  # HTTPS window reads
    monkeypatch.setenv("CDSE_TRUSTED_HOSTS", "localhost")  # the zipper host of the sandbox
    ds = ClmsSource(**NDVI, bbox=WINDOW, start="2020-01-01", end="2020-01-20", service="cdse", access="window",
                    backoff=0.01).to_dask()
    assert ds.sizes["time"] == 2 and float(ds["NDVI"].count()) > 0
    zipper = [e for e in cdse_env.log.entries(service="cdse") if e.path.startswith("/zipper/")]
    transfers = [e for e in cdse_env.log.entries(service="cdse") if e.path.startswith("/s3/")]
    if nodes_value == "zipper":
        assert zipper and {e.status for e in zipper} <= {200, 206} and not transfers
        moved = [e for e in cdse_env.log.entries(service="cdse") if e.status == 301 and "/Nodes(" in e.path]
        assert len(moved) == 1  # one redirect resolved; every later file read goes to zipper directly
    else:
        assert not zipper and transfers
    assert st.bearer_on_transfer == 0


def test_https_window_reads_send_no_token_to_an_untrusted_redirect(cdse_env, monkeypatch):
    """A redirect to a host outside CDSE_TRUSTED_HOSTS is not resolved with the token: zipper answers 401 and
    the read fails with a clear error naming it."""
    cdse_env.ctx.state["cdse"].nodes_value = "zipper"
    monkeypatch.delenv("CDSE_S3_ACCESS_KEY")
    monkeypatch.setenv("CDSE_TRUSTED_HOSTS", ".dataspace.copernicus.eu")
    with pytest.raises(Exception) as err:
        ClmsSource(**NDVI, bbox=WINDOW, start="2020-01-01", end="2020-01-10", service="cdse", access="window",
                   backoff=0.01).to_dask()
    assert "401" in str(err.value)
    zipper = [e for e in cdse_env.log.entries(service="cdse") if e.path.startswith("/zipper/")]
    assert zipper and {e.status for e in zipper} == {401}
