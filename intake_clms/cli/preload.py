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
    """The ClmsSource of an entry with the user's parameters.

    ENTRY is a catalog entry name, an old WEkEO ID or a datasetIdentifier; with
    ``--service clms`` it may also be a CLMS download API dataset (``forest-type-2015``).
    """
    from ..errors import UnknownIdentifierError
    from ..params import parse_bbox, parse_date
    from ..catalog.resolve import load_sources, resolve, sources_with_api
    from ..source import ClmsSource
    from ..vector_source import ClmsVectorSource

    # The values given are checked first: a bad one is the error to report, whatever else is missing.
    if args.bbox is not None:
        parse_bbox(args.bbox)
    parse_date("start", args.start)
    parse_date("end", args.end)
    sources = load_sources(args.catalog)
    try:
        names = [entry] if entry in sources else resolve(entry, args.catalog)
    except UnknownIdentifierError as exc:
        if args.service != "clms":
            raise UnknownIdentifierError(f"{exc}; or give --service clms to read a CLMS download API dataset by its name") from None
        names = []
    api = [n for n in names if n not in sources]  # CLMS download API datasets (clms_download_api.NAME)
    names = [n for n in names if n in sources]
    if not names and api and args.service != "clms":
        raise ClmsError(f"{entry!r} is a CLMS download API dataset ({', '.join(api)}): give --service clms")
    if not names and len(api) == 1:
        entry = str((sources_with_api(args.catalog)[0][api[0]].get("args") or {}).get("dataset_id") or entry)
    fixed: dict[str, Any] = {}
    metadata: dict[str, Any] = {}
    if len(names) == 1:
        spec = sources[names[0]]
        fixed = {k: v for k, v in (spec.get("args") or {}).items() if not (isinstance(v, str) and "{{" in v)}
        metadata = spec.get("metadata") or {}
    elif names or args.service != "clms":
        raise ClmsError(
            f"{entry!r} matches {len(names)} entries ({', '.join(names) or 'none'}); name one entry"
            + ("" if names else ", or give --service clms to read a CLMS download API dataset by its name")
        )
    else:
        fixed = {"dataset_id": entry}
    wekeo_like = str(fixed.get("dataset_id", "")).startswith("EO:")
    if wekeo_like and args.service != "clms" and not (args.bbox and args.start and args.end):
        raise ClmsError(f"{entry}: --bbox, --start and --end are required (the whole product would be huge)")
    given = {"bbox": args.bbox, "start": args.start, "end": args.end, "file": args.file,
             "output_format": args.format, "crs": args.crs}
    params = {**fixed, **{k: v for k, v in given.items() if v is not None}}
    params["service"] = args.service
    driver = ClmsVectorSource if metadata.get("is_vector") else ClmsSource  # vector entries give a GeoDataFrame
    options = {"max_products": args.max_products} if args.max_products is not None else {}
    return driver(**params, cache_dir=args.cache_dir, metadata=metadata, workers=args.workers, **options)


def _cmd_preload(args: argparse.Namespace) -> int:
    src = source_for(args.entry, args)
    handle = src.preload(blocking=True, progress_bar=not args.quiet)
    ds = handle.result()
    done, _ = handle.progress
    shape = f"dims {dict(ds.sizes)}" if hasattr(ds, "sizes") else f"{len(ds)} feature(s)"
    print(f"preloaded {args.entry}: {len(handle.products)} product(s), {done} bytes; {shape}", file=sys.stderr)
    return 0


def add_preload_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``preload`` command to the ``intake-clms`` parser."""
    p = subparsers.add_parser(
        "preload",
        help="download and prepare an entry's data into the cache (with a progress bar)",
        description="Run the whole lifecycle (search, order, wait, download, extract, assemble) for one entry, "
        "so that later reads open the cached product instantly.",
    )
    p.add_argument("entry", metavar="ENTRY",
                   help="catalog entry name, datasetIdentifier or old WEkEO ID (with --service clms: a CLMS dataset name)")
    p.add_argument("--bbox", metavar="W,S,E,N",
                   help="bounding box in degrees (required for WEkEO products); negative values as written: "
                        "--bbox -10,35,0,44")
    p.add_argument("--start", help="first date (ISO)")
    p.add_argument("--end", help="last date (ISO)")
    p.add_argument("--file", help="CLMS download API: a pre-packaged file (e.g. FTY_2015_100m_eu_03035_d02_Full)")
    p.add_argument("--format", help="CLMS download API cut-to-order: output format (e.g. Geotiff, Netcdf)")
    p.add_argument("--crs", help="CLMS download API cut-to-order: output CRS (e.g. EPSG:3035)")
    p.add_argument("--service", default="auto", choices=("auto", "wekeo", "clms", "cdse"), help="service to read through")
    p.add_argument("--catalog", help="catalog YAML (default: the bundled catalogs/clms.yaml)")
    p.add_argument("--cache-dir", help="cache folder (default: INTAKE_CLMS_CACHE or the user cache dir)")
    p.add_argument("--workers", type=int, default=4, help="concurrent downloads (default 4)")
    p.add_argument("--max-products", type=int, metavar="N",
                   help="fetch at most N products not yet in the cache (default 20; each may be an order on your quota)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_preload)
    return p
