"""CLMS download API datasets as intake entries: the nested ``clms_api`` catalog and ``generate --clms-api``.

Against the sandbox over real HTTP; the sandbox log counts the CLMS calls, so
"listed when opened, not when shown" and "cached on disk" are measured, not
assumed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import math
import os
import random
import uuid
from pathlib import Path

import intake
import pytest
import pytest_socket
import requests
import yaml
from workbooks import CATALOG

from intake_clms.catalog.generate import API_CATALOG_NAME
from intake_clms.cli import main
from intake_clms.catalog.clms_api import (
    ClmsApiCatalog,
    api_entries,
    api_entry,
    build_api_catalog,
    output_crs,
    output_formats,
)
from intake_clms.services.clms_api.listing import PAGE_SIZE, load_listing_file, parse_listing
from intake_clms.errors import ParameterError, ServiceError
from intake_clms.sandbox import Sandbox
from intake_clms.source import ClmsSource

from sandbox.conftest import sandbox, sandbox_factory  # noqa: F401  (the shared sandbox fixtures)

FTY_FULL = "FTY_2015_100m_eu_03035_d02_Full"
FTY_TILE = "FTY_2015_100m_eu_03035_d02_E30N20"
FTY_NOT_DOWNLOADABLE = "FTY_2015_020m_eu_03035_d04_Full"


@pytest.fixture
def api_env(sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Sandbox:
    """The sandbox, with CLMS_API_URL & co pointing at it and the cache in a fresh folder."""
    for name, value in sandbox.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("INTAKE_CLMS_CACHE", str(tmp_path / "cache"))
    return sandbox


def searches(sb: Sandbox) -> int:
    return sb.log.count(service="clms", endpoint="search")


def raw_listing(sb: Sandbox) -> list[dict]:
    """Every @search item, page by page, as a user would save it (``fullobjects``, following batching.next)."""
    url = sb.env()["CLMS_API_URL"].rstrip("/") + "/@search?portal_type=DataSet&fullobjects=1"
    items: list[dict] = []
    while url:
        r = requests.get(url, headers={"Accept": "application/json"}, timeout=30)
        r.raise_for_status()
        body = r.json()
        items += body["items"]
        url = (body.get("batching") or {}).get("next")
    return items


@functools.lru_cache(maxsize=1)
def _parent_spec() -> str:
    """A catalog holding only the committed catalog's nested entry, as written there (quick to open)."""
    sources = yaml.safe_load(CATALOG.read_text(encoding="utf-8"))["sources"]
    return yaml.safe_dump({"metadata": {"version": 1}, "sources": {API_CATALOG_NAME: sources[API_CATALOG_NAME]}})


def nested(cat=None) -> ClmsApiCatalog:
    """The nested API catalog as a user reaches it: an entry of a parent catalog (a fresh parent by default)."""
    if cat is None:
        path = Path(os.environ["INTAKE_CLMS_CACHE"]).parent / f"parent-{uuid.uuid4().hex[:8]}.yaml"  # under tmp_path
        path.write_text(_parent_spec())
        cat = intake.open_catalog(str(path))
    out = cat[API_CATALOG_NAME]
    assert isinstance(out, ClmsApiCatalog)
    return out


def test_showing_the_parent_makes_no_call_and_opening_lists_once(api_env):
    cat = intake.open_catalog(str(CATALOG))  # (every entry instantiated offline: tests/test_source.py)
    assert API_CATALOG_NAME in list(cat)
    sub = nested(cat)
    sub.describe()
    assert "clms_api" in str(sub._yaml()) and not sub.opened
    assert api_env.log.count(service="clms") == 0

    entries = list(sub)
    assert sub.opened
    calls = api_env.log.entries(service="clms")
    total = len(entries) + len(sub.listing_only)
    assert {e.endpoint for e in calls} == {"search"} and all(e.status == 200 for e in calls)
    assert len(calls) == math.ceil(total / PAGE_SIZE)
    assert "forest_type_2015" in entries and entries == sorted(entries)
    assert all(n.isidentifier() for n in entries)
    r = requests.get(api_env.env()["CLMS_API_URL"] + "/@search?portal_type=DataSet",
                     headers={"Accept": "application/json"}, timeout=10).json()
    assert r["items_total"] == total  # every dataset listed is either an entry or named as listing-only


