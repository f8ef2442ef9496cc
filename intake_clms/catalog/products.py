"""What one CLMS product is: the record the table reader produces and the catalog writer consumes.

Everything here is pure data and small parsing helpers, so the reader, the
writer, the resolver and the source agree on one vocabulary.
"""

from __future__ import annotations

import datetime as dt
import keyword
import re
from dataclasses import dataclass, field

#: The one WEkEO dataset ID that serves every migrated CLMS product.
NEW_DATASET_ID = "EO:JRC:DAT:CLMS"

#: Migration states, from the point of view of someone who wants the data today.
MIGRATED = "migrated"  # new identifier; the old source no longer answers
TRANSITION = "transition"  # new identifier; the old source still answers too
NEW = "new"  # only exists under the new identifier
NOT_MIGRATED = "not_migrated"  # only the old ID works
MIGRATION_STATUSES = (MIGRATED, TRANSITION, NEW, NOT_MIGRATED)

#: Default extents ([west, south, east, north], degrees) for the coverage words the table uses.
COVERAGE_BBOX: dict[str, list[float]] = {
    "global": [-180.0, -90.0, 180.0, 90.0],
    "europe": [-31.3, 27.6, 44.9, 71.2],  # the EEA38 extent the CLMS API declares
    "northern hemisphere": [-180.0, 0.0, 180.0, 90.0],
    "pan-tropical": [-180.0, -30.0, 180.0, 30.0],
    "baltic": [9.0, 53.0, 31.0, 66.5],
}

_OLD_ID = re.compile(r"^EO:[A-Z0-9_-]+:DAT:[A-Za-z0-9_.:+-]+$")
_NEW_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


def is_old_id(text: str) -> bool:
    """True for a WEkEO dataset ID such as ``EO:EEA:DAT:HRL:GRA``."""
    return bool(_OLD_ID.match(text))


def is_new_identifier(text: str) -> bool:
    """True for a CDSE ``datasetIdentifier`` such as ``ndvi_global_300m_10daily_v1``."""
    return bool(_NEW_ID.match(text)) and ":" not in text


def entry_name(identifier: str) -> str:
    """A valid, stable Python identifier for a dataset identifier or old ID.

    ``lst-tci_global_5km_10daily_v1`` -> ``lst_tci_global_5km_10daily_v1``;
    ``EO:EEA:DAT:HRL:IMP`` -> ``eo_eea_dat_hrl_imp``.
    """
    name = re.sub(r"[^0-9a-zA-Z]+", "_", identifier.strip()).strip("_").lower()
    if not name:
        raise ValueError(f"cannot derive an entry name from {identifier!r}")
    if name[0].isdigit() or keyword.iskeyword(name):
        name = "ds_" + name
    return name


@dataclass(frozen=True)
class TimeCoverage:
    """A product's time coverage as the table states it ("2014–present", "2018", ...)."""

    text: str | None
    start: dt.date | None
    end: dt.date | None  # None with ``ongoing`` True means "present"
    ongoing: bool = False

    def describe(self) -> str:
        if self.start is None:
            return "unknown time coverage"
        end = "present" if self.ongoing else (self.end.isoformat() if self.end else "?")
        return f"{self.start.isoformat()} to {end}"


_DATE_PART = re.compile(r"^(\d{4})(?:-(\d{1,2})(?:-(\d{1,2}))?)?$")


def _parse_bound(text: str, *, upper: bool) -> dt.date | None:
    m = _DATE_PART.match(text.strip())
    if not m:
        return None
    year, month, day = int(m.group(1)), m.group(2), m.group(3)
    if month is None:
        return dt.date(year, 12, 31) if upper else dt.date(year, 1, 1)
    month = int(month)
    if day is None:
        if not upper:
            return dt.date(year, month, 1)
        nxt = dt.date(year + month // 12, month % 12 + 1, 1)
        return nxt - dt.timedelta(days=1)
    return dt.date(year, month, int(day))


def parse_time_coverage(text: object) -> TimeCoverage:
    """Parse "2014–present", "2014 - 2020", "2018", "2014-01-01 to 2016-12-31" (unknown -> empty)."""
    if text is None or (isinstance(text, float) and text != text):
        return TimeCoverage(None, None, None)
    if isinstance(text, (int, float)):
        text = str(int(text))
    if isinstance(text, (dt.date, dt.datetime)):
        day = text if isinstance(text, dt.date) and not isinstance(text, dt.datetime) else text.date()
        return TimeCoverage(day.isoformat(), day, day)
    raw = str(text).strip()
    if not raw:
        return TimeCoverage(None, None, None)
    # Split on en/em dashes, " - ", "to", "/", or a dash between two years.
    parts = re.split(r"\s*(?:[\u2013\u2014/]|\s-\s|\bto\b|\buntil\b)\s*", raw, maxsplit=1)
    if len(parts) == 1:
        m = re.match(r"^(\d{4})-(\d{4}|present|now|ongoing)$", raw, re.IGNORECASE)
        if m:
            parts = [m.group(1), m.group(2)]
    start = _parse_bound(parts[0], upper=False)
    if len(parts) == 1:
        return TimeCoverage(raw, start, _parse_bound(parts[0], upper=True))
    tail = parts[1].strip().lower()
    if tail in ("present", "now", "ongoing", "today", ""):
        return TimeCoverage(raw, start, None, ongoing=start is not None)
    return TimeCoverage(raw, start, _parse_bound(tail, upper=True))


def coverage_bbox(spatial_coverage: str | None) -> list[float]:
    """Default bbox for a coverage word; global when the word is unknown."""
    key = (spatial_coverage or "").strip().lower().replace("pantropical", "pan-tropical")
    return list(COVERAGE_BBOX.get(key, COVERAGE_BBOX["global"]))



#: Old WEkEO IDs of vector products (EU-Hydro, Natura 2000, riparian and coastal zones, Urban Atlas,
#: river and lake ice extent): their transition-table rows give no resolution saying "vector".
VECTOR_OLD_IDS = ("EU-HYDRO", "N2K", "RIPARIANZONES", "COASTALZONES", "URBAN-ATLAS", "HRSI_ARLIE")

@dataclass(frozen=True)
class Product:
    """One catalog entry's worth of facts, merged from the table's sheets."""

    key: str  # the datasetIdentifier, or the old ID for a product not migrated yet
    dataset_id: str  # what a WEkEO query names: EO:JRC:DAT:CLMS or the old ID
    dataset_identifier: str | None = None
    old_ids: tuple[str, ...] = ()
    old_product_types: tuple[str, ...] = ()
    product_type: str | None = None
    time_coverage: TimeCoverage = field(default_factory=lambda: TimeCoverage(None, None, None))
    spatial_coverage: str | None = None
    resolution: str | None = None
    frequency: str | None = None
    old_source_active: bool | None = None
    notes: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return entry_name(self.key)

    @property
    def migration_status(self) -> str:
        if self.dataset_identifier is None:
            return NOT_MIGRATED
        if not self.old_ids:
            return NEW
        return TRANSITION if self.old_source_active else MIGRATED

    @property
    def is_vector(self) -> bool:
        if "vector" in (self.resolution or "").lower():
            return True
        # old-ID products whose table rows give no resolution: known vector families by name
        return self.dataset_identifier is None and any(v.lower() in self.dataset_id.lower() for v in VECTOR_OLD_IDS)
