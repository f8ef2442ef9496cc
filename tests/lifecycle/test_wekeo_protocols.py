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
