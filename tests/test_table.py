"""The transition-table reader: the bundled table, messy hand-edited variants, missing columns."""

from __future__ import annotations

import datetime as dt

import pytest
from workbooks import CURRENT_HEADERS, NEW_HEADERS, SHARED_TABLE, TABLE, write_workbook

from intake_clms.errors import ColumnNotFoundError, TableError
from intake_clms.catalog.products import MIGRATED, NEW, NOT_MIGRATED, TRANSITION, parse_time_coverage
from intake_clms.catalog.table import match_header, parse_bool, read_transition_table, split_ids


def by_key(products):
    return {p.key: p for p in products}


def test_bundled_table_products():
    products = by_key(read_transition_table(TABLE))
    ndvi = products["ndvi_global_300m_10daily_v1"]
    assert ndvi.old_ids == ("EO:CLMS:DAT:CLMS_GLOBAL_NDVI_300M_V1_10DAILY_NETCDF",)
    assert ndvi.dataset_id == "EO:JRC:DAT:CLMS"
    assert ndvi.migration_status == MIGRATED and ndvi.old_source_active is False
    assert (ndvi.resolution, ndvi.frequency, ndvi.spatial_coverage) == ("300 m", "10-daily", "Global")
    assert ndvi.time_coverage.start == dt.date(2014, 1, 1) and ndvi.time_coverage.end == dt.date(2020, 12, 31)
    assert ndvi.old_product_types == ("NDVI300",)
    # One old ID replaced by several identifiers, old source still active.
    gra = [p for p in products.values() if "EO:EEA:DAT:HRL:GRA" in p.old_ids]
    assert len(gra) == 6 and all(p.migration_status == TRANSITION for p in gra)
    # Not migrated: keyed and queried by the old ID.
    corine = products["EO:EEA:DAT:CORINE"]
    assert corine.migration_status == NOT_MIGRATED and corine.dataset_id == "EO:EEA:DAT:CORINE"
    assert corine.dataset_identifier is None
    # Only on the New sheet, no old ID.
    assert products["lc_global_100m_yearly_v3"].migration_status == NEW
    # An old ID listed only on the New sheet still maps.
    assert products["lst_global_5km_hourly_v1"].old_ids == ("EO:CLMS:DAT:CLMS_GLOBAL_LST_5KM_V1_HOURLY_NETCDF",)
    # Every identifier of the New sheet and every unmigrated old ID of Current is there exactly once.
    assert len(products) == 151
    assert sum(p.migration_status == NOT_MIGRATED for p in products.values()) == 23


def test_bundled_copy_matches_shared_table():
    if not SHARED_TABLE.is_file():
        pytest.skip("../shared is not beside this checkout; the bundled copy is what the other tests use")
    assert TABLE.read_bytes() == SHARED_TABLE.read_bytes()
    assert read_transition_table(SHARED_TABLE) == read_transition_table(TABLE)


def test_clean_small_table(tmp_path, clean_sheets):
    products = by_key(read_transition_table(write_workbook(tmp_path / "t.xlsx", clean_sheets)))
    assert sorted(products) == [
        "EO:EEA:DAT:CORINE", "clms_vlcc_grassland_europe_100m_yearly_v1",
        "clms_vlcc_grassland_europe_10m_yearly_v1", "lc_global_100m_yearly_v3", "ndvi_global_300m_10daily_v1",
    ]


