"""Write :class:`Product` records as an intake V1 YAML catalog.

The YAML is written by hand (``yaml.safe_dump``), not with ``Catalog.save()``,
which does not round-trip in intake 2.  The output is deterministic: entries
sorted by name, keys in a fixed order, no timestamps, so a regenerated catalog
diffs cleanly against the committed one.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable
from os import PathLike
from pathlib import Path
from typing import Any

import yaml

from ..params import SERVICES
from ..plots import plots_for
from .lookup import DRIVER_KEY, PLUGINS, ClmsCatalog
from .products import NOT_MIGRATED, Product, coverage_bbox

DRIVER = "clms"
#: Vector products (``is_vector``) read into a GeoDataFrame (:mod:`intake_clms.vector_source`).
VECTOR_DRIVER = "clms_vector"

#: The nested catalog of CLMS download API datasets (driver ``clms_api``), listed when opened.
API_CATALOG_NAME = "clms_download_api"


def _unique_names(products: Iterable[Product]) -> dict[str, Product]:
    """Entry name -> product; on a clash the later key (in sorted order) gets a short hash suffix."""
    out: dict[str, Product] = {}
    for product in sorted(products, key=lambda p: p.key):
        name = product.name
        if name in out:
            name = f"{name}_{hashlib.sha1(product.key.encode()).hexdigest()[:6]}"
        out[name] = product
    return out


def describe(product: Product) -> str:
    """One readable paragraph: what, where, how fine, how often, when, and how it is served."""
    what = (product.product_type or "CLMS product").replace("_", " ")
    parts = [
        f"{what} ({product.dataset_identifier or product.key})",
        f"coverage: {product.spatial_coverage or 'unknown'}",
        f"resolution: {product.resolution or 'unknown'}",
        f"frequency: {product.frequency or 'unknown'}",
        f"time: {product.time_coverage.describe()}",
    ]
    text = "; ".join(parts) + "."
    if product.migration_status == NOT_MIGRATED:
        text += " Not migrated yet: served by its old WEkEO ID."
    elif product.old_ids:
        state = "still active" if product.old_source_active else "no longer active"
        text += f" Replaces {', '.join(product.old_ids)} (old source {state})."
    return text


def parameters(product: Product) -> dict[str, dict[str, Any]]:
    """The user parameters of an entry, with defaults drawn from the product's coverage."""
    tc = product.time_coverage
    start = tc.start.isoformat() if tc.start else ""
    end = "present" if tc.ongoing else (tc.end.isoformat() if tc.end else "")
    # Validation is the driver's (intake_clms.params), not intake's: intake turns a bad value into a
    # plain ValueError (``allowed``) or splits a string into characters (``type: list``), so ``bbox``
    # is typed ``str`` (a list is rendered as its text and read back) and ``service`` lists its
    # choices in the description; the driver's ParameterError names the field and the valid values.
    return {
        "bbox": {
            "description": "Area of interest [west, south, east, north] in degrees (EPSG:4326), "
            "as a list or a string such as '5,45,10,50'.",
            "type": "str",
            "default": coverage_bbox(product.spatial_coverage),
        },
        "start": {
            "description": "First day wanted, ISO date (YYYY-MM-DD); empty for no lower bound.",
            "type": "str",
            "default": start,
        },
        "end": {
            "description": "Last day wanted, ISO date (YYYY-MM-DD) or 'present'; empty for no upper bound.",
            "type": "str",
            "default": end,
        },
        "service": {
            "description": "Where to fetch from: auto (by migration status and the credentials at hand), "
            f"{', '.join(SERVICES[1:-1])} or {SERVICES[-1]}.",
            "type": "str",
            "default": "auto",
        },
    }


def metadata(product: Product) -> dict[str, Any]:
    tc = product.time_coverage
    md: dict[str, Any] = {
        "identifier": product.key,
        "dataset_id": product.dataset_id,
        "dataset_identifier": product.dataset_identifier,
        "old_ids": list(product.old_ids),
        "old_product_types": list(product.old_product_types),
        "product_type": product.product_type,
        "spatial_coverage": product.spatial_coverage,
        "coverage_bbox": coverage_bbox(product.spatial_coverage),
        "resolution": product.resolution,
        "frequency": product.frequency,
        "time_coverage": tc.text,
        "time_start": tc.start.isoformat() if tc.start else None,
        "time_end": tc.end.isoformat() if tc.end else None,
        "time_ongoing": tc.ongoing,
        "old_source_active": product.old_source_active,
        "migration_status": product.migration_status,
        "is_vector": product.is_vector,
        "notes": list(product.notes),
    }
    # The quicklook intake's GUI draws (one line per entry in the YAML: see _FlowMap).
    md["plots"] = {name: _FlowMap(spec) for name, spec in plots_for(md).items()}
    return md


