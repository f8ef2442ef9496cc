"""The CLMS download API backend against the sandbox, over real HTTP: listing, auth, requests, links, cancel."""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from intake_clms.services.clms_api import ClmsApiService, connect
from intake_clms.services.clms_api.auth import GrantRefusedError, default_key_path, load_service_key, service_key_path
from intake_clms.services.clms_api.listing import (
    fetch_listing,
    find_dataset,
    listing_cache_path,
    load_listing_file,
    parse_listing,
    save_listing,
)
from intake_clms.errors import CredentialsError, ParameterError, ServiceError, UnknownIdentifierError
from intake_clms.engine import CancelledError, PreloadError
from intake_clms.errors import OrderExpiredError
from intake_clms.params import Request
from intake_clms.sandbox import Sandbox, clms_api
from intake_clms.source import ClmsSource

from intake_clms.services.clms_api.items import file_product, general_items, general_products, item_key, items_hash
from intake_clms.services.clms_api.ratelimit import RateLimiter

from .lifecycle_helpers import FAST, assert_nothing_published

FOREST = "forest-type-2015"
TILE = "FTY_2015_100m_eu_03035_d02_E30N20"
NDVI_TABLE = {"dataset_id": "EO:JRC:DAT:CLMS", "dataset_identifier": "ndvi_global_300m_10daily_v2"}
NDVI_API = "normalised-difference-vegetation-index-300m-10-daily-v2"
SWI = "soil-water-index-12-5km-10-daily-v3"
BBOX = [5.0, 45.0, 10.0, 50.0]
JSON = {"Accept": "application/json"}


