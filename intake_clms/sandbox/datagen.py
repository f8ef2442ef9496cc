"""Deterministic, realistic small products for the sandbox (INTERFACE STUB: being implemented).

The sandbox serves these files; the client code meets the same structures the
real services deliver: CF NetCDF time steps for global products, uint8 EPSG:3035
GeoTIFF tiles for pan-European ones, COGs for CDSE, and result zips in the CLMS
API's layout.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset the sandbox knows (a catalog entry, or a CLMS-API dataset)."""

    key: str  # datasetIdentifier, old WEkEO ID, or CLMS-API short name (forest-type-2015)
    dataset_id: str  # WEkEO dataset ID (EO:JRC:DAT:CLMS or the old ID); "" for CLMS-API only
    dataset_identifier: str | None
    old_ids: tuple[str, ...]
    pattern: str  # "global_nc" | "europe_tiles" | "europe_tiles_nogrid" | "cog" | "vector"
    bbox: tuple[float, float, float, float]  # lon/lat
    start: dt.date
    end: dt.date
    frequency: str  # daily | 10daily | monthly | yearly | 3yearly | hourly | static
    product_type: str | None


@dataclass(frozen=True)
class Item:
    """One downloadable product (a time step, or a set of tiles for one date)."""

    id: str  # stable product id, unique across the store
    dataset: str  # DatasetSpec.key
    name: str  # file name as the real service names it, e.g. c_gls_NDVI300_202401010000_GLOBE_OLCI_V2.0.1.nc
    start: dt.datetime
    end: dt.datetime
    bbox: tuple[float, float, float, float]  # lon/lat footprint
    format: str  # "nc" | "zip" | "cog" | "tif"
    size_hint: int  # approximate bytes (what a catalogue would say)


class ProductStore:
    def __init__(self, data_dir: Path, seed: int = 0, size: str = "tiny", catalog: Path | None = None): ...
    def datasets(self) -> list[DatasetSpec]: ...
    def dataset(self, key: str) -> DatasetSpec: ...
    def items(self, key: str, bbox=None, start=None, end=None) -> list[Item]: ...
    def item(self, item_id: str) -> Item: ...
    def materialize(self, item: Item) -> Path: ...
    def tiles(self, key: str, bbox=None, year: int | None = None, grid_codes: bool = True) -> list[Path]: ...
    def result_zip(self, members: list[Path], layout: str = "results_inner", hostile: str | None = None, corrupt: bool = False) -> Path: ...