def entry(product: Product) -> dict[str, Any]:
    return {
        "description": describe(product),
        "driver": VECTOR_DRIVER if product.is_vector else DRIVER,
        "args": {
            "dataset_id": product.dataset_id,
            "dataset_identifier": product.dataset_identifier,
            "bbox": "{{ bbox }}",
            "start": "{{ start }}",
            "end": "{{ end }}",
            "service": "{{ service }}",
        },
        "parameters": parameters(product),
        "metadata": metadata(product),
    }


def api_catalog_entry() -> dict[str, Any]:
    """The nested entry that reaches the CLMS download API's datasets.

    Only the driver name and settings are written: the datasets are listed from
    the API's ``@search`` when the entry is opened, so the committed catalog
    holds nothing synthetic and never goes stale.
    """
    return {
        "description": "The CLMS download API (land.copernicus.eu) as a catalog: one entry per dataset it can "
        "deliver, with a `file` parameter for its pre-packaged files and, where the dataset allows it, "
        "cut-to-order parameters (bbox, dates, output format, CRS). Listed from the API's @search when opened "
        "(cached on disk for a day; CLMS_API_URL sets the server), never when this catalog is shown. "
        "`intake-clms generate --clms-api` writes the same entries as a static catalog.",
        "driver": "clms_api",
        "args": {"max_age": 86400},
        "metadata": {"service": "clms", "listing": "@search", "kind": "nested catalog"},
    }


def build_catalog(
    products: Iterable[Product], *, source: str | None = None, title: str | None = None, clms_api: bool = True
) -> dict[str, Any]:
    """The catalog as a plain dict, ready for ``yaml.safe_dump``.

    ``clms_api`` adds the nested CLMS download API catalog entry (:data:`API_CATALOG_NAME`).
    """
    named = _unique_names(products)
    meta: dict[str, Any] = {
        "version": 1,
        "title": title or "Copernicus Land Monitoring Service products (intake-clms)",
        "description": "One entry per CLMS datasetIdentifier, and one per old WEkEO dataset ID not migrated yet"
        + (f"; the CLMS download API's datasets under {API_CATALOG_NAME}" if clms_api else "")
        + ". Generated by `intake-clms generate`; edit the table, not this file.",
    }
    if source:
        meta["generated_from"] = source
    meta[DRIVER_KEY] = ClmsCatalog.name  # plain intake.open_catalog answers unknown entries as clms_cat does
    sources = {name: entry(p) for name, p in named.items()}
    if clms_api:
        name = API_CATALOG_NAME
        while name in sources:  # a product would have to be called so; keep both, deterministically
            name += "_catalog"
        sources[name] = api_catalog_entry()
    # ``plugins`` makes intake import the module that honours ``catalog_driver`` (see catalog/lookup.py)
    return {"metadata": meta, "plugins": PLUGINS, "sources": dict(sorted(sources.items()))}


class _Dumper(yaml.SafeDumper):
    """Block style, except short lists of scalars (bboxes, old IDs) which read better inline."""


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    flow = 0 < len(data) <= 6 and all(isinstance(v, (int, float, str)) and len(str(v)) < 60 for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


class _FlowMap(dict):
    """A mapping written on one line (``{kind: image, z: NDVI, ...}``): plot specs stay one line per entry."""


def _represent_flow_map(dumper: yaml.SafeDumper, data: _FlowMap) -> yaml.Node:
    return dumper.represent_mapping("tag:yaml.org,2002:map", data.items(), flow_style=True)


_Dumper.add_representer(list, _represent_list)
_Dumper.add_representer(_FlowMap, _represent_flow_map)


def dump_catalog(catalog: dict[str, Any]) -> str:
    return yaml.dump(catalog, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=110, default_flow_style=False)


def _umask() -> int:
    """The process umask (read by setting it, the only portable way, and restoring it at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_catalog(catalog: dict[str, Any], path: str | PathLike[str]) -> Path:
    """Write atomically: a temporary file beside the target, renamed into place (never a partial file).

    A catalog is no secret: the file gets the mode any new file gets (0666
    less the umask), not the 0600 of the temporary file it is written through.
    """
    path = Path(path)
    text = dump_catalog(catalog)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
