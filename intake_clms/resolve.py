"""Map any CLMS dataset ID, old or new, to the catalog entries that serve it.

Reads the catalog YAML directly (no intake, no driver imports), so resolving
is instant even for a catalog of thousands of entries.
"""

from __future__ import annotations

import functools
import os
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .errors import UnknownIdentifierError
from .products import NEW_DATASET_ID


def default_catalog_path() -> Path:
    """The catalog generated from the bundled transition table (``catalogs/clms.yaml``)."""
    return Path(str(resources.files("intake_clms.catalogs") / "clms.yaml"))


def _norm(text: str) -> str:
    return "".join(str(text).split()).lower()


@functools.lru_cache(maxsize=8)
def _load(path: str, mtime: float) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh) or {}


def load_sources(catalog: str | os.PathLike[str] | None = None) -> dict[str, dict[str, Any]]:
    """The ``sources`` mapping of a catalog YAML file (cached until the file changes)."""
    path = Path(catalog) if catalog else default_catalog_path()
    return dict(_load(str(path), path.stat().st_mtime).get("sources") or {})


def build_index(sources: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """normalised ID -> sorted entry names, over entry names, identifiers, dataset IDs and old IDs."""
    index: dict[str, set[str]] = {}
    for name, spec in sources.items():
        md = spec.get("metadata") or {}
        keys = {name, md.get("identifier"), md.get("dataset_identifier"), *(md.get("old_ids") or [])}
        if md.get("dataset_id") != NEW_DATASET_ID:
            keys.add(md.get("dataset_id"))
        for key in filter(None, keys):
            index.setdefault(_norm(key), set()).add(name)
    return {k: sorted(v) for k, v in index.items()}


def resolve(identifier: str, catalog: str | os.PathLike[str] | None = None) -> list[str]:
    """Entry names serving ``identifier`` (an old WEkEO ID, a datasetIdentifier or an entry name).

    >>> resolve("EO:CLMS:DAT:CLMS_GLOBAL_NDVI_300M_V1_10DAILY_NETCDF")
    ['ndvi_global_300m_10daily_v1']
    """
    key = _norm(identifier)
    if key == _norm(NEW_DATASET_ID):
        raise UnknownIdentifierError(
            f"{NEW_DATASET_ID} is shared by every migrated product; give its datasetIdentifier instead "
            "(e.g. ndvi_global_300m_10daily_v1)"
        )
    names = build_index(load_sources(catalog)).get(key)
    if not names:
        raise UnknownIdentifierError(
            f"{identifier.strip()!r} is not in the catalog: expected an old WEkEO dataset ID "
            "(EO:...:DAT:...), a datasetIdentifier or an entry name; try `intake-clms list --search`"
        )
    return names