@pytest.fixture
def clms_env(sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Sandbox:
    """The sandbox, with CLMS_API_URL / CLMS_SERVICE_KEY pointing at it and the cache in a fresh folder."""
    for name, value in sandbox.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("INTAKE_CLMS_CACHE", str(tmp_path / "cache"))
    return sandbox


def source(dataset_id: str = FOREST, **kw: Any) -> ClmsSource:
    return ClmsSource(dataset_id=dataset_id, service="clms", **{**FAST, **kw})


def client(dataset_id: str = FOREST, cancel: threading.Event | None = None, **kw: Any) -> ClmsApiService:
    src = source(dataset_id, **kw)
    return connect({**src.options, "cache_dir": src.cache_dir}, cancel or threading.Event())


def tasks(sb: Sandbox) -> list[Any]:
    return list(clms_api.state(sb.ctx).tasks.values())


def posts(sb: Sandbox) -> list[int]:
    return [e.status for e in sb.log.entries("clms", "datarequest_post")]


def raw_token(sb: Sandbox) -> str:
    key = json.loads(Path(sb.env()["CLMS_SERVICE_KEY"]).read_text())
    import jwt

    now = int(time.time())
    claims = {"iss": key["client_id"], "sub": key["user_id"], "aud": key["token_uri"], "iat": now, "exp": now + 600}
    r = requests.post(key["token_uri"], data={"grant_type": clms_api.JWT_BEARER,
                                              "assertion": jwt.encode(claims, key["private_key"], algorithm="RS256")},
                      timeout=10)
    return r.json()["access_token"]


def raw_post(sb: Sandbox, items: list[dict[str, Any]]) -> str:
    """Place a data request as another client of the same user would (the web portal, a script)."""
    r = requests.post(sb.urls["clms_api"] + "/@datarequest_post", json={"Datasets": items},
                      headers={**JSON, "Authorization": f"Bearer {raw_token(sb)}"}, timeout=10)
    assert r.status_code == 201, r.text
    return r.json()["TaskIds"][0]["TaskID"]


def _assert_nothing_published(src: ClmsSource) -> None:
    assert_nothing_published(src)


# --------------------------------------------------------------------------- listing


def test_listing_pages_and_disk_cache_expiry(clms_env: Sandbox, tmp_path: Path) -> None:
    cache = tmp_path / "listing-cache"
    listing = fetch_listing(cache_dir=cache, page_size=10)
    pages = clms_env.log.count("clms", "search")
    assert pages == math.ceil(len(listing) / 10) >= 3
    assert len({d.uid for d in listing}) == len(listing)
    forest = find_dataset(listing, FOREST)
    assert forest.crs == ("EPSG:3035",) and forest.start == dt.date(2014, 1, 1) and forest.end == dt.date(2016, 12, 31)
    assert forest.bbox == pytest.approx((-31.2684, 27.6375, 44.8212, 71.1855))
    assert TILE in [f.file for f in forest.downloadable_files]
    assert [f.file for f in forest.files if not f.downloadable] == ["FTY_2015_020m_eu_03035_d04_Full"]
    assert forest.source == "EEA" and forest.cut_to_order and not forest.timeseries
    swi = find_dataset(listing, SWI)
    assert swi.auxiliary and not swi.cut_to_order and swi.timeseries and swi.limit_days == 366
    # cached on disk: a second listing makes no HTTP call
    path = listing_cache_path(clms_env.urls["clms_api"], cache)
    assert path.is_file() and not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    assert fetch_listing(cache_dir=cache, page_size=10) == listing
    assert clms_env.log.count("clms", "search") == pages
    # refresh=True, max_age and an old cache file each fetch again
    fetch_listing(cache_dir=cache, page_size=10, refresh=True)
    assert clms_env.log.count("clms", "search") == 2 * pages
    fetch_listing(cache_dir=cache, page_size=10, max_age=0)
    assert clms_env.log.count("clms", "search") == 3 * pages
    doc = json.loads(path.read_text())
    doc["fetched"] -= 2 * 86400
    path.write_text(json.dumps(doc))
    fetch_listing(cache_dir=cache, page_size=100)
    assert clms_env.log.count("clms", "search") == 3 * pages + 1
    assert json.loads(path.read_text())["fetched"] > time.time() - 60


def test_listing_falls_back_to_an_old_cache_when_the_server_fails(clms_env: Sandbox, tmp_path: Path) -> None:
    cache = tmp_path / "c"
    first = fetch_listing(cache_dir=cache)
    clms_env.faults.add("status", "clms", "search", times=None, status=404, message="gone")
    assert fetch_listing(cache_dir=cache, max_age=0) == first  # stale but usable, with a warning
    with pytest.raises(ServiceError, match="gone"):
        fetch_listing(cache_dir=cache, refresh=True)


def test_parse_listing_is_tolerant_and_files_round_trip(tmp_path: Path) -> None:
    items = [
        {
            "UID": "a" * 32, "id": "one", "title": "One",
            "dataset_download_information": {"items": [{"@id": "i1", "full_source": "eea", "name": "RASTER",
                                                        "full_format": {"token": "Geotiff", "title": "GeoTIFF"},
                                                        "full_path": "/p", "collection": "c1"}]},
            "downloadable_files": {"items": [{"@id": "f1", "file": "F1", "path": "x", "source": "EEA"},
                                             {"@id": "f2", "file": "F2", "path": "", "source": ""}]},
            "coordinateReferenceSystemList": ["EPSG:3035", {"token": "EPSG:4326"}],
            "temporalExtentStart": "2018-01-01T00:00:00", "temporalExtentEnd": None,
            "geographicBoundingBox": {"items": [{"west": "-10.5", "south": "35", "east": "30", "north": "70.25"}]},
            "mapviewer_istimeseries": "true", "download_limit_temporal_extent": "90",
        },
        {"UID": "b" * 32},  # almost nothing
        {"title": "no id at all"},  # skipped
        "not a dict",
    ]
    one, two = parse_listing(items)
    assert one.infos[0].format == "Geotiff" and one.source == "EEA"
    assert one.crs == ("EPSG:3035", "EPSG:4326") and one.bbox == (-10.5, 35.0, 30.0, 70.25)
    assert one.start == dt.date(2018, 1, 1) and one.end is None and one.timeseries and one.limit_days == 90
    assert [f.file for f in one.downloadable_files] == ["F1"] and one.cut_to_order
    assert two.id == two.uid and two.infos == () and two.bbox is None and not two.cut_to_order and not two.auxiliary
    # a saved listing, raw items, or saved @search pages all load
    saved = tmp_path / "saved.json"
    save_listing([one, two], saved)
    assert load_listing_file(saved) == [one, two]
    (tmp_path / "raw.json").write_text(json.dumps(items))
    assert load_listing_file(tmp_path / "raw.json") == [one, two]
    (tmp_path / "pages.json").write_text(json.dumps([{"items": items[:1], "items_total": 2}, {"items": items[1:2]}]))
    assert load_listing_file(tmp_path / "pages.json") == [one, two]
    assert find_dataset([one, two], "C1") is one and find_dataset([one, two], "A" * 32) is one
    with pytest.raises(UnknownIdentifierError, match="close matches: one"):
        find_dataset([one, two], "onne")


# --------------------------------------------------------------------------- end to end


def test_prepackaged_tile_end_to_end_keeps_uint8(clms_env: Sandbox) -> None:
    ds = source(file=TILE, decode=False).to_dask()  # the stored integers
    assert list(ds.data_vars) == ["FTY"]  # named after the product (FTY_2015_...), never band_data
    band = ds["FTY"]
    assert band.dtype == np.uint8
    assert ds.rio.crs.to_epsg() == 3035
    values = band.values
    assert values.size > 0 and np.count_nonzero(values) > 0
    decoded = source(file=TILE).to_dask()["FTY"].values  # the default: float32, nodata -> NaN
    assert decoded.dtype == np.float32
    nodata = ds["FTY"].attrs["_FillValue"]
    np.testing.assert_array_equal(np.isnan(decoded), values == nodata)
    np.testing.assert_array_equal(decoded[values != nodata], values[values != nodata])
    (task,) = tasks(clms_env)
    forest = next(d for d in clms_api.state(clms_env.ctx).catalog(clms_env.ctx) if d.short_name == FOREST)
    file_id = next(f["@id"] for f in forest.files if f["file"] == TILE)
    assert task.datasets[0]["FileID"] == file_id and task.datasets[0]["DatasetID"] == forest.uid
    assert clms_env.log.count("clms", "token") == 1


def test_tiled_product_without_grid_codes(clms_env: Sandbox) -> None:
    ds = source("corine-land-cover-2018", file="U2018_CLC2018_V2020_20u1", decode=False).to_dask()
    band = ds[list(ds.data_vars)[0]]
    assert band.dtype == np.uint8 and ds.rio.crs.to_epsg() == 3035
    tiles = clms_env.ctx.store.tiles("corine-land-cover-2018", grid_codes=False)
    assert len(tiles) > 1 and all("E" not in Path(t).stem.split("_")[-1] for t in tiles)
    assert np.count_nonzero(band.values) > 0
    assert band.sizes["x"] * band.sizes["y"] > 100 * 100  # more than one tile's worth, mosaicked


def test_non_downloadable_file_is_refused_before_posting(clms_env: Sandbox) -> None:
    with pytest.raises(ParameterError, match=f"not downloadable.*{TILE}"):
        source(file="FTY_2015_020m_eu_03035_d04_Full").to_dask()
    with pytest.raises(ParameterError, match="no pre-packaged file 'nope'"):
        source(file="nope").to_dask()
    assert posts(clms_env) == []


def test_cut_to_order_netcdf_through_the_transition_table_entry(clms_env: Sandbox) -> None:
    src = ClmsSource(**NDVI_TABLE, bbox=BBOX, start="2024-01-01", end="2024-01-31", service="clms", **FAST)
    ds = src.to_dask()
    assert ds.sizes["time"] == 3 and ds.rio.crs.to_epsg() == 4326
    assert float(ds.lon.min()) >= 5 and float(ds.lon.max()) <= 10
    (task,) = tasks(clms_env)
    (entry,) = task.datasets
    ndvi = next(d for d in clms_api.state(clms_env.ctx).catalog(clms_env.ctx) if d.short_name == NDVI_API)
    assert entry["DatasetID"] == ndvi.uid and entry["OutputFormat"] == "Netcdf" and entry["OutputGCS"] == "EPSG:4326"
    assert entry["BoundingBox"] == BBOX
    assert entry["TemporalFilter"] == {"StartDate": "2024-01-01 00:00:00", "EndDate": "2024-01-31 23:59:59"}


def test_unmapped_transition_table_entry_suggests_wekeo(clms_env: Sandbox) -> None:
    src = ClmsSource("EO:JRC:DAT:CLMS", "no_such_identifier_v9", bbox=BBOX, start="2024-01-01", end="2024-01-05",
                     service="clms", **FAST)
    with pytest.raises(UnknownIdentifierError, match="service='wekeo'"):
        src.to_dask()


def test_cut_to_order_items_are_chunked_and_packed() -> None:
    (ds,) = parse_listing([{
        "UID": "c" * 32, "id": "series",
        "dataset_download_information": {"items": [{"@id": "i", "full_source": "CDSE", "full_format": "Netcdf"}]},
        "coordinateReferenceSystemList": ["EPSG:4326"], "mapviewer_istimeseries": True,
        "download_limit_temporal_extent": 30,
    }])
    req = Request.build("series", bbox=BBOX, start="2023-01-01", end="2023-12-31", output_format="GeoTIFF")
    items = general_items(ds, req)
    assert len(items) == 13  # 365 days in pieces of at most 30
    spans = [span for _, span in items]
    assert spans[0] == (dt.date(2023, 1, 1), dt.date(2023, 1, 30)) and spans[-1][1] == dt.date(2023, 12, 31)
    assert all((b - a).days < 30 for a, b in spans)
    first = items[0][0]
    assert first["OutputFormat"] == "Geotiff" and first["OutputGCS"] == "EPSG:4326"
    assert first["TemporalFilter"]["EndDate"] - first["TemporalFilter"]["StartDate"] < 30 * 86400 * 1000
    products = general_products(ds, req)
    assert [len(p.extra["items"]) for p in products] == [5, 5, 3]
    assert json.loads(json.dumps([p.extra for p in products])) == [p.extra for p in products]
    with pytest.raises(ParameterError, match="output_format"):
        general_items(ds, Request.build("series", bbox=BBOX, start="2023-01-01", end="2023-01-02", output_format="GPKG"))
    with pytest.raises(ParameterError, match="crs"):
        general_items(ds, Request.build("series", bbox=BBOX, start="2023-01-01", end="2023-01-02", crs="EPSG:3035"))
    with pytest.raises(ParameterError, match="start"):
        general_items(ds, Request.build("series", bbox=BBOX))
    with pytest.raises(ParameterError, match="bbox"):
        general_items(ds, Request.build("series", start="2023-01-01", end="2023-01-02"))
    # what we post and what a task lists under Datasets hash the same
    stored = {**first, "TemporalFilter": {"StartDate": "2023-01-01 00:00:00", "EndDate": "2023-01-30 23:59:59"},
              "DatasetTitle": "x", "OutputGCS": "http://www.opengis.net/def/crs/EPSG/0/4326"}
    assert item_key(stored) == item_key(first) and items_hash([stored]) == items_hash([first])


# --------------------------------------------------------------------------- auth


def test_token_regranted_when_it_expires_during_the_wait(clms_env: Sandbox) -> None:
    clms_env.faults.add("token_expiry", "clms", "datarequest_status_get")
    source(file=TILE).to_dask()
    statuses = [e.status for e in clms_env.log.entries("clms", "datarequest_status_get")]
    assert 401 in statuses and statuses[-1] == 200
    assert clms_env.log.count("clms", "token") == 2


def test_expired_session_answered_with_a_200_login_body_is_regranted(clms_env: Sandbox) -> None:
    clms_env.faults.add("token_expiry", "clms", "datarequest_status_get", answer=200)
    source(file=TILE).to_dask()
    assert clms_env.log.count("clms", "token") == 2
    assert len(tasks(clms_env)) == 1


def _write_key(path: Path, **fields: Any) -> Path:
    path.write_text(json.dumps(fields))
    return path


def test_bad_service_keys_are_clear_errors(clms_env: Sandbox, tmp_path: Path, monkeypatch) -> None:
    good = json.loads(Path(clms_env.env()["CLMS_SERVICE_KEY"]).read_text())
    missing = {k: v for k, v in good.items() if k != "user_id"}
    with pytest.raises(CredentialsError, match="lacks the field 'user_id'"):
        load_service_key(_write_key(tmp_path / "k1.json", **missing))
    with pytest.raises(CredentialsError, match="'private_key' is not a PEM"):
        load_service_key(_write_key(tmp_path / "k2.json", **{**good, "private_key": "-----BEGIN nonsense"}))
    (tmp_path / "k3.json").write_text("{not json")
    with pytest.raises(CredentialsError, match="not valid JSON"):
        load_service_key(tmp_path / "k3.json")
    with pytest.raises(CredentialsError, match="CLMS_SERVICE_KEY"):
        load_service_key(tmp_path / "absent.json")
    # an unexpected token_uri host gets no assertion at all
    evil = _write_key(tmp_path / "k4.json", **{**good, "token_uri": "https://evil.example.org/@@oauth2-token"})
    with pytest.raises(CredentialsError, match="evil.example.org"):
        source(file=TILE, service_key=str(evil)).to_dask()
    assert clms_env.log.count("clms", "token") == 0
    # a key the server does not know: its refusal (status and message) is surfaced
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    ).decode()
    wrong = _write_key(tmp_path / "k5.json", **{**good, "private_key": other})
    with pytest.raises(GrantRefusedError, match="signature does not match") as info:
        source(file=TILE, service_key=str(wrong)).to_dask()
    assert info.value.status == 400
    unknown = _write_key(tmp_path / "k6.json", **{**good, "client_id": "not-registered"})
    with pytest.raises(GrantRefusedError, match="Unknown client") as info:
        source(file=TILE, service_key=str(unknown)).to_dask()
    assert info.value.status == 401
    assert posts(clms_env) == []
    # where the key is looked for: explicit, then CLMS_SERVICE_KEY, then the default location
    assert service_key_path(str(wrong)) == wrong
    monkeypatch.delenv("CLMS_SERVICE_KEY")
    assert service_key_path() == default_key_path()


