"""Issue 17, what a newcomer meets: resolve takes what `list` prints and name words, `--max-products`,
`cache list | head` without a traceback, `generate --columns` errors that show the header row once,
and a second sandbox that leaves the first one's service key alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from workbooks import NEW_HEADERS, TABLE, write_workbook

import intake_clms
from intake_clms.cli import build_parser, glue_signed_values
from intake_clms.services.clms_api.listing import fetch_listing
from intake_clms.errors import ParameterError, UnknownIdentifierError
from intake_clms.cli.preload import source_for
from intake_clms.sandbox import Sandbox

from sandbox.conftest import sandbox, sandbox_factory  # noqa: F401  (the shared sandbox fixtures)


def run(*args: str, env: dict[str, str] | None = None, stdout: int | None = subprocess.PIPE) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "intake_clms.cli", *args], stdout=stdout, stderr=subprocess.PIPE,
                          text=True, env=env)


@pytest.fixture
def saved_listing(sandbox, tmp_path, monkeypatch):  # noqa: F811
    """The CLMS API listing the nested catalog saves when first opened, in a fresh cache; the sandbox then stopped."""
    monkeypatch.setenv("INTAKE_CLMS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CLMS_API_URL", sandbox.env()["CLMS_API_URL"])
    fetch_listing(sandbox.env()["CLMS_API_URL"])
    sandbox.stop()  # resolving never goes to the network
    return {**os.environ}


def test_resolve_takes_what_list_prints_and_name_words(saved_listing):
    listed = run("list", "--search", "corine", env=saved_listing)
    assert listed.returncode == 0, listed.stderr
    printed = [line.split()[0] for line in listed.stdout.splitlines()]
    assert "clms_download_api.corine_land_cover_2018" in printed and "eo_eea_dat_corine" in printed
    assert intake_clms.resolve("clms_download_api.corine_land_cover_2018") == ["clms_download_api.corine_land_cover_2018"]
    for name in printed:  # every name `list` prints resolves to itself
        assert name in intake_clms.resolve(name)
    assert intake_clms.resolve("corine_land_cover_2018") == ["clms_download_api.corine_land_cover_2018"]
    words = run("resolve", "corine", env=saved_listing)
    assert words.returncode == 0, words.stderr
    names = [line.split("\t")[0] for line in words.stdout.splitlines()]
    assert {"eo_eea_dat_corine", "eo_clms_dat_corine", "clms_download_api.corine_land_cover_2018"} <= set(names)
    one = run("resolve", "corine_land_cover_2018", env=saved_listing)
    assert one.returncode == 0 and one.stdout.split("\t")[:2] == ["clms_download_api.corine_land_cover_2018", "clms_api"]
    with pytest.raises(UnknownIdentifierError, match="'no such thing' is not in the catalog"):
        intake_clms.resolve("no such thing")


def test_preload_of_an_api_dataset_by_its_listed_name(saved_listing):
    argv = ["preload", "clms_download_api.forest_type_2015", "--service", "clms", "--file", "F"]
    args = build_parser().parse_args(glue_signed_values(argv))
    assert source_for(args.entry, args).request.dataset_id == "forest-type-2015"


def test_preload_has_max_products(sandbox, tmp_path, monkeypatch):  # noqa: F811
    """The engine's advice names the option, and the command line has it."""
    for name, value in sandbox.env().items():
        monkeypatch.setenv(name, value)
    cache = tmp_path / "cache"
    base = ["preload", "ndvi_global_300m_10daily_v2", "--bbox", "5,45,6,46", "--start", "2024-01-01",
            "--end", "2024-01-31", "--service", "wekeo", "--cache-dir", str(cache), "--quiet"]
    args = build_parser().parse_args(glue_signed_values([*base, "--max-products", "2"]))
    with pytest.raises(ParameterError, match=r"at least 3 products.*raise max_products \(the keyword, or "
                                             r"--max-products on the command line\)"):  # the search stops early
        source_for(args.entry, args).read()
    args = build_parser().parse_args(glue_signed_values([*base, "--max-products", "3"]))
    assert source_for(args.entry, args).read().sizes["time"] == 3


def test_cache_list_into_a_closed_pipe_is_no_traceback(tmp_path):
    """``intake-clms cache list | head``: the reader went away before the output was written."""
    env = {**os.environ, "INTAKE_CLMS_CACHE": str(tmp_path / "cache")}
    for command in (["cache", "list"], ["list"]):
        read, write = os.pipe()
        os.close(read)
        try:
            out = run(*command, env=env, stdout=write)
        finally:
            os.close(write)
        assert "Traceback" not in out.stderr and "BrokenPipeError" not in out.stderr, out.stderr
        assert out.returncode == 0


