"""Vector entries end to end: catalog -> ClmsVectorSource -> WEkEO (sandbox, real HTTP) -> store -> GeoDataFrame.

The expected rows are computed from the sandbox's own GeoJSON files (the features of the
products the request covers whose geometry intersects the bbox), so a missing, extra or
altered feature fails.  Clocks are in lockstep with the sandbox: no real sleep.
"""

from __future__ import annotations

import json
import sys

import geopandas as gpd
import pytest
from geopandas.testing import assert_geodataframe_equal
from shapely.geometry import box, shape

import intake_clms
from intake_clms.errors import ClmsError
from intake_clms.vector_source import ClmsVectorSource

from .lifecycle_helpers import Lockstep, store, view_of

#: Poll after one queue delay of the sandbox (6 sandbox seconds), in lockstep: one poll per order.
POLL = {"poll_first": 6.0, "poll_cap": 6.0, "poll_deadline": 600, "backoff": 0.01}

CASES = {
    # daily water levels (points), new ID: WEkEO delivers the CDSE product folder zipped
    "wl_lakes_global_vector_daily_v2": dict(bbox=[-60, -40, 60, 60], start="2024-01-01", end="2024-01-03"),
    # Urban Atlas change (polygons), two 3-yearly products concatenated
    "clms_ua_land_cover_land_use_change_europe_v010ha_3yearly_v1": dict(bbox=[-10, 35, 10, 50]),
}


def expected_features(sb, key: str, bbox, start, end) -> list[dict]:
    """The features of the sandbox's own files, for the products of the request, intersecting bbox."""
    st = sb.ctx.store
    out = []
    for item in st.items(key, None, start, end):
        doc = json.loads(st.materialize(item).read_text(encoding="utf-8"))
        out += [f for f in doc["features"] if shape(f["geometry"]).intersects(box(*bbox))]
    return out


def _key(date, ident) -> tuple[str, int]:
    return (str(date)[:10], int(ident))


@pytest.mark.parametrize("entry", sorted(CASES))
def test_vector_entry_reads_a_geodataframe_and_reopens_offline(hda_env, monkeypatch, entry):
    cat = intake_clms.open_catalog()
    kw = CASES[entry]
    src = getattr(cat, entry)(service="wekeo", clock=Lockstep(hda_env), **kw, **POLL)
    assert isinstance(src, ClmsVectorSource) and src.container == "dataframe"

    gdf = src.read()

    assert isinstance(gdf, gpd.GeoDataFrame)
    assert gdf.crs is not None and gdf.crs.to_epsg() == 4326  # the files' own CRS (GeoJSON: CRS84)
    assert len(gdf) > 0
    assert gdf.geometry.intersects(box(*kw["bbox"])).all()
    # exactly the source files' features in the bbox, attributes and geometries included
    key = src.metadata["identifier"]
    start, end = src.request.start, src.request.end
    items = hda_env.ctx.store.items(key, None, start, end)
    want = expected_features(hda_env, key, kw["bbox"], start, end)
    total = sum(len(json.loads(hda_env.ctx.store.materialize(i).read_text())["features"]) for i in items)
    assert 0 < len(want) < total, "the bbox must keep some features and drop others"
    assert sorted(_key(d, i) for d, i in zip(gdf["date"], gdf["id"])) == sorted(
        _key(f["properties"]["date"], f["properties"]["id"]) for f in want)
    by_key = {_key(f["properties"]["date"], f["properties"]["id"]): f for f in want}
    for _, row in gdf.iterrows():
        f = by_key[_key(row["date"], row["id"])]
        assert row.geometry.equals_exact(shape(f["geometry"]), 1e-9)
        for name, value in f["properties"].items():
            if name not in ("date", "id"):
                assert row[name] == value, name
    assert len({str(d)[:10] for d in gdf["date"]}) == len(items) > 1  # concatenated over every product
    assert hda_env.log.count("hda", "order") == len(items)
    view = view_of(src)
    assert view is not None and view.data_kind == "vector" and view.access == "download"
    records = [store().products.check(vp.key) for vp in view.products]
    assert all(r is not None and [f.kind for f in r.data()] == ["vector"] for r in records)

    # reopening: no credentials, no HTTP call, the same frame
    before = len(hda_env.log.entries())
    monkeypatch.delenv("HDA_USER")
    monkeypatch.delenv("HDA_PASSWORD")
    again = getattr(intake_clms.open_catalog(), entry)(service="wekeo", **kw).read()
    assert len(hda_env.log.entries()) == before
    assert_geodataframe_equal(again, gdf)


def test_old_id_delivered_as_a_flat_zip(hda_env):
    """A not-migrated vector ID: WEkEO sends the GeoJSON and its metadata in a flat zip."""
    bbox = [-170, 30, 0, 70]
    src = ClmsVectorSource("EO:EEA:DAT:EU-HYDRO", bbox=bbox, start="2018-01-01", end="2018-12-31", service="wekeo",
                           clock=Lockstep(hda_env), **POLL)
    gdf = src.read()
    key = hda_env.ctx.store.dataset("EO:EEA:DAT:EU-HYDRO").key
    want = expected_features(hda_env, key, bbox, src.request.start, src.request.end)
    assert sorted(gdf["id"]) == sorted(f["properties"]["id"] for f in want)
    assert 0 < len(want) < hda_env.ctx.store.size_class.features
    assert gdf.crs.to_epsg() == 4326 and gdf.geometry.intersects(box(*bbox)).all()


