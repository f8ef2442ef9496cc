"""``intake-clms preload ENTRY --bbox W,S,E,N --start ... --end ...``: fill the cache from the shell.

The same call in a new process (or ``to_dask()`` in Python) then opens the
cached result instantly, without network.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..errors import ClmsError


def source_for(entry: str, args: argparse.Namespace) -> Any:
    """The ClmsSource of a catalog entry (name, old ID or datasetIdentifier) with the user's parameters."""
    from ..resolve import load_sources, resolve
    from ..source import ClmsSource

    sources = load_sources(args.catalog)
    names = [entry] if entry in sources else resolve(entry, args.catalog)
    if len(names) != 1:
        raise ClmsError(f"{entry!r} matches {len(names)} entries ({', '.join(names) or 'none'}); name one entry")
    spec = sources[names[0]]
    base = spec.get("args") or {}
    return ClmsSource(
        dataset_id=base["dataset_id"],
        dataset_identifier=base.get("dataset_identifier"),
        bbox=args.bbox,
        start=args.start,
        end=args.end,
        service=args.service,
        cache_dir=args.cache_dir,
        metadata=spec.get("metadata") or {},
        workers=args.workers,
    )


def _cmd_preload(args: argparse.Namespace) -> int:
    src = source_for(args.entry, args)
    handle = src.preload(blocking=True, progress_bar=not args.quiet)
    ds = handle.result()
    done, _ = handle.progress
    print(f"preloaded {args.entry}: {len(handle.products)} product(s), {done} bytes; dims {dict(ds.sizes)}", file=sys.stderr)
    return 0


def add_preload_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``preload`` command to the ``intake-clms`` parser."""
    p = subparsers.add_parser(
        "preload",
        help="download and prepare an entry's data into the cache (with a progress bar)",
        description="Run the whole lifecycle (search, order, wait, download, extract, assemble) for one entry, "
        "so that later reads open the cached product instantly.",
    )
    p.add_argument("entry", metavar="ENTRY", help="catalog entry name, datasetIdentifier or old WEkEO ID")
    p.add_argument("--bbox", required=True, metavar="W,S,E,N", help="bounding box in degrees")
    p.add_argument("--start", required=True, help="first date (ISO)")
    p.add_argument("--end", required=True, help="last date (ISO)")
    p.add_argument("--service", default="auto", choices=("auto", "wekeo", "clms", "cdse"), help="service to read through")
    p.add_argument("--catalog", help="catalog YAML (default: the bundled catalogs/clms.yaml)")
    p.add_argument("--cache-dir", help="cache folder (default: INTAKE_CLMS_CACHE or the user cache dir)")
    p.add_argument("--workers", type=int, default=4, help="concurrent downloads (default 4)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_preload)
    return p