def test_a_listing_over_several_pages_makes_one_call_per_page(api_env):
    sub = ClmsApiCatalog(page_size=25)
    assert api_env.log.count(service="clms") == 0
    n = len(list(sub)) + len(sub.listing_only)
    assert n > 50  # the sandbox lists enough datasets for three pages
    assert searches(api_env) == math.ceil(n / 25) == 3


def test_file_parameter_allows_exactly_the_downloadable_files(api_env):
    sub = nested()
    entry = sub._entries["forest_type_2015"]
    params = {p["name"]: p for p in entry.describe()["user_parameters"]}
    assert params["file"]["allowed"] == [FTY_FULL, FTY_TILE, ""]  # '' = cut to order, which this dataset allows
    assert FTY_NOT_DOWNLOADABLE not in params["file"]["allowed"]
    assert params["file"]["default"] == FTY_FULL
    assert params["crs"]["allowed"] == ["EPSG:3035", "EPSG:4326"]
    assert params["output_format"]["allowed"] == ["Geotiff"]
    md = entry.describe()["metadata"]
    assert md["unavailable_files"] == [FTY_NOT_DOWNLOADABLE]
    assert [f["file"] for f in md["files"]] == [FTY_FULL, FTY_TILE] and all(f["size"] for f in md["files"])
    assert md["crs"] == ["EPSG:3035"] and md["time_start"] == "2014-01-01" and md["time_end"] == "2016-12-31"
    assert md["coverage_bbox"] == pytest.approx([-31.2684, 27.6375, 44.8212, 71.1855])

    src = sub.forest_type_2015
    assert isinstance(src, ClmsSource)
    assert src.request.file == FTY_FULL and src.request.dataset_id == "forest-type-2015"
    assert src.request.service == "clms" and src.service == "clms"
    tile = sub.forest_type_2015(file=FTY_TILE)
    assert tile.request.file == FTY_TILE
    cut = sub.forest_type_2015(file="", bbox=[5, 45, 6, 46], crs="EPSG:4326")
    assert cut.request.file is None and cut.request.bbox == (5.0, 45.0, 6.0, 46.0) and cut.request.crs == "EPSG:4326"
    assert cut.request.output_format == "Geotiff"


def test_bad_values_name_the_parameter_and_what_it_accepts(api_env):
    sub = nested()
    with pytest.raises(ParameterError) as info:
        sub.forest_type_2015(file=FTY_NOT_DOWNLOADABLE)
    assert info.value.name == "file"
    assert FTY_NOT_DOWNLOADABLE in str(info.value) and FTY_FULL in str(info.value) and FTY_TILE in str(info.value)
    with pytest.raises(ParameterError, match=r"output_format: got 'Netcdf'; expected one of 'Geotiff'"):
        sub.forest_type_2015(file="", output_format="Netcdf")
    with pytest.raises(ParameterError, match="crs: got 'EPSG:32632'"):
        sub.forest_type_2015(file="", crs="EPSG:32632")


def test_listing_only_datasets_get_no_entry(api_env):
    sub = nested()
    names = list(sub)
    assert "corine-land-cover-1990" in sub.listing_only  # listed, its file has no path/source, no cut-to-order
    assert "corine_land_cover_1990" not in names
    assert not set(sub.listing_only) & {sub._entries[n].describe()["metadata"]["identifier"] for n in names}
    time_series = [n for n in names if sub._entries[n].describe()["metadata"]["timeseries"]]
    assert time_series, "the sandbox lists downloadable time series"
    for name in time_series:  # dates only where the API takes a TemporalFilter
        params = {p["name"] for p in sub._entries[name].describe()["user_parameters"]}
        assert {"start", "end"} <= params