def test_messy_table(tmp_path):
    """Everything a hand edit does at once; the result must equal the clean table's."""
    current_headers = [
        "OLD dataset-ID ", "Old product type", "New dataset id", "Dataset identifier", "Product  type",
        "Temporal coverage", "Geographic coverage", "Spatial resolution", "Temporal resolution",
        "Old source still active?", "Comments",
    ]
    new_headers = [
        "datasetIdentifier", "Product Type", "Temporal Coverage (years)", "spatial_coverage", "Resolution",
        "Frequency", "Old Dataset IDs", "Old source active",
    ]
    sheets = {
        "README": [["This workbook lists ..."], ["Dataset", "is a column"]],
        "NEW ": [
            ["CLMS products available from CDSE"], [None], ["Updated monthly"], [], new_headers,
            ["  ndvi_global_300m_10daily_v1 ", "vegetation_indices", "2014 - 2020", "Global", "300 m", "10-daily",
             "EO:CLMS:DAT:CLMS_GLOBAL_NDVI_300M_V1_10DAILY_NETCDF", False],
            ["ndvi_global_300m_10daily_v1", "vegetation_indices", "2014 - 2020", "Global", "300 m", "10-daily",
             "EO:CLMS:DAT:CLMS_GLOBAL_NDVI_300M_V1_10DAILY_NETCDF", False],  # duplicated row
            ["clms_vlcc_grassland_europe_10m_yearly_v1", "grassland_and_herbaceous", "2017\u2013present", "Europe",
             "10 m", "Yearly", "EO:EEA:DAT:HRL:GRA\nEO:EEA:DAT:HRL:GRA ", True],
            ["clms_vlcc_grassland_europe_100m_yearly_v1", "grassland_and_herbaceous", "2017 to present", "Europe",
             "100 m", "Yearly", " EO:EEA:DAT:HRL:GRA", "yes"],
            ["lc_global_100m_yearly_v3", "dynamic_land_cover", "2015\u20132019", "Global", "100 m", "Yearly", None,
             "N/A"],
            [],
            ["* Old IDs inferred from product families; see Notes.", None, None],
        ],
        "current": [
            ["CLMS products on WEkEO"], [], current_headers,
            ["EO:CLMS:DAT:CLMS_GLOBAL_NDVI_300M_V1_10DAILY_NETCDF ", "NDVI300", "EO:JRC:DAT:CLMS",
             "ndvi_global_300m_10daily_v1", "vegetation_indices", "2014\u20132020", "Global", "300 m", "10-daily",
             "NO", None],
            ["EO:EEA:DAT:HRL:GRA", "Grassland", "EO:JRC:DAT:CLMS",
             "clms_vlcc_grassland_europe_10m_yearly_v1\nclms_vlcc_grassland_europe_100m_yearly_v1",
             "grassland_and_herbaceous", "2017\u2013present", "Europe", "10 m", "Yearly", "Yes", "inferred"],
            ["EO:EEA:DAT:CORINE", None, None, None, None, None, None, None, None, True, "not migrated yet"],
            ["EO:EEA:DAT:CORINE", None, None, None, None, None, None, None, None, True, "not migrated yet"],
            ["Notes: rows in italics are provisional."],
        ],
    }
    messy = by_key(read_transition_table(write_workbook(tmp_path / "messy.xlsx", sheets)))
    assert sorted(messy) == [
        "EO:EEA:DAT:CORINE", "clms_vlcc_grassland_europe_100m_yearly_v1",
        "clms_vlcc_grassland_europe_10m_yearly_v1", "lc_global_100m_yearly_v3", "ndvi_global_300m_10daily_v1",
    ]
    ndvi = messy["ndvi_global_300m_10daily_v1"]
    assert ndvi.old_ids == ("EO:CLMS:DAT:CLMS_GLOBAL_NDVI_300M_V1_10DAILY_NETCDF",)
    assert ndvi.old_source_active is False and ndvi.migration_status == MIGRATED
    assert ndvi.time_coverage.start == dt.date(2014, 1, 1) and ndvi.time_coverage.end == dt.date(2020, 12, 31)
    g100 = messy["clms_vlcc_grassland_europe_100m_yearly_v1"]
    assert g100.old_ids == ("EO:EEA:DAT:HRL:GRA",) and g100.old_source_active is True
    assert g100.time_coverage.ongoing and g100.resolution == "100 m"
    assert messy["EO:EEA:DAT:CORINE"].old_source_active is True


def test_merged_cells_fill_the_range(tmp_path):
    """An old ID merged vertically over the rows of its several new identifiers."""
    rows = [
        ["Title"], [], CURRENT_HEADERS,
        ["EO:EEA:DAT:HRL:TCF", "TCD", "EO:JRC:DAT:CLMS", "clms_vlcc_tree-cover-density_europe_10m_yearly_v1",
         "tree_cover_density", "2018\u2013present", "Europe", "10 m", "Yearly", "Yes", None],
        [None, "TCD", "EO:JRC:DAT:CLMS", "clms_vlcc_tree-cover-density_europe_100m_yearly_v1",
         "tree_cover_density", "2018\u2013present", "Europe", "100 m", "Yearly", None, None],
    ]
    sheets = {"Current": rows, "New": [NEW_HEADERS]}
    products = read_transition_table(write_workbook(tmp_path / "m.xlsx", sheets, {"Current": ["A4:A5", "J4:J5"]}))
    assert {p.key: p.old_ids for p in products} == {
        "clms_vlcc_tree-cover-density_europe_100m_yearly_v1": ("EO:EEA:DAT:HRL:TCF",),
        "clms_vlcc_tree-cover-density_europe_10m_yearly_v1": ("EO:EEA:DAT:HRL:TCF",),
    }
    assert all(p.old_source_active is True for p in products)


