"""The search keys an old (not migrated) WEkEO dataset ID expects, beyond bbox and paging.

The new ID (``EO:JRC:DAT:CLMS``) takes ``datasetIdentifier`` and ``startdate``/``enddate``.
An old ID takes its own keys, and the live broker answers a search without them with every
product of the dataset, whatever its type (notebook runs against the live broker, see
``wekeo-hda.md``):

- ``productType``: the old product type, from the catalog's ``old_product_types`` (the
  transition table's "Old productType" column) of the entry that serves the old ID;
- ``format``: CORINE (``EO:EEA:DAT:CORINE``) is offered as GeoTIFF 100 m, GeoPackage and
  ESRI file geodatabase: a raster read asks for ``GeoTiff100mt``;
- date key names: the HR-S&I datasets (``EO:CRYO:DAT:HRSI...``) take ``startdate``/``enddate``;
  the other old CLMS datasets ``start``/``end``.

The metadata comes from the bundled catalog YAML (``catalogs/clms.yaml``) through
:func:`intake_clms.catalog.resolve.load_sources` (read once, cached), so a request built by
hand with an old ID gets the same keys as one opened from the catalog.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

#: Old IDs whose search must name a delivery format, and the one a raster read asks for.
FORMATS = {"EO:EEA:DAT:CORINE": "GeoTiff100mt"}

#: Old ID prefixes whose dates are ``startdate``/``enddate`` (HR-S&I, as hda and eodag send them).
STARTDATE_PREFIXES = ("EO:CRYO:DAT:HRSI",)


def date_keys(dataset_id: str) -> tuple[str, str]:
    """The names of the first and last date of a search on ``dataset_id`` (an old ID)."""
    return ("startdate", "enddate") if dataset_id.startswith(STARTDATE_PREFIXES) else ("start", "end")


def old_product_types(dataset_id: str, sources: dict[str, dict[str, Any]] | None = None) -> list[str]:
    """The old product types the catalog gives an old ID: those of the entries served by it
    (``metadata.dataset_id``), else those of the entries that name it among their ``old_ids``."""
    if sources is None:
        from ...catalog.resolve import load_sources

        try:
            sources = load_sources()
        except (OSError, ValueError):  # no readable catalog: a search without productType
            return []
    own: list[str] = []
    named: list[str] = []
    for entry in sources.values():
        md = (entry or {}).get("metadata") or {}
        types = [str(t) for t in md.get("old_product_types") or () if t]
        if md.get("dataset_id") == dataset_id:
            own += [t for t in types if t not in own]
        elif dataset_id in (md.get("old_ids") or ()):
            named += [t for t in types if t not in named]
    return own or named


def old_id_keys(dataset_id: str, sources: dict[str, dict[str, Any]] | None = None) -> dict[str, str]:
    """The fixed keys a search on an old ID carries: ``productType`` (when the catalog knows exactly one)
    and ``format`` (where the dataset needs one)."""
    keys: dict[str, str] = {}
    types = old_product_types(dataset_id, sources)
    if len(types) == 1:
        keys["productType"] = types[0]
    elif types:
        log.debug("%s: several old product types %s; searching without productType", dataset_id, types)
    if dataset_id in FORMATS:
        keys["format"] = FORMATS[dataset_id]
    return keys