def test_second_open_within_max_age_uses_the_disk_cache(api_env):
    first = nested()
    n = len(list(first))
    calls = searches(api_env)
    assert calls > 0
    again = nested()  # a new parent and a new nested catalog: only the disk cache is shared
    assert again is not first and len(list(again)) == n
    assert searches(api_env) == calls
    first.updated -= first.ttl + 1  # intake's ttl passed: reload, still from the disk cache
    assert len(list(first)) == n and searches(api_env) == calls
    stale = ClmsApiCatalog(max_age=0)
    assert api_env.log.count(service="clms") == calls  # creating it made no call either
    assert len(list(stale)) == n and searches(api_env) > calls  # past max_age: listed again


def test_service_errors_carry_status_and_message(api_env):
    api_env.faults.add("status", "clms", "search", times=None, status=500, retry_after=0,
                       message="catalogue down for maintenance")
    sub = nested()  # still fine: nothing is listed yet
    with pytest.raises(ServiceError) as info:
        list(sub)
    assert info.value.status == 500 and "catalogue down for maintenance" in str(info.value)
    assert searches(api_env) > 1  # retried before giving up
    api_env.faults.clear()
    assert "forest_type_2015" in list(sub)  # the failure was not cached


def test_a_malformed_base_url_is_a_service_error(api_env):
    sub = ClmsApiCatalog(base_url="land.copernicus.eu/api")  # no scheme
    with pytest.raises(ServiceError, match="cannot list the datasets at land.copernicus.eu/api") as info:
        list(sub)
    assert info.value.service == "clms"


def test_generate_offline_from_a_saved_listing_equals_the_live_catalog(api_env, tmp_path, capsys):
    live = nested()
    live_described = {name: live._entries[name].describe() for name in live}
    saved = tmp_path / "saved.json"
    saved.write_text(json.dumps(raw_listing(api_env)))
    out = tmp_path / "api.yaml"
    pytest_socket.disable_socket()
    try:
        assert main(["generate", "--clms-api", "--listing", str(saved), "-o", str(out)]) == 0
        assert f"wrote {len(live_described)} entries" in capsys.readouterr().err
        static = intake.open_catalog(str(out))
        assert list(static) == list(live_described)
        for name, described in live_described.items():
            assert static._entries[name].describe() == described, name
        src = static.forest_type_2015(file=FTY_TILE)
        assert isinstance(src, ClmsSource) and src.request.file == FTY_TILE and src.request.service == "clms"
        assert static.forest_type_2015.request.file == FTY_FULL
        with pytest.raises(ValueError, match=f"file={FTY_NOT_DOWNLOADABLE} is not one of the allowed values"):
            static.forest_type_2015(file=FTY_NOT_DOWNLOADABLE)
    finally:
        pytest_socket.enable_socket()
    text = out.read_text()
    assert "corine-land-cover-1990" in yaml.safe_load(text)["metadata"]["listing_only"]
    # A saved listing cache file works as well as raw items.
    assert [d.id for d in load_listing_file(saved)] == [i["id"] for i in raw_listing(api_env)]


def test_generate_from_the_live_listing(api_env, tmp_path):
    out = tmp_path / "live.yaml"
    assert main(["generate", "--clms-api", "-o", str(out)]) == 0
    assert searches(api_env) > 0
    sources = yaml.safe_load(out.read_text())["sources"]
    assert sources["forest_type_2015"]["parameters"]["file"]["allowed"] == [FTY_FULL, FTY_TILE, ""]
    assert sources == api_entries(parse_listing(raw_listing(api_env)))


def test_entries_are_deterministic_whatever_the_listing_order(api_env):
    items = raw_listing(api_env)
    shuffled = list(items)
    random.Random(3).shuffle(shuffled)
    assert shuffled != items
    a = build_api_catalog(parse_listing(items))
    b = build_api_catalog(parse_listing(shuffled))
    assert yaml.safe_dump(a) == yaml.safe_dump(b)
    assert list(a["sources"]) == sorted(a["sources"])


