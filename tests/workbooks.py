"""Paths to the bundled table and catalog, and a builder for (messy) transition-table workbooks."""

from __future__ import annotations

from pathlib import Path

import openpyxl

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "catalogs" / "clms_transition_table.xlsx"
CATALOG = ROOT / "catalogs" / "clms.yaml"
SHARED_TABLE = ROOT.parent / "shared" / "data" / "clms_transition_table.xlsx"

CURRENT_HEADERS = [
    "Old Dataset ID", "Old productType", "New Dataset ID", "Dataset", "Product Type", "Time Coverage",
    "Spatial Coverage", "Resolution", "Frequency", "Old source still active", "Notes",
]
NEW_HEADERS = [
    "Dataset", "Product Type", "Time Coverage", "Spatial Coverage", "Resolution", "Frequency",
    "Old Dataset ID", "Old source still active",
]
CURRENT_ROWS = [
    ["EO:CLMS:DAT:CLMS_GLOBAL_NDVI_300M_V1_10DAILY_NETCDF", "NDVI300", "EO:JRC:DAT:CLMS", "ndvi_global_300m_10daily_v1",
     "vegetation_indices", "2014\u20132020", "Global", "300 m", "10-daily", "No", None],
    ["EO:EEA:DAT:HRL:GRA", "Grassland", "EO:JRC:DAT:CLMS", "clms_vlcc_grassland_europe_10m_yearly_v1",
     "grassland_and_herbaceous", "2017\u2013present", "Europe", "10 m", "Yearly", "Yes", "inferred"],
    ["EO:EEA:DAT:HRL:GRA", "Grassland", "EO:JRC:DAT:CLMS", "clms_vlcc_grassland_europe_100m_yearly_v1",
     "grassland_and_herbaceous", "2017\u2013present", "Europe", "100 m", "Yearly", "Yes", "inferred"],
    ["EO:EEA:DAT:CORINE", None, None, None, None, None, None, None, None, "Yes", "not migrated yet"],
]
NEW_ROWS = [
    ["ndvi_global_300m_10daily_v1", "vegetation_indices", "2014\u20132020", "Global", "300 m", "10-daily",
     "EO:CLMS:DAT:CLMS_GLOBAL_NDVI_300M_V1_10DAILY_NETCDF", "No"],
    ["clms_vlcc_grassland_europe_10m_yearly_v1", "grassland_and_herbaceous", "2017\u2013present", "Europe", "10 m",
     "Yearly", "EO:EEA:DAT:HRL:GRA", "Yes"],
    ["clms_vlcc_grassland_europe_100m_yearly_v1", "grassland_and_herbaceous", "2017\u2013present", "Europe", "100 m",
     "Yearly", "EO:EEA:DAT:HRL:GRA", "Yes"],
    ["lc_global_100m_yearly_v3", "dynamic_land_cover", "2015\u20132019", "Global", "100 m", "Yearly", None, "N/A"],
]


def write_workbook(path: Path, sheets: dict[str, list[list[object]]], merges: dict[str, list[str]] | None = None) -> Path:
    """Write a workbook: sheet name -> rows (the first sheet given comes first)."""
    wb = openpyxl.Workbook()
    wb.remove(wb.active)
    for name, rows in sheets.items():
        ws = wb.create_sheet(name)
        for row in rows:
            ws.append(row)
        for rng in (merges or {}).get(name, []):
            ws.merge_cells(rng)
    wb.save(path)
    return path