def test_missing_essential_column_names_sheet_column_and_headers(tmp_path, clean_sheets):
    clean_sheets["New"][2] = ["Product name", *NEW_HEADERS[1:]]
    path = write_workbook(tmp_path / "bad.xlsx", clean_sheets)
    with pytest.raises(ColumnNotFoundError) as info:
        read_transition_table(path)
    message = str(info.value)
    assert "'New'" in message and "dataset_identifier" in message and "'Product name'" in message
    assert info.value.sheet == "New" and "Time Coverage" in info.value.found


def test_missing_old_id_column_on_current(tmp_path, clean_sheets):
    clean_sheets["Current"][2] = ["Legacy thing", *CURRENT_HEADERS[1:]]
    with pytest.raises(ColumnNotFoundError, match="'Current'.*old_dataset_id"):
        read_transition_table(write_workbook(tmp_path / "bad.xlsx", clean_sheets))


def test_explicit_column_mapping(tmp_path, clean_sheets):
    clean_sheets["New"][2] = ["Product name", *NEW_HEADERS[1:]]
    clean_sheets["Current"][2] = ["Legacy thing", *CURRENT_HEADERS[1:]]
    path = write_workbook(tmp_path / "renamed.xlsx", clean_sheets)
    products = read_transition_table(path, columns="New:dataset_identifier=Product name,old_dataset_id=Legacy thing")
    assert "ndvi_global_300m_10daily_v1" in by_key(products)
    assert by_key(products)["EO:EEA:DAT:CORINE"].migration_status == NOT_MIGRATED
    with pytest.raises(TableError, match="unknown field 'datset'"):
        read_transition_table(path, columns="datset=Product name")
    with pytest.raises(ColumnNotFoundError, match="no header .Nope. for column .dataset_identifier."):
        read_transition_table(path, columns="New:dataset_identifier=Nope,old_dataset_id=Legacy thing")


def test_missing_sheet(tmp_path, clean_sheets):
    del clean_sheets["New"]
    with pytest.raises(TableError, match="no sheet for 'New'; sheets found: 'Current'"):
        read_transition_table(write_workbook(tmp_path / "one.xlsx", clean_sheets))


def test_not_a_workbook(tmp_path):
    bad = tmp_path / "table.xlsx"
    bad.write_text("not a workbook")
    with pytest.raises(TableError, match="cannot read"):
        read_transition_table(bad)
    with pytest.raises(TableError, match="not found"):
        read_transition_table(tmp_path / "absent.xlsx")


@pytest.mark.parametrize(
    "header, field",
    [("Dataset", "dataset_identifier"), ("DatasetIdentifier", "dataset_identifier"),
     ("Temporal coverage", "time_coverage"), ("TIME_COVERAGE", "time_coverage"),
     ("Old source still active?", "old_source_active"), ("Old Dataset ID(s)", "old_dataset_id"),
     ("Spatial  Coverage", "spatial_coverage"), ("Nonsense", None)],
)
def test_header_matching(header, field):
    assert match_header(header) == field


def test_cell_helpers():
    assert [parse_bool(v) for v in ("Yes", "no", True, False, "N/A", None, 1, "TRUE")] == [
        True, False, True, False, None, None, True, True]
    assert split_ids(" A:1\nB:2 ,A:1; C:3 ") == ["A:1", "B:2", "C:3"]
    tc = parse_time_coverage("2014\u2013present")
    assert tc.start == dt.date(2014, 1, 1) and tc.end is None and tc.ongoing
    assert parse_time_coverage("2018").end == dt.date(2018, 12, 31)
    assert parse_time_coverage("2014-01-01 to 2016-06").end == dt.date(2016, 6, 30)
    assert parse_time_coverage("2002-2012").start == dt.date(2002, 1, 1)
    assert parse_time_coverage(None).start is None