def test_name_collisions_get_distinct_entries(api_env):
    items = [i for i in raw_listing(api_env) if i["id"] == "forest-type-2015"]
    twin = json.loads(json.dumps(items[0]))
    twin["UID"] = "f" * 32
    twin["id"] = "forest_type-2015"  # a different short name that makes the same identifier
    entries = api_entries(parse_listing([twin, items[0]]))
    assert list(entries) == ["forest_type_2015", sorted(entries)[1]] and len(entries) == 2
    assert {e["args"]["dataset_id"] for e in entries.values()} == {"forest-type-2015", "forest_type-2015"}
    same = json.loads(json.dumps(items[0]))
    same["UID"] = "e" * 32  # the same short name twice: each entry names its dataset by UID
    entries = api_entries(parse_listing([items[0], same]))
    assert sorted(e["args"]["dataset_id"] for e in entries.values()) == sorted([items[0]["UID"], "e" * 32])


@pytest.mark.parametrize("args, text", [
    ([], "nothing to generate from"),
    (["--listing", "x.json"], "--listing only applies with --clms-api"),
    (["table.xlsx", "--clms-api"], "give no transition table"),
])
def test_generate_argument_errors(args, text, capsys):
    assert main(["generate", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and text in err[0]


def test_an_entry_reads_through_the_clms_backend(api_env):
    """The entries are what the clms driver needs: a pre-packaged tile, requested, fetched and opened."""
    ds = nested().forest_type_2015(file=FTY_TILE).to_dask()
    raw = nested().forest_type_2015(file=FTY_TILE, decode=False).to_dask()  # the same stored request
    assert list(ds.data_vars) == ["FTY"] and ds["FTY"].dtype == "float32" and ds["FTY"].size > 0  # decoded
    assert raw["FTY"].dtype == "uint8" and raw["FTY"].shape == ds["FTY"].shape  # the stored integers
    assert api_env.log.count(service="clms", endpoint="datarequest_post") == 1


def test_formats_crs_and_default_dates_follow_the_dataset(api_env):
    by_id = {d.id: d for d in parse_listing(raw_listing(api_env))}
    assert output_formats("Netcdf") == ["Netcdf", "Geotiff"] and output_formats("netcdf") == ["Netcdf", "Geotiff"]
    assert output_formats("GPKG") == ["GPKG", "GDB", "GML", "Geojson", "Shapefile"] and output_formats("COG?") == []
    fty = by_id["forest-type-2015"]
    assert output_crs(fty) == ["EPSG:3035", "EPSG:4326"]
    series = dataclasses.replace(fty, timeseries=True, limit_days=10, start=dt.date(2020, 1, 1), end=dt.date(2020, 12, 31))
    params = api_entry(series)["parameters"]
    assert (params["start"]["default"], params["end"]["default"]) == ("2020-12-22", "2020-12-31")  # within the limit
    assert "10 days" in params["end"]["description"]
    no_file = dataclasses.replace(fty, files=())  # cut to order only: '' is the one file value
    assert api_entry(no_file)["parameters"]["file"]["allowed"] == [""]
    files_only = dataclasses.replace(fty, infos=tuple(dataclasses.replace(i, path="") for i in fty.infos))
    spec = api_entry(files_only)  # no full path: the server cannot cut it, so only the files are offered
    assert set(spec["parameters"]) == {"file"} and spec["parameters"]["file"]["allowed"] == [FTY_FULL, FTY_TILE]
    assert set(spec["args"]) == {"dataset_id", "file", "service"}
    legacy = next(d for d in by_id.values() if d.auxiliary and d.source == "LEGACY")
    aux = api_entry(legacy)["parameters"]
    assert {"bbox", "start", "end"} <= set(aux) and "output_format" not in aux and aux["start"]["default"]
