"""Map any CLMS dataset ID, old or new, to the catalog entries that serve it.

Reads the catalog YAML directly (no intake, no driver imports), so resolving
is instant even for a catalog of thousands of entries.
"""

from __future__ import annotations

import functools
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..errors import UnknownIdentifierError
from .products import NEW_DATASET_ID


def default_catalog_path() -> Path:
    """The catalog generated from the bundled transition table (``catalogs/clms.yaml``)."""
    return Path(str(resources.files("intake_clms.catalogs") / "clms.yaml"))


def _norm(text: str) -> str:
    return "".join(str(text).split()).lower()


@functools.lru_cache(maxsize=8)
def _load(path: str, mtime: float) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:  # libyaml's loader where built: the catalog is thousands of lines
        return yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}


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


def sources_with_api(catalog: str | os.PathLike[str] | None = None,
                     listing: str | os.PathLike[str] | None = None) -> tuple[dict[str, dict[str, Any]], str]:
    """The catalog's entries, plus the nested CLMS download API catalog's as ``clms_download_api.NAME``.

    Never touches the network: the API's datasets come from ``listing`` (a saved
    listing file) or the listing the nested catalog cached on disk when it was last
    opened (whatever its age).  Without either, the second value is a note saying how to get one.
    """
    sources = load_sources(catalog)
    nested = [n for n, spec in sources.items() if spec.get("driver") == "clms_api"]
    if not nested and not listing:
        return sources, ""
    from ..services.clms_api import listing as clms_listing
    from .generate import API_CATALOG_NAME
    from .clms_api import api_entries
    from ..config import endpoints

    path = Path(listing) if listing else clms_listing.listing_cache_path(endpoints().clms_api)
    if not path.is_file():
        if listing:
            raise FileNotFoundError(2, "No such file or directory", str(path))
        return sources, (f"the CLMS download API's datasets were not searched: no saved listing "
                         f"(open cat.{nested[0]} once, or give --listing FILE)")
    prefix = nested[0] if nested else API_CATALOG_NAME
    for name, spec in api_entries(clms_listing.load_listing_file(path)).items():
        sources[f"{prefix}.{name}"] = spec
    return sources, ""


def _words(text: str) -> set[str]:
    return {w for w in re.split(r"[^0-9a-z]+", str(text).lower()) if w}


def _by_words(identifier: str, sources: dict[str, dict[str, Any]]) -> list[str]:
    """Entries whose name (or identifier) holds every word of ``identifier`` (``corine``, ``corine land cover 2018``)."""
    wanted = _words(identifier)
    if not wanted:
        return []
    return sorted(name for name, spec in sources.items()
                  if wanted <= _words(name) | _words((spec.get("metadata") or {}).get("identifier") or ""))


def resolve(identifier: str, catalog: str | os.PathLike[str] | None = None,
            listing: str | os.PathLike[str] | None = None) -> list[str]:
    """Entry names serving ``identifier``: an old WEkEO ID, a datasetIdentifier, an entry name as
    ``intake-clms list`` prints it (``clms_download_api.corine_land_cover_2018`` too), or the words of a
    dataset's name (``corine``, ``corine_land_cover_2018``: every entry whose name holds them all).

    The CLMS download API's datasets come from the listing the nested catalog saved when it was last
    opened, or ``listing`` (a saved listing file); never from the network.

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
    if names:
        return names
    sources, note = sources_with_api(catalog, listing)
    names = build_index(sources).get(key) or _by_words(identifier, sources)
    if not names:
        raise UnknownIdentifierError(
            f"{identifier.strip()!r} is not in the catalog: expected an old WEkEO dataset ID "
            "(EO:...:DAT:...), a datasetIdentifier, an entry name or words of one; try `intake-clms list --search`"
            + (f"; {note}" if note else "")
        )
    return names
