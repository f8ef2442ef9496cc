"""The sandbox's product generator: realistic structures, determinism, catalog coverage, zips."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import multiprocessing
import re
import stat
import threading
import zipfile
from pathlib import Path

import netCDF4
import numpy as np
import pytest
import rasterio
import rioxarray  # noqa: F401  (registers .rio)
import xarray as xr
import yaml

from intake_clms.sandbox.datagen import (
    HOSTILE_NAMES,
    LAYOUTS,
    PATTERNS,
    DatasetSpec,
    Item,
    ProductStore,
    inspect_file,
    parse_size,
)

CATALOG = Path(__file__).resolve().parents[2] / "catalogs" / "clms.yaml"
NDVI = "ndvi_global_300m_10daily_v2"
TCD = "clms_vlcc_tree-cover-density_europe_10m_yearly_v1"
GRID_CODE = re.compile(r"_E\d\dN\d\d_")
UTC = dt.timezone.utc


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> ProductStore:
    """One tiny store shared by the module (files are generated once)."""
    return ProductStore(tmp_path_factory.mktemp("products"), seed=0, size="tiny")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _ndvi_item(store: ProductStore, fmt: str | None = None) -> Item:
    return store.items(NDVI, start="2024-01-01", end="2024-01-10", format=fmt)[0]


# --------------------------------------------------------------------------- catalog coverage


def test_every_catalog_entry_maps_to_a_pattern(store: ProductStore) -> None:
    sources = {n: s for n, s in yaml.safe_load(CATALOG.read_text())["sources"].items()
               if s["driver"] in ("clms", "clms_vector")}
    specs = {s.entry: s for s in store.datasets()}  # products only: the nested clms_api catalog is none
    assert set(specs) == set(sources)
    for name, src in sources.items():
        spec = specs[name]
        meta = src["metadata"]
        assert spec.key == meta["identifier"]
        assert spec.pattern in PATTERNS, name
        if meta.get("is_vector"):
            assert spec.pattern == "vector", name
        elif meta.get("spatial_coverage") in ("Global", "Northern Hemisphere", "Pan-tropical", "Baltic"):
            assert spec.pattern == "global_nc", name
        elif meta.get("spatial_coverage") == "Europe" and name.startswith("clms_vlcc"):
            assert spec.pattern == "europe_tiles", name
        assert spec.start <= spec.end
        items = store.items(spec.key, limit=2, format="all")
        assert items, f"{name} yields no items"
        for item in items:
            assert store.item(item.id) == item  # ids parse back
            assert item.size_hint > 0
    patterns = {s.pattern for s in specs.values()}
    assert {"global_nc", "europe_tiles", "europe_tiles_nogrid", "vector"} <= patterns
    assert specs["clms_clcplus_lulucf_instance_europe_100m_yearly_v1"].pattern == "europe_tiles_nogrid"


def test_dataset_lookup_by_every_name(store: ProductStore) -> None:
    spec = store.dataset(NDVI)
    assert store.dataset(spec.entry) is spec
    assert store.dataset(spec.uid) is spec
    assert store.dataset("EO:CLMS:DAT:CLMS_GLOBAL_NDVI_300M_V2_10DAILY_NETCDF").dataset_identifier == NDVI
    assert store.find("EO:JRC:DAT:CLMS", NDVI) == [spec]
    assert {s.key for s in store.find("EO:EEA:DAT:HRL:TCF")} >= {TCD}
    with pytest.raises(KeyError):
        store.dataset("no_such_dataset_v9")


def test_item_ids_unique_and_stable(store: ProductStore, tmp_path: Path) -> None:
    other = ProductStore(tmp_path, seed=0, size="tiny")
    seen: dict[str, str] = {}
    for spec in store.datasets():
        mine = store.items(spec.key, limit=3, format="all")
        assert [i.id for i in mine] == [i.id for i in other.items(spec.key, limit=3, format="all")]
        for item in mine:
            assert seen.setdefault(item.id, spec.key) == spec.key, f"{item.id} in two datasets"
            assert store.item_by_uuid(item.uuid) == item


# --------------------------------------------------------------------------- time steps and filters


def _starts(store: ProductStore, key: str, start: str, end: str) -> list[dt.datetime]:
    return [i.start for i in store.items(key, start=start, end=end)]


def test_time_steps_follow_the_frequency(store: ProductStore) -> None:
    dekads = _starts(store, NDVI, "2023-01-01", "2023-12-31")
    assert len(dekads) == 36 and {d.day for d in dekads} == {1, 11, 21}
    last = store.items(NDVI, start="2023-01-21", end="2023-01-21")[0]
    assert last.end == dt.datetime(2023, 1, 31, 23, 59, 59, tzinfo=UTC)
    assert len(_starts(store, "ssm_europe_1km_daily_v1", "2020-02-01", "2020-02-29")) == 29
    months = _starts(store, "wb_global_300m_monthly_v2", "2021-01-01", "2021-12-31")
    assert [d.month for d in months] == list(range(1, 13))
    hourly = _starts(store, "lst_global_5km_hourly_v2", "2022-03-01", "2022-03-01")
    assert 2 <= len(hourly) <= 24 and all(d.date() == dt.date(2022, 3, 1) for d in hourly)
    assert [d.year for d in _starts(store, TCD, "2018-01-01", "2020-12-31")][:1] == [2018]
    three = _starts(store, "clms_vlcc_forest-type_europe_10m_3yearly_v1", "2015-01-01", "2025-01-01")
    assert sorted({d.year for d in three}) == [2018, 2021]
    assert len(store.items("swi-static_global_12.5km_daily_v3")) == 1
    assert store.items(NDVI, start="1990-01-01", end="1990-12-31") == []


def test_items_filter_by_time_overlap_and_footprint(store: ProductStore) -> None:
    mid = store.items(NDVI, start="2024-01-15", end="2024-01-15")
    assert [i.start.day for i in mid] == [11]  # the dekad containing the day
    bbox = (10.0, 45.0, 12.0, 47.0)
    tiles = store.items(TCD, bbox=bbox, start="2019-01-01", end="2019-12-31")
    assert tiles and len(tiles) == store.count(TCD, bbox=bbox, start="2019-01-01", end="2019-12-31")
    for item in tiles:
        w, s, e, n = item.bbox
        assert w < bbox[2] and e > bbox[0] and s < bbox[3] and n > bbox[1]
        assert item.tile and item.tile in item.name
    everywhere = store.count(TCD, start="2019-01-01", end="2019-12-31")
    assert everywhere > len(tiles)
    assert store.items(TCD, bbox=(-170.0, -50.0, -160.0, -40.0)) == []
    full = store.items(NDVI, start="2022-01-01", end="2022-12-31")
    assert store.items(NDVI, start="2022-01-01", end="2022-12-31", limit=5, offset=10) == full[10:15]
    naive = store.items(NDVI, start=dt.datetime(2022, 1, 1), end=dt.datetime(2022, 12, 31, 23, 59))
    assert naive == full
    recent = store.items(NDVI, start="2026-06-01T00:00:00Z", end="present")
    assert [i.start.day for i in recent] == [1, 11, 21]  # ongoing products end at a fixed "present"


# --------------------------------------------------------------------------- NetCDF


def test_global_netcdf_is_cf_valid(store: ProductStore) -> None:
    item = _ndvi_item(store)
    assert item.name == "c_gls_NDVI300_202401010000_GLOBE_OLCI_V2.0.1.nc"
    assert item.product_name == "c_gls_NDVI300_202401010000_GLOBE_OLCI_V2.0.1_nc"
    path = store.materialize(item)
    assert 2_000 < path.stat().st_size < 2_000_000  # tiny: 4 x 4 degrees on the 1/336 degree grid
    with netCDF4.Dataset(path) as raw:
        var = raw["NDVI"]
        assert var.dtype == np.uint8
        assert var._FillValue == 255 and list(var.valid_range) == [0, 250]
        assert var.scale_factor == pytest.approx(0.004) and var.add_offset == pytest.approx(-0.08)
        assert var.grid_mapping == "crs"
        crs = raw["crs"]
        assert crs.grid_mapping_name == "latitude_longitude" and "WGS 84" in crs.spatial_ref
        assert raw.time_coverage_start == "2024-01-01T00:00:00Z"
        assert raw.time_coverage_end == "2024-01-10T23:59:59Z"
        for attr in ("title", "institution", "product_version", "Conventions"):
            assert raw.getncattr(attr)
    with xr.open_dataset(path) as ds:
        ndvi = ds["NDVI"]
        assert ndvi.dtype == np.float32  # unpacked
        assert ndvi.isnull().any() and ndvi.notnull().any()  # fill masked, data present
        assert float(ndvi.min()) >= -0.08 - 1e-6 and float(ndvi.max()) <= 0.92 + 1e-6
        assert float(ds.lat[0]) > float(ds.lat[-1])  # descending, like the real files
        assert ds.time.values[0] == np.datetime64("2024-01-01")
        assert {**ndvi.attrs, **ndvi.encoding}["grid_mapping"] == "crs"
    with xr.open_dataset(path, decode_coords="all") as ds:
        assert ds.rio.crs.to_epsg() == 4326  # rioxarray finds the grid mapping


def test_regional_netcdf_covers_its_region(store: ProductStore) -> None:
    item = store.items("lie_baltic_250m_daily_v1", start="2020-01-01", end="2020-01-01")[0]
    assert "_BALTIC_" in item.name
    with xr.open_dataset(store.materialize(item)) as ds:
        assert 9.0 <= float(ds.lon.min()) and float(ds.lon.max()) <= 31.0
        assert 53.0 <= float(ds.lat.min()) and float(ds.lat.max()) <= 67.0


# --------------------------------------------------------------------------- tiles


def test_europe_tiles_are_uint8_3035_on_the_grid(store: ProductStore) -> None:
    paths = store.tiles(TCD, bbox=(9.0, 45.0, 13.0, 48.0), year=2018)
    assert len(paths) >= 4
    transforms = {}
    valid = nodata = 0
    for path in paths:
        assert GRID_CODE.search(path.name), path.name
        with rasterio.open(path) as src:
            assert src.crs.to_epsg() == 3035
            assert src.dtypes[0] == "uint8" and src.nodata == 255
            t = src.transform
            assert t.a == -t.e == store.grid(TCD).res  # the product's own resolution, whatever the size class
            assert t.c % t.a == 0 and t.f % t.a == 0  # pixel corners on the EEA grid
            code = GRID_CODE.search(path.name).group(0).strip("_")
            left, top = int(code[1:3]) * 100_000, int(code[4:6]) * 100_000 + 100_000
            assert left <= t.c and t.c + t.a * src.width <= left + 100_000  # inside its 100 km tile
            assert top >= t.f and t.f - t.a * src.height >= top - 100_000
            if src.width > 16:  # holds part of the size class's extent (others: 16 x 16 nodata at the corner)
                transforms[code] = (t, src.width)
            data = src.read(1)
            valid += int((data != 255).sum())
            nodata += int((data == 255).sum())
            assert data[data != 255].max(initial=0) <= 100  # tree cover density, percent
    assert valid > nodata > 0  # mostly data, some nodata
    adjacent = 0
    for code, (t, width) in transforms.items():
        east = f"E{int(code[1:3]) + 1:02d}N{code[4:6]}"
        if east in transforms:
            adjacent += 1
            assert transforms[east][0].c == pytest.approx(t.c + t.a * width)
            assert transforms[east][0].f == t.f and transforms[east][0].a == t.a
    assert adjacent >= 1


def test_tiles_without_grid_codes(store: ProductStore) -> None:
    clc = store.tiles("corine-land-cover-2018", bbox=(0.0, 40.0, 20.0, 55.0))
    renamed = store.tiles(TCD, bbox=(9.0, 45.0, 13.0, 48.0), year=2018, grid_codes=False)
    coded = store.tiles(TCD, bbox=(9.0, 45.0, 13.0, 48.0), year=2018)
    for path in clc + renamed:
        assert not re.search(r"E\d\dN\d\d", path.name), path.name
    assert len({p.name for p in renamed}) == len(renamed) == len(coded)
    for a, b in zip(renamed, coded):
        assert _sha(a) == _sha(b)  # same data, other name
    with rasterio.open(clc[0]) as src:
        assert src.crs.to_epsg() == 3035 and src.dtypes[0] == "uint8" and src.nodata == 255
        assert src.transform.c % 1_000_000 == 0


def test_cogs_are_tiled_with_overviews(store: ProductStore) -> None:
    item = _ndvi_item(store, "cog")
    assert item.format == "cog" and item.id.endswith("_cog") and item.product_name.endswith("_cog")
    tile = store.items(TCD, bbox=(9.5, 47.8, 10.8, 48.8), start="2019-01-01", end="2019-12-31")[0]
    assert tile.format == "cog" == store.dataset(TCD).native_format  # migrated EEA layers are COGs
    for path in (store.materialize(item), store.materialize(tile)):
        info = inspect_file(path)
        assert info["layout"] == "COG"
        assert info["blocks"][0] < info["shape"][0]  # tiled
        assert info["overviews"], path.name
    with rasterio.open(store.materialize(item)) as src:
        assert src.crs.to_epsg() == 4326 and src.scales[0] == pytest.approx(0.004)


def test_vector_products_are_geojson(store: ProductStore) -> None:
    item = store.items("clms_ua_land-cover-land-use_europe_V025ha_3yearly_v1")[0]
    doc = json.loads(store.materialize(item).read_text())
    assert doc["type"] == "FeatureCollection" and len(doc["features"]) == store.size_class.features
    assert item.product_name.endswith("_geojson")


def test_global_landcover_tiles(store: ProductStore) -> None:
    paths = store.tiles("global-dynamic-land-cover", bbox=(5.0, 45.0, 15.0, 50.0), year=2019)
    assert [p.name[:7] for p in paths] == ["E000N60"]
    with rasterio.open(paths[0]) as src:
        assert src.crs.to_epsg() == 4326 and src.transform.a == pytest.approx(1 / 1008)  # 100 m
        west, south, east, north = src.bounds
        assert 0.0 <= west < east <= 20.0 and 40.0 <= south < north <= 60.0  # inside its 20 degree tile
        assert round(west * 1008, 6) == round(west * 1008) and round(north * 1008, 6) == round(north * 1008)


# --------------------------------------------------------------------------- determinism and concurrency


def test_same_seed_gives_identical_bytes(store: ProductStore, tmp_path: Path) -> None:
    twin = ProductStore(tmp_path / "twin", seed=0, size="tiny")
    other = ProductStore(tmp_path / "other", seed=1, size="tiny")
    picks = [
        _ndvi_item(store), _ndvi_item(store, "cog"),
        store.items(TCD, bbox=(10.0, 45.0, 11.0, 46.0), limit=1, format="tif")[0],
        store.items(TCD, bbox=(10.0, 45.0, 11.0, 46.0), limit=1)[0],
        store.items("EO:EEA:DAT:N2K", limit=1)[0],
        store.bulk_item(100_000),
    ]
    for item in picks:
        assert _sha(store.materialize(item)) == _sha(twin.materialize(twin.item(item.id))), item.id
    assert _sha(store.product_zip(picks[0])) == _sha(twin.product_zip(picks[0]))
    tiles = store.tiles("forest-type-2015", bbox=(0.0, 40.0, 20.0, 55.0))
    twin_tiles = twin.tiles("forest-type-2015", bbox=(0.0, 40.0, 20.0, 55.0))
    for layout in LAYOUTS:
        assert _sha(store.result_zip(tiles, layout)) == _sha(twin.result_zip(twin_tiles, layout))
    assert _sha(store.materialize(picks[0])) != _sha(other.materialize(picks[0]))


def test_concurrent_materialize_writes_once(tmp_path: Path) -> None:
    fresh = ProductStore(tmp_path, seed=3, size="tiny")
    item = fresh.items(NDVI, start="2021-05-01", end="2021-05-01")[0]
    results: list[Path] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            results.append(fresh.materialize(item))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(results)) == 1
    assert not list(results[0].parent.glob("*.part"))
    with xr.open_dataset(results[0]) as ds:
        r0, r1, c0, c1 = fresh.data_window(NDVI)
        assert ds["NDVI"].shape == (1, r1 - r0, c1 - c0) == (1, 1343, 1343)  # 4 x 4 degrees at 1/336


def _materialize_in_child(args: tuple[str, str]) -> str:
    data_dir, item_id = args
    s = ProductStore(Path(data_dir), seed=5, size="tiny")
    return _sha(s.materialize(s.item(item_id)))


def test_concurrent_processes_agree(tmp_path: Path) -> None:
    fresh = ProductStore(tmp_path, seed=5, size="tiny")
    item = fresh.items(TCD, bbox=(10.0, 45.0, 11.0, 46.0), limit=1)[0]
    with multiprocessing.get_context("fork").Pool(3) as pool:
        digests = pool.map(_materialize_in_child, [(str(tmp_path), item.id)] * 3)
    assert len(set(digests)) == 1 and digests[0] == _sha(fresh.materialize(item))


# --------------------------------------------------------------------------- CLMS download API datasets


def test_clms_api_datasets(store: ProductStore) -> None:
    api = {s.key: s for s in store.clms_api_datasets()}
    fty = api["forest-type-2015"]
    assert re.fullmatch(r"[0-9a-f]{32}", fty.uid)
    assert fty.uid == ProductStore(store.data_dir, seed=9).dataset("forest-type-2015").uid  # stable from the name
    assert fty.crs_list == ("EPSG:3035",) and fty.bbox == (-31.2684, 27.6375, 44.8212, 71.1855)
    assert (fty.start, fty.end) == (dt.date(2014, 1, 1), dt.date(2016, 12, 31))
    files = {f["file"]: f for f in fty.downloadable_files}
    full = files["FTY_2015_100m_eu_03035_d02_Full"]
    assert full["format"] == "Geotiff" and full["path"] and full["source"] == "EEA"
    assert re.fullmatch(r"[0-9a-f-]{36}", full["@id"])
    sources = {i["full_source"] for s in api.values() for i in s.download_information}
    assert sources == {"EEA", "LEGACY", "LANDCOVER", "CDSE"}
    members = store.downloadable_file_members("forest-type-2015", full["@id"])
    # "Full" is the size class's extent: the tiles holding its data, not a continent of 16-pixel placeholders
    assert 1 <= len(members) < len(store.spec_tiles("forest-type-2015"))
    for m in members:
        with rasterio.open(m) as tif:
            assert tif.width > 16 and tif.height > 16
    assert all(m.name.startswith("FTY_2015_100m_eu_03035_d02_E") for m in members)
    one = store.downloadable_file_members(fty.uid, files["FTY_2015_100m_eu_03035_d02_E30N20"]["@id"])
    assert [m.name for m in one] == ["FTY_2015_100m_eu_03035_d02_E30N20.tif"]
    broken = next(f for f in fty.downloadable_files if not f["path"])
    with pytest.raises(ValueError, match="FileID is not valid"):
        store.downloadable_file_members("forest-type-2015", broken["@id"])
    record = store.clms_api_record("forest-type-2015")
    assert record["UID"] == fty.uid and record["geographicBoundingBox"]["items"][0]["west"] == "-31.2684"
    legacy = next(s for s in api.values() if s.source == "LEGACY")
    assert legacy.pattern == "global_nc" and store.items(legacy.key, start="2010-01-01", end="2010-01-31")
    cdse = next(s for s in api.values() if s.source == "CDSE")
    assert store.items(cdse.key, limit=1)[0].dataset == cdse.alias_of


# --------------------------------------------------------------------------- zips


def _inner(zf: zipfile.ZipFile, name: str) -> zipfile.ZipFile:
    return zipfile.ZipFile(io.BytesIO(zf.read(name)))


def test_result_zip_layouts(store: ProductStore) -> None:
    tiles = store.tiles("forest-type-2015", bbox=(0.0, 40.0, 20.0, 55.0))
    names = {t.name for t in tiles}
    with zipfile.ZipFile(store.result_zip(tiles, "results_inner")) as zf:
        (inner_name,) = zf.namelist()
        assert inner_name.startswith("Results/") and inner_name.endswith(".zip")
        inner = _inner(zf, inner_name).namelist()
        assert {Path(n).name for n in inner if n.endswith(".tif")} == names
        assert all("/DATA/" in n for n in inner if n.endswith(".tif"))  # in a sub-folder
        assert any(n.endswith(".xml") for n in inner) and any(n.endswith(".pdf") for n in inner)
    with zipfile.ZipFile(store.result_zip(tiles, "flat")) as zf:
        assert not any(n.startswith("Results/") for n in zf.namelist())
        assert {n for n in zf.namelist() if n.endswith(".tif")} == names
    with zipfile.ZipFile(store.result_zip(tiles, "multi_inner")) as zf:
        inners = [n for n in zf.namelist() if n.endswith(".zip")]
        assert len(inners) >= 2
        got = [Path(n).name for i in inners for n in _inner(zf, i).namelist() if n.endswith(".tif")]
        assert sorted(got) == sorted(names)
    with zipfile.ZipFile(store.result_zip(tiles, "nested3")) as zf:
        level2 = _inner(zf, zf.namelist()[0])
        (level3_name,) = [n for n in level2.namelist() if n.endswith(".zip")]
        level3 = _inner(level2, level3_name)
        assert {Path(n).name for n in level3.namelist()} == names
    with pytest.raises(ValueError):
        store.result_zip(tiles, "sideways")


def test_corrupt_zip_fails_its_crc(store: ProductStore) -> None:
    tiles = store.tiles("forest-type-2015", bbox=(0.0, 40.0, 20.0, 55.0))
    good = store.result_zip(tiles, "results_inner")
    bad = store.result_zip(tiles, "results_inner", corrupt=True)
    assert good.stat().st_size == bad.stat().st_size
    with zipfile.ZipFile(good) as zf:
        good_names = zf.namelist()
        assert zf.testzip() is None
    with zipfile.ZipFile(bad) as zf:
        assert zf.namelist() == good_names  # central directory intact
        assert zf.testzip() == good_names[0]
        with pytest.raises(zipfile.BadZipFile, match="CRC"):
            zf.read(good_names[0])
    flat_bad = store.result_zip(tiles, "flat", corrupt=True)
    with zipfile.ZipFile(flat_bad) as zf:
        assert zf.testzip() is not None


@pytest.mark.parametrize("variant", ["slip", "absolute", "symlink", "bomb", "many"])
def test_hostile_zips(store: ProductStore, variant: str) -> None:
    tiles = store.tiles("forest-type-2015", bbox=(0.0, 40.0, 20.0, 55.0))
    path = store.result_zip(tiles, "results_inner", hostile=variant)
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
        assert infos[0].filename.startswith("Results/")  # the normal payload is still there
        if variant == "slip":
            assert any(i.filename.startswith("../") for i in infos)
        elif variant == "absolute":
            assert any(i.filename.startswith("/") for i in infos)
        elif variant == "symlink":
            link = zf.getinfo(HOSTILE_NAMES["symlink"])
            assert stat.S_ISLNK(link.external_attr >> 16) and zf.read(link) == b"/etc/passwd"
        elif variant == "bomb":
            bomb = zf.getinfo(HOSTILE_NAMES["bomb"])
            assert bomb.file_size >= 2**30 and bomb.compress_size < bomb.file_size // 500
            with zf.open(bomb) as fh:  # a valid deflate stream of zeros
                assert fh.read(1 << 20) == bytes(1 << 20)
            assert path.stat().st_size < 4 << 20
        else:
            assert len(infos) > 10_000


def test_product_zip_holds_the_product_folder(store: ProductStore) -> None:
    item = _ndvi_item(store)
    with zipfile.ZipFile(store.product_zip(item)) as zf:
        names = zf.namelist()
        assert f"{item.product_name}/{item.name}" in names
        assert all(n.startswith(item.product_name + "/") for n in names)
        assert zf.testzip() is None


# --------------------------------------------------------------------------- bulk files


def test_bulk_files_for_benchmarks(store: ProductStore) -> None:
    assert parse_size("1GiB") == 2**30 and parse_size("500MB") == 500 * 10**6 and parse_size(42) == 42
    item = store.bulk_item("3MiB")
    assert store.item(item.id) == item
    path = store.materialize(item)
    assert path.stat().st_size == 3 * 2**20 == item.size_hint
    odd = store.materialize(store.bulk_item(5 * 2**20 + 123))
    assert odd.stat().st_size == 5 * 2**20 + 123
    nc = store.materialize(store.bulk_item("8MiB", kind="nc"))
    assert abs(nc.stat().st_size - 8 * 2**20) < 64 * 1024
    with netCDF4.Dataset(nc) as ds:
        assert ds["value"].dtype == np.int16
    with pytest.raises(ValueError):
        parse_size("lots")


def test_spec_is_hashable_and_frozen(store: ProductStore) -> None:
    spec = store.dataset("forest-type-2015")
    assert isinstance(spec, DatasetSpec) and hash(spec) == hash(store.dataset("forest-type-2015"))
    with pytest.raises(AttributeError):
        spec.key = "x"  # type: ignore[misc]
