"""WEkEO HDA protocol variants against the sandbox, each switch in both shapes: paging by nextIndex or by
totalResults/startIndex (and a broker that repeats its first page), downloads listings naming orders by
``download_id`` or ``_id``, and features titled or named by their ``id`` only."""

from __future__ import annotations

import threading

import pytest

from intake_clms.sandbox import Sandbox
from intake_clms.services import wekeo
from intake_clms.services.wekeo import connect

from .lifecycle_helpers import FAST, ndvi_source


def service() -> wekeo.WekeoService:
    return connect(dict(FAST), threading.Event())


def hda(sb: Sandbox):
    return sb.ctx.state["hda"]


@pytest.mark.parametrize("paging", ["nextIndex", "totalResults"])
def test_paging_by_either_key(hda_env: Sandbox, monkeypatch: pytest.MonkeyPatch, paging: str) -> None:
    hda(hda_env).paging = paging
    monkeypatch.setattr(wekeo, "PAGE", 2)  # three dekads: two pages
    hits = service().search(ndvi_source().request)
    assert len(hits) == 3 == len({h.key for h in hits})
    searches = hda_env.log.entries("hda", "search")
    assert len(searches) == 2


def test_a_repeating_page_stops_the_listing(hda_env: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    hda(hda_env).repeat_pages = True  # the broker ignores startIndex; totalResults says 3
    monkeypatch.setattr(wekeo, "PAGE", 2)
    hits = service().search(ndvi_source().request)
    assert len(hits) == 2 == len({h.key for h in hits})  # each product once, and no endless loop
    assert len(hda_env.log.entries("hda", "search")) == 2


@pytest.mark.parametrize("ids", ["download_id", "_id"])
def test_find_order_matches_download_id_or_underscore_id(hda_env: Sandbox, ids: str) -> None:
    hda(hda_env).listing_ids = ids
    svc = service()
    hit = svc.search(ndvi_source(end="2024-01-10").request)[0]
    order = svc.order(hit)
    assert svc.find_order(hit, 0.0) == order


@pytest.mark.parametrize("titles", ["title", "id"])
def test_features_named_by_title_or_id(hda_env: Sandbox, titles: str) -> None:
    hda(hda_env).titles = titles
    src = ndvi_source(end="2024-01-10")
    (hit,) = service().search(src.request)
    assert hit.name and hit.key
    ds = src.to_dask()
    assert ds.sizes["time"] == 1 and float(ds["NDVI"].count()) > 0


OLD_IDS = [  # (old dataset ID, bbox, start, end): a product type, CORINE's format, HR-S&I's date key names
    ("EO:CLMS:DAT:CLMS_GLOBAL_ALBH_1KM_V1_10DAILY_NETCDF", [6, 46, 8, 48], "2020-01-01", "2020-01-10"),
    ("EO:EEA:DAT:CORINE", [6, 46, 8, 48], "2018-01-01", "2018-12-31"),
    ("EO:CRYO:DAT:HRSI:PSA", [6, 46, 8, 48], "2024-01-01", "2024-12-31"),
]


def test_old_id_keys_come_from_the_catalog() -> None:
    from intake_clms.services.wekeo.queries import date_keys, old_id_keys

    assert old_id_keys("EO:EEA:DAT:CORINE") == {"productType": "Corine Land Cover 2018", "format": "GeoTiff100mt"}
    assert old_id_keys("EO:CLMS:DAT:CLMS_GLOBAL_ALBH_1KM_V1_10DAILY_NETCDF") == {"productType": "ALBH"}
    assert old_id_keys("EO:CRYO:DAT:HRSI:PSA") == {}  # the catalog knows no product type for it
    assert date_keys("EO:CRYO:DAT:HRSI:PSA") == ("startdate", "enddate")
    assert date_keys("EO:EEA:DAT:CORINE") == ("start", "end")
    sources = {"a": {"metadata": {"dataset_id": "EO:JRC:DAT:CLMS", "old_ids": ["EO:X:DAT:Y"], "old_product_types": ["T"]}}}
    assert old_id_keys("EO:X:DAT:Y", sources) == {"productType": "T"}  # named as an old ID of a migrated entry
    two = {**sources, "b": {"metadata": {"dataset_id": "EO:X:DAT:Y", "old_product_types": ["U", "V"]}}}
    assert old_id_keys("EO:X:DAT:Y", two) == {}  # ambiguous: no productType rather than a wrong one


@pytest.mark.parametrize("keys", ["optional", "required"])
@pytest.mark.parametrize("dataset_id, bbox, start, end", OLD_IDS)
def test_old_id_search_carries_the_keys_its_dataset_expects(hda_env: Sandbox, keys: str, dataset_id: str, bbox: list,
                                                            start: str, end: str) -> None:
    """``required``: the broker answers 400 to an old-ID search without its product type, format or date key
    names (as the live one is queried); the client sends them, from the catalog's metadata."""
    from intake_clms.params import Request

    hda(hda_env).old_keys = keys
    hits = service().search(Request.build(dataset_id, None, bbox=bbox, start=start, end=end))
    assert hits and all(h.extra["dataset_id"] == dataset_id for h in hits)
    assert all(h.start >= start and h.end <= end + "T23:59:59.999Z" for h in hits)  # the dates were understood
    assert {e.status for e in hda_env.log.entries("hda", "search")} == {200}


DELIVERED = [  # an old ID's NetCDF (served bare, or zipped in a folder) and its zipped tiles
    ("EO:CLMS:DAT:CLMS_GLOBAL_ALBH_1KM_V1_10DAILY_NETCDF", [6, 46, 8, 48], "2020-01-01", "2020-01-10"),
    ("EO:EEA:DAT:CORINE", [9.6, 48.2, 9.8, 48.4], "2018-01-01", "2018-12-31"),  # where the sandbox's tiles hold data
]


@pytest.mark.parametrize("dataset_id, bbox, start, end", DELIVERED)
def test_old_id_delivered_flat_or_in_a_product_folder(hda_env: Sandbox, dataset_id: str, bbox: list, start: str,
                                                     end: str, tmp_path) -> None:
    """``folder``: the delivered ``<id>.zip`` holds a folder ``<id>/`` (NetCDFs too, not served bare), as the
    live broker delivers old IDs; the product opens either way, with the same values."""
    import io
    import zipfile

    import numpy as np
    import requests

    from intake_clms.source import ClmsSource

    opened = {}
    for layout in ("flat", "folder"):
        hda(hda_env).old_zips = layout
        src = ClmsSource(dataset_id, bbox=bbox, start=start, end=end, service="wekeo", cache_dir=str(tmp_path / layout),
                         **FAST)
        ds = src.to_dask()
        name = next(iter(ds.data_vars))
        assert float(ds[name].count()) > 0
        opened[layout] = ds[name].values
        order = list(hda(hda_env).orders.values())[-1]
        svc = service()
        r = requests.get(f"{svc.api}/dataaccess/download/{order.download_id}", headers=svc.auth.headers(), timeout=30)
        assert r.status_code == 200
        if layout == "folder":
            stem = order.product_id
            assert r.headers["Content-Disposition"].endswith(f'{stem}.zip"')
            with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
                assert zf.namelist() and all(n.startswith(f"{stem}/") for n in zf.namelist()), zf.namelist()
        else:
            assert not r.content.startswith(b"PK") or all("/" not in n for n in zipfile.ZipFile(
                io.BytesIO(r.content)).namelist())
    np.testing.assert_array_equal(opened["flat"], opened["folder"])
