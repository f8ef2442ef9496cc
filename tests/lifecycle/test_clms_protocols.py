"""CLMS download API protocol variants against the sandbox, each switch in both shapes: the listing as documented
and as captured in production (files named by ``area``, several download-information items), task statuses in
either case, and DUPLICATED answered for a task in any non-failed state.  Time moves by the sandbox clock only."""

from __future__ import annotations

import threading

import pytest

from intake_clms.services.clms_api.listing import parse_listing
from intake_clms.errors import ParameterError
from intake_clms.sandbox import Sandbox, clms_api

from .test_clms_api import BBOX, FOREST, TILE, _forest_cut_item, clms_env, client, posts, raw_post, source, tasks  # noqa: F401


@pytest.mark.parametrize("shape", ["documented", "recorded"])
def test_listing_shapes_file_and_cut_to_order(clms_env: Sandbox, shape: str) -> None:
    clms_api.state(clms_env.ctx).listing_shape = shape
    svc = client()
    ds = svc.dataset(source().request)
    assert TILE in [f.file for f in ds.downloadable_files]  # by `file`, or by the stem in `area`
    assert ds.default_info is not None and ds.default_info.source == "EEA" and ds.cut_to_order
    assert len(ds.infos) == (2 if shape == "recorded" else 1)
    assert source(file=TILE).to_dask().rio.crs.to_epsg() == 3035
    assert source(bbox=BBOX, crs="EPSG:3035").to_dask().rio.crs.to_epsg() == 3035
    assert [t.datasets[0].get("DatasetSource") for t in tasks(clms_env)] == ["EEA", "EEA"]


def test_every_download_information_item_is_reachable_by_name(clms_env: Sandbox) -> None:
    clms_api.state(clms_env.ctx).listing_shape = "recorded"
    ds = client().dataset(source().request)
    assert ds.info_labels() == ["RASTER (Part 2)", "RASTER"]
    chosen = client().dataset(source(download_information=" raster ").request)
    assert chosen.infos[0] == ds.infos[1] and chosen.infos[0].name == "RASTER"
    assert client().dataset(source(download_information=ds.infos[1].id).request).infos[0] == ds.infos[1]
    with pytest.raises(ParameterError) as err:
        client().dataset(source(download_information="RASTER (Part 2)").request)
    assert err.value.name == "download_information" and "cannot be requested" in str(err.value)
    assert "'RASTER'" in str(err.value)
    with pytest.raises(ParameterError, match="expected one of 'RASTER'"):
        client().dataset(source(download_information="VECTOR").request)
    # the choice changes the data: it is part of the request's key
    assert source(bbox=BBOX, download_information="RASTER").request.key() != source(bbox=BBOX).request.key()
    assert source(file=TILE, download_information="RASTER").request.key() == source(file=TILE).request.key()


@pytest.mark.parametrize("case, status_filter", [("documented", "any_case"), ("upper", "any_case"),
                                                ("documented", "exact"), ("upper", "exact")])
def test_statuses_are_compared_without_case(clms_env: Sandbox, case: str, status_filter: str) -> None:
    """``exact``: a server whose ``status`` filter compares case-sensitively; the lookup must still find the
    ``QUEUED`` task (it lists without a filter and compares without case)."""
    clms_env.ctx.queue_delay = 3600.0  # stays queued: the clock only moves when told
    clms_api.state(clms_env.ctx).status_case = case
    clms_api.state(clms_env.ctx).status_filter = status_filter
    task_id = raw_post(clms_env, [_forest_cut_item(clms_env)])
    svc = client(bbox=BBOX, crs="EPSG:3035")
    assert svc.poll(task_id) == ("queued", None)
    (hit,) = svc.search(source(bbox=BBOX, crs="EPSG:3035").request)
    assert svc.order(hit) == task_id  # the QUEUED task is found and reused: nothing posted
    assert posts(clms_env) == [201]


@pytest.mark.parametrize("scope, finished", [("active", False), ("live", False), ("live", True)])
def test_duplicated_finds_the_task_whatever_its_non_failed_state(clms_env: Sandbox, scope: str, finished: bool) -> None:
    clms_env.ctx.queue_delay = 3600.0
    clms_api.state(clms_env.ctx).duplicate_of = scope
    task_id = raw_post(clms_env, [_forest_cut_item(clms_env)])
    if finished:
        clms_env.clock.advance(3600.0)  # the other client's task finished before ours was posted
    else:  # the first look for a live task fails, so our post goes out and is refused as DUPLICATED
        clms_env.faults.add("status", "clms", "datarequest_search", status=400, message="search unavailable")
    svc = client(bbox=BBOX, crs="EPSG:3035")
    (hit,) = svc.search(source(bbox=BBOX, crs="EPSG:3035").request)
    assert svc.order(hit) == task_id
    assert posts(clms_env) == [201, 400]
    assert [t.task_id for t in tasks(clms_env)] == [task_id]
    assert svc.poll(task_id)[0] == ("done" if finished else "queued")


def test_parser_takes_the_recorded_file_shape() -> None:
    item = {"UID": "u", "id": "clc", "dataset_download_information": {"items": [
        {"@id": "a", "name": "RASTER (Part 2)", "collection": "100m – Part 1"},
        {"@id": "b", "name": "RASTER ", "full_source": "EEA", "collection": " 100m"}]},
        "downloadable_files": {"items": [
            {"@id": "f1", "area": "u2018_clc2018_v2020_20u1_raster100m", "format": "Geotiff", "path": "/x/y.zip",
             "resolution": "100m", "size": "", "source": "EEA", "type": "Raster", "version": "", "year": "2018"},
            {"@id": "f2", "area": "", "path": "/data/u2012_cha0612_v2020_20u1_raster100m.zip", "source": "EEA"}]}}
    (ds,) = parse_listing([item])
    assert [f.file for f in ds.files] == ["u2018_clc2018_v2020_20u1_raster100m", "u2012_cha0612_v2020_20u1_raster100m"]
    assert ds.default_info.id == "b" and ds.source == "EEA" and ds.cut_to_order
    assert ds.choose("b").infos[0].id == "b" and ds.choose(None) is ds
