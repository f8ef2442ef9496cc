"""Vector data files, on real files written by geopandas/GDAL: found in a product (content and
name, shapefile sets, zipped shapefiles, rasters first) and read into one GeoDataFrame (bbox in
lon/lat whatever the CRS, time column or product time, CRS kept, layers, several products)."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import zipfile
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from shapely.geometry import Point, box

from intake_clms.assemble import data_kind, open_files
from intake_clms.assemble.vector import open_vector
from intake_clms.errors import IntegrityError, NoDataFilesError
from intake_clms.engine.extract import classify, extract_zip, require_data, sniff

BBOX = (5.0, 45.0, 10.0, 50.0)


def frame(points, crs="EPSG:4326", **columns) -> gpd.GeoDataFrame:
    """Points given in lon/lat, stored in ``crs``."""
    gdf = gpd.GeoDataFrame({"id": list(range(1, len(points) + 1)), **columns},
                           geometry=[Point(p) for p in points], crs="EPSG:4326")
    return gdf.to_crs(crs)


def write(gdf: gpd.GeoDataFrame, path: Path, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    gdf.to_file(path, engine="pyogrio", **kw)
    return path


INSIDE, OUTSIDE, EDGE = (7.0, 47.0), (20.0, 47.0), (10.0, 47.5)


# --------------------------------------------------------------------------- finding vector data


def test_vector_files_are_found_by_content_and_name(tmp_path: Path) -> None:
    pts = frame([INSIDE, OUTSIDE])
    write(pts, tmp_path / "v/a.geojson", driver="GeoJSON")
    write(pts, tmp_path / "v/b.gpkg", driver="GPKG")
    write(pts, tmp_path / "v/c.fgb", driver="FlatGeobuf")
    write(pts, tmp_path / "v/shp/d.shp", driver="ESRI Shapefile")
    (tmp_path / "v/noext_gpkg").write_bytes((tmp_path / "v/b.gpkg").read_bytes())
    collection = json.loads((tmp_path / "v/a.geojson").read_text())
    # keys in any order (sorted: "features" before "type"), and a BOM
    (tmp_path / "v/sorted.json").write_text(json.dumps(collection, sort_keys=True))
    empty = json.dumps({"type": "FeatureCollection", "features": []}).encode()
    (tmp_path / "v/bom.json").write_bytes(b"\xef\xbb\xbf" + empty)
    # JSON that is not a FeatureCollection: a STAC item (a single Feature) and plain metadata
    (tmp_path / "v/stac.json").write_text(json.dumps({"type": "Feature", "stac_version": "1.0.0", "geometry": None}))
    (tmp_path / "v/meta.json").write_text(json.dumps({"title": "x", "keywords": ["a"]}))
    sqlite3.connect(tmp_path / "v/plain.sqlite").execute("create table t (a int)").connection.commit()

    data, other = classify(tmp_path / "v")
    rel = lambda paths: [p.relative_to(tmp_path / "v").as_posix() for p in paths]  # noqa: E731
    assert rel(data) == ["a.geojson", "b.gpkg", "bom.json", "c.fgb", "noext_gpkg", "shp/d.shp", "sorted.json"]
    assert rel(other) == ["meta.json", "plain.sqlite", "shp/d.cpg", "shp/d.dbf", "shp/d.prj", "shp/d.shx", "stac.json"]
    assert {sniff(p) for p in data} == {"vector"}
    assert sniff(tmp_path / "v/shp/d.shx") is None  # the index has the .shp header, but is no data file
    assert sniff(tmp_path / "v/plain.sqlite") is None and sniff(tmp_path / "v/stac.json") is None
    assert data_kind([tmp_path / "v/a.geojson", tmp_path / "v/shp/d.shp"]) == "vector"


def test_rasters_come_first_a_footprint_is_metadata(tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    (tmp_path / "p/data.nc").write_bytes(b"CDF\x01" + bytes(60))
    write(frame([INSIDE]), tmp_path / "p/footprint.geojson", driver="GeoJSON")
    data, other = classify(tmp_path / "p")
    assert [p.name for p in data] == ["data.nc"] and [p.name for p in other] == ["footprint.geojson"]


def test_a_shapefile_without_its_index_or_attributes_is_refused(tmp_path: Path) -> None:
    write(frame([INSIDE]), tmp_path / "roads.shp", driver="ESRI Shapefile")
    (tmp_path / "roads.dbf").unlink()
    with pytest.raises(IntegrityError, match=r"roads\.shp without its roads\.dbf"):
        require_data(tmp_path, "roads.zip")


def test_no_data_message_names_vector_formats(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("nothing here")
    with pytest.raises(NoDataFilesError, match="GeoJSON, GeoPackage, shapefile"):
        require_data(tmp_path, "empty.zip")


def test_zipped_shapefile_in_a_product_zip_is_expanded_and_read(tmp_path: Path) -> None:
    shp = write(frame([INSIDE, OUTSIDE, EDGE], crs="EPSG:3035", name=["in", "out", "edge"]),
                tmp_path / "src/rivers.shp", driver="ESRI Shapefile")
    inner = tmp_path / "rivers.zip"
    with zipfile.ZipFile(inner, "w", zipfile.ZIP_DEFLATED) as zf:
        for part in sorted(shp.parent.iterdir()):
            zf.write(part, part.name)
    product = tmp_path / "product.zip"
    with zipfile.ZipFile(product, "w") as zf:
        zf.write(inner, "Results/rivers.zip")
        zf.writestr("Results/rivers.xml", "<metadata/>")
    extract_zip(product, tmp_path / "out")
    data = require_data(tmp_path / "out", product.name)
    assert [p.relative_to(tmp_path / "out").as_posix() for p in data] == ["Results/rivers/rivers.shp"]
    gdf = open_files("vector", data, ["2018-01-01"], BBOX)
    assert sorted(gdf["name"]) == ["edge", "in"] and gdf.crs.to_epsg() == 3035


# --------------------------------------------------------------------------- reading


def test_bbox_is_a_lon_lat_rectangle_whatever_the_crs_and_the_crs_is_kept(tmp_path: Path) -> None:
    # East of the EEA grid's central meridian (10 E) the box's east edge is curved in EPSG:3035: a
    # polygon just beyond it in the north lies inside the box's projected envelope, yet outside the box
    bbox = (20.0, 45.0, 25.0, 50.0)
    straddle = box(24.5, 46.0, 26.0, 46.5)  # crosses the east edge: kept (intersects)
    near = box(25.01, 49.5, 26.0, 49.9)  # outside, within the envelope
    gdf = gpd.GeoDataFrame({"name": ["in", "out", "straddle", "near"]},
                           geometry=[Point(22, 47), Point(30, 47), straddle, near], crs="EPSG:4326").to_crs("EPSG:3035")
    path = write(gdf, tmp_path / "ua.gpkg", driver="GPKG")
    got = open_vector([path], ["2018-01-01"], bbox)
    assert sorted(got["name"]) == ["in", "straddle"]
    assert got.crs.to_epsg() == 3035
    assert got.geometry.to_crs(4326).intersects(box(*bbox)).all()
    # the whole world in lon/lat, on a regional CRS: every feature, no projection error
    assert len(open_vector([path], ["2018-01-01"], (-180, -90, 180, 90))) == 4


def test_a_time_column_filters_rows_by_the_requested_dates(tmp_path: Path) -> None:
    days = pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04T23:00:00"], format="ISO8601")
    path = write(frame([INSIDE] * 4, time=days), tmp_path / "wl.gpkg", driver="GPKG")
    got = open_vector([path], ["2024-01-01"], BBOX, period=(dt.date(2024, 1, 2), dt.date(2024, 1, 4)))
    assert list(got["id"]) == [2, 3, 4]  # the end day is included whole
    # a text column named Date (any case), ISO strings
    text = write(frame([INSIDE] * 3, Date=["2019-05-01", "2020-05-01", "2021-05-01"]), tmp_path / "t.geojson",
                 driver="GeoJSON")
    got = open_vector([text], [None], BBOX, period=(dt.date(2020, 1, 1), None))
    assert list(got["id"]) == [2, 3] and "time" not in got.columns
    # a number named time is no time: nothing filtered, and the column is left as it is
    numbers = write(frame([INSIDE] * 2, time=[7, 2030]), tmp_path / "n.gpkg", driver="GPKG")
    got = open_vector([numbers], ["2024-01-01"], BBOX, period=(dt.date(2024, 1, 2), dt.date(2024, 1, 4)))
    assert list(got["time"]) == [7, 2030]


def test_without_a_time_column_rows_get_their_products_time_and_products_are_concatenated(tmp_path: Path) -> None:
    a = write(frame([INSIDE, OUTSIDE], code=["a1", "a2"]), tmp_path / "a.geojson", driver="GeoJSON")
    b = write(frame([INSIDE, EDGE], crs="EPSG:3035", code=["b1", "b2"]), tmp_path / "b.gpkg", driver="GPKG")
    got = open_vector([a, b], ["2018-01-01", "2021-01-01T00:00:00Z"], BBOX)
    assert list(got["code"]) == ["a1", "b1", "b2"]
    assert list(got["time"]) == [np.datetime64("2018-01-01"), np.datetime64("2021-01-01"), np.datetime64("2021-01-01")]
    assert got.crs.to_epsg() == 4326  # the first product's CRS; the second reprojected to it
    assert got.geometry.intersects(box(*BBOX)).all()
    assert list(got.index) == [0, 1, 2]


def test_every_spatial_layer_is_read_and_named(tmp_path: Path) -> None:
    path = write(frame([INSIDE]), tmp_path / "n2k.gpkg", driver="GPKG", layer="sites")
    write(frame([EDGE, OUTSIDE]), path, driver="GPKG", layer="habitats")
    with sqlite3.connect(path) as db:  # a plain table beside the layers is no layer to read
        db.execute("create table lookup (code text)")
    got = open_vector([path], ["2018-01-01"], BBOX)
    assert sorted(zip(got["layer"], got["id"])) == [("habitats", 1), ("sites", 1)]


def test_nothing_in_the_bbox_gives_an_empty_frame_with_its_crs(tmp_path: Path) -> None:
    path = write(frame([OUTSIDE], crs="EPSG:3035"), tmp_path / "x.gpkg", driver="GPKG")
    got = open_vector([path], ["2018-01-01"], BBOX)
    assert isinstance(got, gpd.GeoDataFrame) and len(got) == 0 and got.crs.to_epsg() == 3035
