"""``intake-clms export --to DIR [ENTRY...]``: share cached data as a plain intake catalog.

A thin shell over :func:`intake_clms.export.export_catalog`; its errors are
``ClmsError`` (one line on stderr, exit status 2, printed by :func:`intake_clms.cli.main`).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def _cmd_export(args: argparse.Namespace) -> int:
    import yaml

    from ..export import export_catalog

    path = export_catalog(args.to, args.entries or None, cache_dir=args.cache_dir, zarr=args.zarr,
                          catalog=args.catalog, force=args.force, requests=args.request)
    sources = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("sources") or {}
    for name, spec in sources.items():
        prov = spec["metadata"]["provenance"]
        print(f"{name}\t{spec['driver']}\t{len(prov['products'])} product(s)\t{prov['request_key']}")
    print(f"wrote {len(sources)} entr{'y' if len(sources) == 1 else 'ies'} to {path}", file=sys.stderr)
    return 0


def add_export_parser(sub: Any) -> None:
    p = sub.add_parser(
        "export", help="write cached requests as a plain intake catalog (intake + intake-xarray, no credentials)",
        description="Write DIR/catalog.yaml and the data of the cached requests of the named entries (every "
                    "cached request when none is named): one netcdf (or zarr) entry per request holding exactly "
                    "what to_dask() returned (crop, decoded values, CRS), with paths relative to the catalog, the "
                    "original description and metadata, and provenance (request, service, products, sha256). "
                    "Colleagues open it with intake, intake-xarray and netCDF4 (or zarr) alone.")
    p.add_argument("entries", nargs="*", metavar="ENTRY",
                   help="catalog entries (or IDs `intake-clms resolve` knows) whose cached requests to export")
    p.add_argument("--to", required=True, metavar="DIR", help="folder to write catalog.yaml and data/ into")
    p.add_argument("--zarr", action="store_true", help="write Zarr stores instead of NetCDF files")
    p.add_argument("--request", action="append", metavar="KEY",
                   help="export only this cached request (its key as `intake-clms cache list` shows it; repeatable)")
    p.add_argument("--force", action="store_true", help="replace a catalog.yaml already in DIR")
    p.add_argument("--cache-dir", help="the cache folder (default: INTAKE_CLMS_CACHE, else the user cache dir)")
    p.add_argument("--catalog", help="catalog YAML whose descriptions are copied (default: the bundled one)")
    p.set_defaults(func=_cmd_export)