def test_no_secret_reaches_the_log(clms_env: Sandbox, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    source(file=TILE).to_dask()
    st = clms_api.state(clms_env.ctx)
    key = json.loads(Path(clms_env.env()["CLMS_SERVICE_KEY"]).read_text())
    secrets = list(st.tokens) + [link for link in st.links] + [key["private_key"].splitlines()[1]]
    assert secrets and st.links
    text = caplog.text + "".join(str(r.args) for r in caplog.records)
    assert "GET /fme/" not in text or "<result link>" in text  # urllib3's request lines are redacted
    for secret in secrets:
        assert secret not in text
    assert "eyJ" not in text  # no JWT (assertion) either


# --------------------------------------------------------------------------- reuse


def _forest_cut_item(sb: Sandbox) -> dict[str, Any]:
    forest = next(d for d in clms_api.state(sb.ctx).catalog(sb.ctx) if d.short_name == FOREST)
    return {"DatasetID": forest.uid, "DatasetDownloadInformationID": forest.info_id, "OutputFormat": "Geotiff",
            "OutputGCS": "EPSG:3035", "BoundingBox": [5.0, 45.0, 10.0, 50.0]}


def test_queued_task_for_the_same_items_is_reused(clms_env: Sandbox) -> None:
    clms_env.ctx.queue_delay = 30.0  # still queued when our client looks
    task_id = raw_post(clms_env, [_forest_cut_item(clms_env)])
    ds = source(bbox=BBOX, crs="EPSG:3035").to_dask()
    assert ds.rio.crs.to_epsg() == 3035
    assert posts(clms_env) == [201]  # only the other client's post
    assert [t.task_id for t in tasks(clms_env)] == [task_id]


def test_duplicated_answer_finds_and_reuses_the_existing_task(clms_env: Sandbox) -> None:
    """The other client's task has finished by the time ours is refused as DUPLICATED: it is found and its result
    downloaded (the client once looked only among queued tasks; that race made this test flaky).  No sleeps: the
    sandbox clock jumps, and the server counts a finished task as a duplicate (``duplicate_of="live"``)."""
    clms_env.ctx.queue_delay = 3600.0
    clms_api.state(clms_env.ctx).duplicate_of = "live"
    task_id = raw_post(clms_env, [_forest_cut_item(clms_env)])
    clms_env.clock.advance(3600.0)  # the other client's task is finished before ours is posted
    ds = source(bbox=BBOX, crs="EPSG:3035").to_dask()
    assert ds.rio.crs.to_epsg() == 3035
    assert posts(clms_env) == [201, 400]  # ours was refused as DUPLICATED
    assert [t.task_id for t in tasks(clms_env)] == [task_id]


def test_a_stored_file_is_reused_by_another_request_without_any_order(clms_env: Sandbox) -> None:
    source(file=TILE).to_dask()
    forest = next(d for d in clms_api.state(clms_env.ctx).catalog(clms_env.ctx) if d.short_name == FOREST)
    ds = source(forest.uid, file=TILE).to_dask()  # another request (by UID), the same server product
    assert ds.rio.crs.to_epsg() == 3035
    assert posts(clms_env) == [201] and len(tasks(clms_env)) == 1
    assert clms_env.log.count("clms", "fme") == 1  # the product store holds it: downloaded once


# --------------------------------------------------------------------------- terminal states and expiry


@pytest.mark.parametrize(
    "kind, params, words",
    [
        ("terminal_failure", {"status": "Finished_nok", "message": "FME exploded"}, "Finished_nok: FME exploded"),
        ("terminal_failure", {"status": "Rejected", "message": "Not allowed"}, "Rejected: Not allowed"),
        ("server_cancel", {"message": "Cancelled by the operator"}, "Cancelled: Cancelled by the operator"),
    ],
)
def test_terminal_statuses_end_with_the_server_message(clms_env: Sandbox, kind: str, params: dict[str, Any],
                                                       words: str) -> None:
    clms_env.faults.add(kind, "clms", "datarequest_post", **params)
    src = source(file=TILE)
    with pytest.raises(PreloadError, match=words) as info:
        src.to_dask()
    (err,) = info.value.failures.values()
    assert isinstance(err, ServiceError) and err.service == "clms"
    assert posts(clms_env) == [201]
    _assert_nothing_published(src)


@pytest.mark.parametrize(
    "kind, params",
    [
        ("terminal_failure", {"status": "Finished_nok", "message": "FME exploded"}),  # was: failed in 0.1 s on every rerun
        ("server_cancel", {"message": "Cancelled by the operator"}),  # was: polled again forever
        ("corrupt_zip", {}),  # was: the bad archive's task and link were reused for 24 h
    ],
)
def test_a_rerun_after_a_spent_task_orders_anew_and_succeeds(clms_env: Sandbox, kind: str, params: dict[str, Any]) -> None:
    clms_env.faults.add(kind, "clms", "datarequest_post" if kind != "corrupt_zip" else "*", **params)
    with pytest.raises(PreloadError):
        source(file=TILE).to_dask()
    ds = source(file=TILE, decode=False).to_dask()  # the stored integers
    assert ds[list(ds.data_vars)[0]].dtype == np.uint8
    assert posts(clms_env) == [201, 201]  # exactly one new task: the spent one is never polled or fetched again
    assert len(tasks(clms_env)) == 2


def test_unknown_status_does_not_loop_forever(clms_env: Sandbox) -> None:
    clms_env.faults.add("terminal_failure", "clms", "datarequest_post", status="Paused")
    with pytest.raises(PreloadError, match="'Paused'") as info:
        source(file=TILE, poll_first=0.01, poll_cap=0.01).to_dask()
    assert isinstance(next(iter(info.value.failures.values())), ServiceError)
    assert clms_env.log.count("clms", "datarequest_status_get") < 20


@pytest.mark.parametrize("status", [403, 404, 410])
def test_dead_link_is_requested_again_once(clms_env: Sandbox, status: int) -> None:
    clms_env.faults.add("expired_link", "clms", "fme", status=status)
    ds = source(file=TILE, decode=False).to_dask()  # the stored integers
    assert ds[list(ds.data_vars)[0]].dtype == np.uint8
    assert posts(clms_env) == [201, 201]  # exactly one re-order
    # the same task is asked once more first (a link that answers once in error costs no order, issue 18);
    # the sandbox's dead link stays dead, as the real one does
    assert [e.status for e in clms_env.log.entries("clms", "fme")] == [status, status, 200]


def test_link_older_than_the_bound_is_requested_again(clms_env: Sandbox) -> None:
    api = client(file=TILE)
    product = file_product(find_dataset(api.listing(), FOREST), TILE)
    clms_env.clock.advance(-2 * 86400)  # the task finishes "two days ago"
    old = api.order(product)
    clms_env.clock.advance(2 * 86400)
    with pytest.raises(OrderExpiredError, match="issued 4[78].* h ago"):
        api.poll(old)
    fresh = api.order(product)  # the stale task is not reused
    assert fresh != old and posts(clms_env) == [201, 201]
    deadline = time.monotonic() + 5
    while api.poll(fresh)[0] != "done":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert api.fetch(product, fresh, 0).status_code == 200


def test_every_link_past_the_bound_fails_after_one_reorder(clms_env: Sandbox) -> None:
    clms_env.clock.advance(-2 * 86400)
    src = source(file=TILE, link_max_age=3600)
    with pytest.raises(PreloadError, match="link_max_age"):
        src.to_dask()
    assert posts(clms_env) == [201, 201]
    assert clms_env.log.count("clms", "fme") == 0  # a link known to be stale is never fetched


def test_download_resumes_after_a_connection_drop(clms_env: Sandbox) -> None:
    clms_env.faults.add("reset", "clms", "fme", after_bytes=1000)  # the tile's zip is a few kB in the sandbox
    source(file=TILE).to_dask()
    gets = clms_env.log.entries("clms", "fme")
    assert len(gets) == 2 and gets[0].range is None and gets[1].range == "bytes=1000-"
    (task,) = tasks(clms_env)
    assert gets[0].bytes_sent + gets[1].bytes_sent == task.file_size


# --------------------------------------------------------------------------- auxiliary API


def test_auxiliary_legacy_netcdf_within_the_rate_limit(clms_env: Sandbox) -> None:
    with pytest.raises(ParameterError, match="end"):
        source(SWI, bbox=BBOX, start="2020-01-01").to_dask()
    ds = source(SWI, bbox=BBOX, start="2020-01-01", end="2020-04-30", workers=8).to_dask()
    files = clms_env.log.entries("clms", "files")
    assert ds.sizes["time"] == len(files) >= 12
    assert all(e.status == 200 for e in files)  # the limiter kept every request under the server's limit
    assert posts(clms_env) == []
    times = sorted(clms_api.state(clms_env.ctx).files_arrivals)  # when each request reached the server
    assert len(times) == len(files)
    busiest = max(sum(1 for t in times if t0 <= t < t0 + 1.0) for t0 in times)
    assert busiest <= 10, times


def test_auxiliary_landcover_tiles(clms_env: Sandbox) -> None:
    ds = source("global-dynamic-land-cover", bbox=BBOX, start="2019-01-01", end="2019-12-31", decode=False).to_dask()
    band = ds[list(ds.data_vars)[0]]
    assert band.dtype == np.uint8 and ds.rio.crs.to_epsg() == 4326
    names = [e.path.rsplit("/", 1)[-1] for e in clms_env.log.entries("clms", "files")]
    assert names and all("2019" in n for n in names)  # other years listed by the API are left out


def test_rate_limiter_caps_starts_per_second() -> None:
    limiter = RateLimiter(20)
    starts = []
    t0 = time.monotonic()
    for _ in range(30):
        limiter.acquire()
        starts.append(time.monotonic() - t0)
    assert starts[19] < 0.5 and starts[20] >= 1.0  # a burst of 20, then wait for the window


# --------------------------------------------------------------------------- cancel


def _preload_until_polled(sb: Sandbox, **kw: Any):
    sb.ctx.queue_delay = 1e9  # never ready
    src = source(file=TILE, **kw)
    handle = src.preload(blocking=False)
    deadline = time.monotonic() + 5
    while sb.log.count("clms", "datarequest_status_get") == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    return src, handle


def test_cancel_also_cancels_the_server_task(clms_env: Sandbox) -> None:
    src, handle = _preload_until_polled(clms_env)
    t0 = time.monotonic()
    assert handle.cancel()
    assert time.monotonic() - t0 < 2.0 and handle.status == "cancelled"
    with pytest.raises(CancelledError):
        handle.wait(0)
    (task,) = tasks(clms_env)
    assert task.status(clms_env.clock.now()) == "Cancelled"
    assert [e.status for e in clms_env.log.entries("clms", "datarequest_delete")] == [204]
    _assert_nothing_published(src)


def test_cancel_stands_when_the_server_refuses_it(clms_env: Sandbox) -> None:
    clms_env.faults.add("status", "clms", "datarequest_delete", status=403, message="Blocked by firewall")
    _, handle = _preload_until_polled(clms_env)
    t0 = time.monotonic()
    assert handle.cancel()
    assert time.monotonic() - t0 < 2.0 and handle.status == "cancelled"
    assert [e.status for e in clms_env.log.entries("clms", "datarequest_delete")] == [403]
    (task,) = tasks(clms_env)
    assert task.status(clms_env.clock.now()) == "Queued"


def test_cancel_stands_when_the_server_call_hangs(clms_env: Sandbox) -> None:
    _, handle = _preload_until_polled(clms_env)
    clms_env.ctx.latency = 2.0  # every answer from now on takes 2 s: longer than the client waits for a cancel
    t0 = time.monotonic()
    assert handle.cancel(timeout=2.5)
    assert time.monotonic() - t0 < 2.0 and handle.status == "cancelled"
    assert clms_env.log.count("clms", "datarequest_delete") == 0  # the server had not answered
    deadline = time.monotonic() + 3
    while clms_env.log.count("clms", "datarequest_delete") == 0 and time.monotonic() < deadline:
        time.sleep(0.05)  # let the late answer go out before the sandbox stops


def test_a_rerun_after_a_cancel_orders_again(clms_env: Sandbox) -> None:
    src, handle = _preload_until_polled(clms_env)
    handle.cancel()
    clms_env.ctx.queue_delay = 6.0
    ds = source(file=TILE, decode=False).to_dask()  # the cancelled task is replaced, not reported as a failure
    assert ds[list(ds.data_vars)[0]].dtype == np.uint8
    assert posts(clms_env) == [201, 201]
