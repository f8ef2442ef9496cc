"""CDSE search against the sandbox's OData catalogue: filters, paging past the $skip cap, keys shared with
WEkEO, checksums and sizes, and the ``access`` choice (download / window / auto)."""

from __future__ import annotations

import threading
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from intake_clms.errors import ParameterError, ServiceError
from intake_clms.services.base import DOWNLOAD, WINDOW, product_key
from intake_clms.params import Request
from intake_clms.services.cdse.search import build_filter, series_key
from intake_clms.services.cdse.service import connect

from lifecycle.lifecycle_helpers import Lockstep

NDVI = "ndvi_global_300m_10daily_v2"
SMALL = (5.0, 45.0, 10.0, 50.0)  # 25 square degrees of a global product: by window under auto


def request(ident: str = NDVI, bbox=SMALL, start="2024-01-01", end="2024-01-31") -> Request:
    return Request.build("EO:JRC:DAT:CLMS", ident, list(bbox), start, end, "cdse")


def service(sb, **settings):
    return connect(settings, threading.Event(), Lockstep(sb))


def test_the_filter_names_collection_dataset_format_dates_and_area():
    text = build_filter(request(), "cog")
    assert text.startswith("Collection/Name eq 'CLMS' and ")
    assert "att/Name eq 'datasetIdentifier' and att/OData.CSC.StringAttribute/Value eq 'ndvi_global_300m_10daily_v2'" in text
    assert "att/Name eq 'fileFormat' and att/OData.CSC.StringAttribute/Value eq 'cog'" in text
    assert "ContentDate/End gt 2024-01-01T00:00:00.000Z" in text and "ContentDate/Start lt 2024-02-01T00:00:00.000Z" in text
    assert "OData.CSC.Intersects(area=geography'SRID=4326;POLYGON((5 45,10 45,10 50,5 50,5 45))')" in text
    with pytest.raises(ServiceError, match="datasetIdentifier"):
        build_filter(Request.build("EO:CLMS:DAT:OLD_ID", None, None, None, None))


def test_download_hits_are_the_netcdf_products_wekeo_serves_under_the_same_keys(cdse_env):
    from intake_clms.net.http import HttpClient
    from intake_clms.services.wekeo import WekeoService

    hits = service(cdse_env, access="download").search(request())
    assert [h.access for h in hits] == [DOWNLOAD] * 3
    assert all(h.extra["name"].endswith("_nc") and h.name == h.key and h.key.endswith(".nc") for h in hits)
    assert [h.start[:10] for h in hits] == ["2024-01-01", "2024-01-11", "2024-01-21"]
    creds = cdse_env.credentials["hda"]
    wekeo = WekeoService(HttpClient("wekeo"), creds["username"], creds["password"], broker=cdse_env.env()["HDA_URL"])
    assert sorted(h.key for h in hits) == sorted(h.key for h in wekeo.search(request()))
    assert product_key("c_gls_NDVI300_202401010000_GLOBE_OLCI_V2.0.1_nc") == product_key("c_gls_NDVI300_202401010000_GLOBE_OLCI_V2.0.1.nc")


def test_hits_carry_size_checksums_and_the_product_id(cdse_env):
    st = cdse_env.ctx.state["cdse"]
    for h in service(cdse_env, access="download").search(request()):
        product = st.find(h.extra["id"])
        assert product is not None and product.name == h.extra["name"]
        assert h.size == product.size > 0
        assert set(h.checksums) == {"md5", "blake3"}  # blake3 is in the test extra
        assert h.checksums["md5"] == product.md5
        assert h.extra["s3_path"].startswith("/eodata/CLMS/") and h.extra["s3_path"].endswith(h.extra["name"])


def test_window_hits_say_where_the_cog_is(cdse_env, monkeypatch):
    svc = service(cdse_env, access="window")
    hits = svc.search(request())
    assert [h.access for h in hits] == [WINDOW] * 3 and all(h.key.endswith(".cog") for h in hits)
    extra = hits[0].extra
    assert extra["name"] == hits[0].name and extra["id"] and extra["s3_path"].startswith("/eodata/")
    # S3 keys at hand: the service's raster sources are /vsis3/ paths of the product's COG (one Nodes listing)
    (one,) = svc.sources(hits[0])
    assert svc.window_mode == "s3" and one.name.endswith(".tif") and one.access is not None
    assert one.path == f"/vsis3{extra['s3_path']}/{one.name}"
    # no S3 keys: HTTPS through the download service; the href answers with the file's bytes (token sent to
    # the download host only)
    monkeypatch.delenv("CDSE_S3_ACCESS_KEY")
    web = service(cdse_env, access="window")
    (over_https,) = web.sources(web.search(request())[0])
    assert web.window_mode == "https" and over_https.path.startswith("/vsicurl/") and over_https.name == one.name
    href = over_https.path[len("/vsicurl/"):]
    r = requests.get(href, headers=web.tokens.headers(), allow_redirects=False, timeout=30)
    assert r.status_code in (302, 307)
    body = requests.get(r.headers["Location"], headers={"Range": "bytes=0-3"}, timeout=30)
    assert body.status_code == 206 and body.content[:2] in (b"II", b"MM")
    local = cdse_env.ctx.state["cdse"]
    size = local.path(local.find_by_name(hits[0].name)).parent / one.name
    assert int(body.headers["Content-Range"].rpartition("/")[2]) == size.stat().st_size
    secrets = [cdse_env.env()["CDSE_S3_SECRET_KEY"], "Bearer"]
    for shown in (repr(one), repr(over_https), repr(one.access), repr(hits[0])):
        assert not any(secret in shown for secret in secrets), shown