def test_columns_error_shows_the_header_row_once(tmp_path, clean_sheets):
    """A title merged across the columns is not the header row, and is not listed once per cell."""
    clean_sheets["New"][0] = ["CLMS products available from CDSE"] + [None] * 5
    table = write_workbook(tmp_path / "t.xlsx", clean_sheets, {"New": ["A1:F1"]})
    out = run("generate", str(table), "--columns", "New:dataset_identifier=Product code")
    assert out.returncode == 2
    line = out.stderr.strip()
    assert "headers found: " in line and "CLMS products available" not in line
    found = line.split("headers found: ", 1)[1]
    assert found.count(repr(NEW_HEADERS[0])) == 1 and all(repr(h) in found for h in NEW_HEADERS)
    bundled = run("generate", str(TABLE), "--columns", "New:dataset_identifier=Product code")
    assert bundled.stderr.count("CLMS products available from CDSE") == 0 and "'Dataset'" in bundled.stderr


def test_a_second_sandbox_leaves_the_first_ones_service_key_alone(tmp_path):
    data = tmp_path / "shared-data"  # `intake-clms sandbox` uses one default data folder for every run
    first = Sandbox(data_dir=data, seed=0).start()
    try:
        key = first.env()["CLMS_SERVICE_KEY"]
        before = open(key).read()
        assert json.loads(before)["token_uri"].startswith(first.urls["base"])
        second = Sandbox(data_dir=data, seed=0).start()
        try:
            assert second.env()["CLMS_SERVICE_KEY"] != key
        finally:
            second.stop()
        assert open(key).read() == before  # not replaced: the first sandbox's clients still get tokens
    finally:
        first.stop()


def test_a_yearly_product_with_no_dates_reads_the_newest_year_and_says_which_exist(sandbox, tmp_path,  # noqa: F811
                                                                                    monkeypatch, caplog):
    for name, value in sandbox.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("HDA_RC", str(tmp_path / "no-hdarc"))
    cat = intake_clms.open_catalog()
    fast = {"cache_dir": str(tmp_path / "cache"), "poll_first": 0.05, "poll_cap": 0.2}
    with caplog.at_level("WARNING", logger="intake_clms"):
        ds = cat.eo_eea_dat_corine(bbox=[10, 48, 10.02, 48.02], service="wekeo", **fast).to_dask()
    assert ds.sizes["time"] == 1 and str(ds.time.values[0])[:4] == "2018"
    said = [r.getMessage() for r in caplog.records if "no dates given" in r.getMessage()]
    assert said and "2000, 2006, 2012, 2018" in said[0] and "newest (2018)" in said[0]
    asked = cat.eo_eea_dat_corine(bbox=[10, 48, 10.02, 48.02], start="2000-01-01", end="2018-12-31", service="wekeo",
                                  **fast).to_dask()
    assert asked.sizes["time"] == 4  # dates given: every edition in them


def test_eu_hydro_has_features_in_europe_and_an_empty_result_says_why(sandbox, tmp_path, monkeypatch,  # noqa: F811
                                                                      caplog):
    for name, value in sandbox.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("HDA_RC", str(tmp_path / "no-hdarc"))
    cat = intake_clms.open_catalog()
    fast = {"cache_dir": str(tmp_path / "cache"), "poll_first": 0.05, "poll_cap": 0.2}
    with caplog.at_level("WARNING", logger="intake_clms"):
        rhine = cat.eo_eea_dat_eu_hydro(bbox=[4, 50, 6, 52], service="wekeo", **fast).read()
    assert len(rhine) > 0 and not [r for r in caplog.records if "no feature" in r.getMessage()]
    world = cat.eo_eea_dat_eu_hydro(bbox=[-180, -90, 180, 90], service="wekeo", **fast).read()
    west, south, east, north = world.to_crs("EPSG:4326").total_bounds
    assert west > -32 and east < 45 and south > 27 and north < 72  # Europe, not scattered worldwide
    with caplog.at_level("WARNING", logger="intake_clms"):
        ocean = cat.eo_eea_dat_eu_hydro(bbox=[-60, -40, -58, -38], service="wekeo", **fast).read()
    assert len(ocean) == 0
    said = [r.getMessage() for r in caplog.records if "no feature in bbox" in r.getMessage()]
    assert said and "[-60.0, -40.0, -58.0, -38.0]" in said[0] and "[-31.2684, 27.6375" in said[0]


def test_the_vector_plot_of_an_area_without_features_says_so():
    import geopandas as gpd
    from shapely.geometry import Point

    from intake_clms.errors import ClmsError
    from intake_clms.plots import fit_points, points_plot

    empty = gpd.GeoDataFrame({"id": []}, geometry=gpd.GeoSeries([], crs="EPSG:4326"))
    with pytest.raises(ClmsError, match="no feature in the requested area"):
        fit_points(empty, points_plot())
    one = gpd.GeoDataFrame({"id": [1]}, geometry=[Point(5, 50)], crs="EPSG:4326")
    frame, spec = fit_points(one, points_plot())
    assert list(frame["lon"]) == [5.0] and spec["x"] == "lon"


def test_the_catalog_buttons_are_plain_text_no_emoji_glyph():
    """Intake's third catalog button is "🔍", an empty box where the font lacks emoji (Debian's headless Chromium)."""
    from intake_clms.gui import build_gui

    gui = build_gui()
    buttons = [w.name for w in gui.main[0][1][1]]
    assert buttons[2] == "Search" and all(ord(c) < 0x2000 for name in buttons for c in name), buttons