def test_to_dask_partitions_the_frame_and_needs_dask_geopandas(hda_env, monkeypatch):
    import dask_geopandas

    kw = CASES["wl_lakes_global_vector_daily_v2"]
    src = intake_clms.open_catalog().wl_lakes_global_vector_daily_v2(service="wekeo", clock=Lockstep(hda_env),
                                                                      **kw, **POLL)
    lazy = src.to_dask()
    assert isinstance(lazy, dask_geopandas.GeoDataFrame)
    assert_geodataframe_equal(lazy.compute(), src.read())
    assert lazy.crs == src.read().crs
    monkeypatch.setitem(sys.modules, "dask_geopandas", None)  # as if not installed
    with pytest.raises(ClmsError, match=r"intake-clms\[vector-dask\]"):
        src.to_dask()
    assert len(src.read()) == len(lazy)  # read() needs no dask-geopandas


def test_raster_product_through_the_vector_driver_names_the_right_driver(hda_env):
    src = ClmsVectorSource("EO:JRC:DAT:CLMS", "ndvi_global_300m_10daily_v2", bbox=[5, 45, 10, 50],
                           start="2024-01-01", end="2024-01-10", service="wekeo", clock=Lockstep(hda_env), **POLL)
    with pytest.raises(ClmsError, match="driver 'clms'"):
        src.read()


def test_vector_product_through_the_raster_driver_names_the_vector_driver(hda_env):
    """Old IDs whose table row says nothing of vectors (EU-Hydro, N2K, ...) keep driver clms: they say what to use."""
    from intake_clms.source import ClmsSource

    src = ClmsSource("EO:EEA:DAT:EU-HYDRO", bbox=[-170, 30, 0, 70], start="2018-01-01", end="2018-12-31",
                     service="wekeo", clock=Lockstep(hda_env), **POLL)
    with pytest.raises(ClmsError, match="driver 'clms_vector'"):
        src.to_dask()
    with pytest.raises(ClmsError, match="driver 'clms_vector'"):  # reopened from the cache: the same answer
        src.read()


def test_every_vector_entry_uses_the_vector_driver():
    import yaml

    sources = yaml.safe_load(intake_clms.default_catalog_path().read_text(encoding="utf-8"))["sources"]
    vector = {n for n, s in sources.items() if (s.get("metadata") or {}).get("is_vector")}
    # five new-ID entries say "vector" in their resolution; five old IDs (EU-Hydro, Natura 2000, riparian and
    # coastal zones, river and lake ice) are known by name
    assert len(vector) == 10 and {"wl_lakes_global_vector_daily_v2", "eo_eea_dat_eu_hydro"} <= vector
    assert {n for n, s in sources.items() if s["driver"] == "clms_vector"} == vector
    cat = intake_clms.open_catalog()
    for name in sorted(vector):
        src = getattr(cat, name)()  # offline: only validation
        assert isinstance(src, ClmsVectorSource) and src.container == "dataframe"
        assert src.describe()["container"] == "dataframe"


def test_creating_a_vector_source_imports_no_geopandas():
    import subprocess
    import textwrap

    code = textwrap.dedent("""
        import sys, intake_clms
        src = intake_clms.open_catalog().wl_lakes_global_vector_daily_v2(bbox=[5, 45, 10, 50], start="2024-01-01")
        src.describe(); src.discover()
        print(sorted(m for m in ("geopandas", "pyogrio", "shapely", "pandas") if m in sys.modules))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_readme_vector_example_runs_as_written(hda_env, monkeypatch, capsys):
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    text = (root / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- readme-test: vector -->\s*```python\n(.*?)```", text, re.S).group(1)
    monkeypatch.chdir(root)
    monkeypatch.setattr("intake_clms.engine.preload.SYSTEM", Lockstep(hda_env))  # its waits move the sandbox clock
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)  # noqa: S102 - the README's own example
    gdf = scope["gdf"]
    assert isinstance(gdf, gpd.GeoDataFrame) and len(gdf) > 0
    assert capsys.readouterr().out.strip() == f"{len(gdf)} EPSG:4326"


def test_preload_command_of_a_vector_entry(hda_env, monkeypatch, tmp_path, capsys):
    import argparse

    from intake_clms.cli.preload import add_preload_parser, source_for

    monkeypatch.setattr("intake_clms.engine.preload.SYSTEM", Lockstep(hda_env))
    parser = argparse.ArgumentParser()
    add_preload_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["preload", "wl_rivers_global_vector_daily_v2", "--bbox=-60,-40,60,60", "--start",
                              "2024-01-01", "--end", "2024-01-02", "--service", "wekeo", "-q",
                              "--cache-dir", str(tmp_path / "c")])
    assert args.func(args) == 0
    src = source_for(args.entry, args)
    assert isinstance(src, ClmsVectorSource)
    rows = len(src.read())
    err = capsys.readouterr().err
    assert "preloaded wl_rivers_global_vector_daily_v2: 2 product(s)" in err and f"; {rows} feature(s)" in err
    assert rows > 0 and hda_env.log.count("hda", "order") == 2