def test_auto_reads_small_areas_by_window_and_large_ones_whole(cdse_env):
    svc = service(cdse_env)
    assert svc.access == "auto"
    assert {h.access for h in svc.search(request(bbox=SMALL))} == {WINDOW}
    whole = svc.search(request(bbox=(-180, -90, 180, 90)))
    assert {h.access for h in whole} == {DOWNLOAD} and all(h.key.endswith(".nc") for h in whole)
    half = svc.search(request(bbox=(-180, -90, 0, 90)))  # half the globe: not a small part
    assert {h.access for h in half} == {DOWNLOAD}


def test_window_without_a_cog_names_the_product(cdse_env):
    svc = service(cdse_env, access="window")
    st = cdse_env.ctx.state["cdse"]
    nc = service(cdse_env, access="download").search(request())[0]
    product = st.find(nc.extra["id"]).to_json(True)  # the catalogue's JSON of a product with no COG beside it
    with pytest.raises(ServiceError, match=nc.name) as err:
        svc._choose({"nc": product}, request())
    assert "access='download'" in str(err.value)


def test_access_is_checked(cdse_env):
    with pytest.raises(ParameterError, match="access: got 'tiles'; expected one of auto, download, window"):
        service(cdse_env, access="tiles")


def test_paging_splits_long_listings_before_the_skip_cap(cdse_env):
    """A small page and cap stand in for CDSE's 1000 and 10,000: the listing follows @odata.nextLink, starts a
    new window at the last start date before the cap, and yields every product once, in time order."""
    svc = service(cdse_env, access="download")
    whole = Request.build("EO:JRC:DAT:CLMS", "ba_global_300m_monthly_v4", None, None, None, "cdse")
    everything = list(svc.catalogue.products(whole, "nc"))
    assert len(everything) == 102  # one listing of pages of 1000
    svc.catalogue.page, svc.catalogue.skip_cap = 7, 20
    before = svc.catalogue.requests
    urls: list[str] = []
    svc.http.session.hooks["response"].append(lambda r, *a, **k: urls.append(r.url))
    paged = list(svc.catalogue.products(whole, "nc"))
    assert [p["Id"] for p in paged] == [p["Id"] for p in everything]
    starts = [p["ContentDate"]["Start"] for p in paged]
    assert starts == sorted(starts)
    # 102 products in pages of 7 with a new window every 2 pages (the window's first product repeats)
    assert svc.catalogue.requests - before >= 102 // 7 + 1
    skips = [int(parse_qs(urlsplit(u).query).get("$skip", ["0"])[0]) for u in urls]
    assert 0 < max(skips) <= 20 and skips.count(0) >= 5  # nextLinks followed, new windows started


def test_series_key_pairs_formats_of_one_date():
    assert series_key({"Name": "c_gls_NDVI300_202401010000_GLOBE_OLCI_V2.0.1_nc"}) == \
        series_key({"Name": "c_gls_NDVI300_202401010000_GLOBE_OLCI_V2.0.1_cog"})


def test_download_of_a_cog_only_dataset_fetches_the_cog_whole(cdse_env):
    """An EEA tiled dataset has only COGs on CDSE: a download takes each tile's .tif whole."""
    st = cdse_env.ctx.state["cdse"]
    spec = next(s for s in st.specs() if s.tiled and "nc" not in s.formats and cdse_env.ctx.store.count(s.key, format="cog"))
    item = cdse_env.ctx.store.items(spec.key, format="cog", limit=1)[0]
    day = item.start.date().isoformat()
    req = Request.build("EO:JRC:DAT:CLMS", spec.dataset_identifier, list(item.bbox), day, day, "cdse")
    hits = service(cdse_env, access="download").search(req)
    assert hits and all(h.access == DOWNLOAD and h.extra["format"] == "cog" and h.name.endswith(".tif") for h in hits)
    assert all(h.key.endswith(".cog") for h in hits)  # the same key a window read of that product uses
