"""``service="auto"``: CDSE first when its credentials are at hand, and the next service when CDSE says a
product is not (or no longer) there: its search finds nothing, or the product answers 404."""

from __future__ import annotations

import logging
import threading

import pytest

from intake_clms.errors import ClmsError
from intake_clms.services import choose_service, service_chain
from intake_clms.services.cdse.service import connect
from intake_clms.source import ClmsSource

from lifecycle.lifecycle_helpers import FAST, Lockstep, store

NDVI = {"dataset_id": "EO:JRC:DAT:CLMS", "dataset_identifier": "ndvi_global_300m_10daily_v2"}
MIGRATED = {"migration_status": "migrated"}


def auto_source(sb, **kw) -> ClmsSource:
    kw.setdefault("access", "download")
    return ClmsSource(**NDVI, bbox=[5, 45, 10, 50], start="2024-01-01", end="2024-01-10", service="auto",
                      metadata=MIGRATED, clock=Lockstep(sb), **{**FAST, **kw})


def test_the_auto_order():
    assert service_chain("auto", "migrated", {"wekeo", "cdse", "clms"}) == ["cdse", "wekeo", "clms"]
    assert service_chain("auto", "new", {"wekeo", "clms"}) == ["wekeo", "clms"]
    assert service_chain("auto", "not_migrated", {"cdse", "wekeo"}) == ["wekeo"]
    assert service_chain("auto", "migrated", set()) == ["wekeo"]
    assert service_chain("cdse", "migrated", {"wekeo"}) == ["cdse"]
    assert choose_service("auto", "migrated", {"cdse"}) == "cdse"


def test_auto_reads_through_cdse_when_its_credentials_are_at_hand(cdse_env):
    src = auto_source(cdse_env)
    assert src.service == "cdse"
    src.to_dask()
    assert store().views.get(src.request.key()).service == "cdse"
    assert cdse_env.log.count(service="hda") == 0


def test_auto_falls_back_to_wekeo_when_cdse_lists_nothing(cdse_env, monkeypatch, caplog):
    st = cdse_env.ctx.state["cdse"]
    published = st.specs
    monkeypatch.setattr(st, "specs", lambda: [s for s in published() if s.dataset_identifier != NDVI["dataset_identifier"]])
    src = auto_source(cdse_env)
    with caplog.at_level(logging.WARNING):
        ds = src.to_dask()
    assert ds.sizes["time"] == 1
    assert store().views.get(src.request.key()).service == "wekeo"
    assert "auto: cdse does not have the product" in caplog.text and "trying wekeo" in caplog.text


def test_auto_falls_back_when_cdse_answers_404_and_keeps_what_it_has(cdse_env, caplog):
    cdse_env.faults.add("status", service="cdse", endpoint="download", status=404, times=None)
    src = auto_source(cdse_env)
    with caplog.at_level(logging.WARNING):
        src.to_dask()
    view = store().views.get(src.request.key())
    assert view.service == "wekeo"
    assert "is not (or no longer) on CDSE" in caplog.text
    # the product WEkEO stored is the one CDSE would have: a CDSE read of the same request reuses it
    cdse_env.faults.clear()
    before = cdse_env.log.count(service="cdse", endpoint="download")
    hits = connect({"access": "download"}, threading.Event(), Lockstep(cdse_env)).search(src.request)
    assert [h.key for h in hits] == [vp.key for vp in view.products]
    assert store().products.check(hits[0].key) is not None
    assert cdse_env.log.count(service="cdse", endpoint="download") == before


def test_an_explicit_service_never_falls_back(cdse_env):
    cdse_env.faults.add("status", service="cdse", endpoint="download", status=404, times=None)
    src = ClmsSource(**NDVI, bbox=[5, 45, 10, 50], start="2024-01-01", end="2024-01-10", service="cdse",
                     access="download", clock=Lockstep(cdse_env), **FAST)
    with pytest.raises(ClmsError, match="not \\(or no longer\\) on CDSE"):
        src.to_dask()
    assert cdse_env.log.count(service="hda") == 0


def test_other_failures_do_not_fall_back(cdse_env):
    cdse_env.faults.add("bad_checksum", service="cdse", endpoint="download", times=None)
    with pytest.raises(ClmsError, match="md5"):
        auto_source(cdse_env).to_dask()
    assert cdse_env.log.count(service="hda") == 0
