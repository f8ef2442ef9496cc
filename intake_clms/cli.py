"""The ``intake-clms`` command line.

Errors the user can fix print one line on stderr and exit with status 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .errors import ClmsError
from .gui import add_gui_parser

EXIT_USAGE = 2


def _api_catalog(args: argparse.Namespace) -> dict:
    """The static CLMS download API catalog, from a saved listing (offline) or the live one."""
    from . import clms_listing
    from .clms_api_catalog import build_api_catalog
    from .config import endpoints

    if args.listing:
        listing = clms_listing.load_listing_file(args.listing)
        return build_api_catalog(listing, source=Path(args.listing).name)
    base = (args.base_url or endpoints().clms_api).rstrip("/")
    listing = clms_listing.fetch_listing(base, refresh=True)
    return build_api_catalog(listing, source=f"{base}/@search")


def _cmd_generate(args: argparse.Namespace) -> int:
    from .catalog import build_catalog, dump_catalog, write_catalog

    if args.clms_api:
        if args.table or args.columns:
            raise ClmsError("--clms-api builds from the CLMS download API listing: give no transition table or --columns")
        catalog = _api_catalog(args)
    elif args.listing or args.base_url:
        raise ClmsError(f"{'--listing' if args.listing else '--base-url'} only applies with --clms-api")
    elif not args.table:
        raise ClmsError("nothing to generate from: give a transition table (.xlsx), or --clms-api for the "
                        "CLMS download API's datasets")
    else:
        from .table import read_transition_table

        table = Path(args.table)
        products = read_transition_table(table, columns=args.columns)
        catalog = build_catalog(products, source=table.name)
    if args.output in (None, "-"):
        sys.stdout.write(dump_catalog(catalog))
    else:
        path = write_catalog(catalog, args.output)
        print(f"wrote {len(catalog['sources'])} entries to {path}", file=sys.stderr)
    return 0


def _cmd_resolve(args: argparse.Namespace) -> int:
    from .resolve import load_sources, resolve

    sources = load_sources(args.catalog)
    for name in resolve(args.id, args.catalog):
        md = sources[name].get("metadata") or {}
        print(f"{name}\t{md.get('migration_status', '')}\t{md.get('dataset_id', '')}\t{md.get('dataset_identifier') or ''}")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from .resolve import load_sources

    words = (args.search or "").lower().split()
    sources = load_sources(args.catalog)
    shown = 0
    for name, spec in sorted(sources.items()):
        md = spec.get("metadata") or {}
        haystack = " ".join(
            [name, spec.get("description", ""), str(md.get("identifier", "")), " ".join(md.get("old_ids") or [])]
        ).lower()
        if all(w in haystack for w in words):
            status = md.get("migration_status") or ("catalog" if spec.get("driver") != "clms" else "")
            print(f"{name:<72} {status:<13} {md.get('resolution') or '':<8} {md.get('frequency') or ''}")
            shown += 1
    if shown == 0 and words:
        raise ClmsError(f"no entry matches {args.search!r}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="intake-clms",
        description="Copernicus Land Monitoring Service data as intake catalogs.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("generate", help="write an intake catalog from a CLMS transition table (.xlsx) or the CLMS API",
                       description="Read WEkEO's CLMS transition table and write one intake entry per product; "
                                   "or, with --clms-api, write one entry per dataset the CLMS download API can "
                                   "deliver, from its live @search listing or a saved one (offline).")
    p.add_argument("table", nargs="?", help="the transition table workbook (.xlsx) with sheets Current and New")
    p.add_argument("-o", "--output", help="catalog file to write (default: standard output)")
    p.add_argument("--columns", metavar="MAPPING",
                   help="explicit header mapping, e.g. 'dataset_identifier=Dataset identifier,New:frequency=Repeat' "
                        "(fields: dataset_identifier, old_dataset_id, product_type, time_coverage, spatial_coverage, "
                        "resolution, frequency, old_source_active, ...)")
    p.add_argument("--clms-api", action="store_true",
                   help="generate the CLMS download API's datasets (the same entries as the nested "
                        "clms_download_api catalog) instead of the table's products")
    p.add_argument("--listing", metavar="FILE",
                   help="with --clms-api: a saved listing (raw @search items as a JSON list, or a listing cache "
                        "file) instead of the live service; works offline")
    p.add_argument("--base-url", metavar="URL",
                   help="with --clms-api: the API base URL (default: CLMS_API_URL, else https://land.copernicus.eu/api)")
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser("resolve", help="map an old or new dataset ID to the catalog entries that serve it",
                       description="Print the entries (name, migration status, dataset ID, datasetIdentifier) "
                                   "that serve an old WEkEO ID or a datasetIdentifier.")
    p.add_argument("id", help="e.g. EO:CLMS:DAT:CLMS_GLOBAL_NDVI_300M_V1_10DAILY_NETCDF or ndvi_global_300m_10daily_v1")
    p.add_argument("--catalog", help="catalog YAML (default: the bundled catalogs/clms.yaml)")
    p.set_defaults(func=_cmd_resolve)

    p = sub.add_parser("list", help="list catalog entries", description="List catalog entries, optionally filtered.")
    p.add_argument("--search", metavar="TEXT", help="only entries whose name, description or IDs contain every word")
    p.add_argument("--catalog", help="catalog YAML (default: the bundled catalogs/clms.yaml)")
    p.set_defaults(func=_cmd_list)

    # Listed for --help only: main() hands `sandbox ...` to the sandbox's own parser.
    sub.add_parser("sandbox", help="run the local sandbox server (WEkEO HDA, CLMS API, CDSE); see `sandbox --help`")

    from .lifecycle.cli import add_preload_parser

    add_preload_parser(sub)
    add_gui_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["sandbox"]:  # its options belong to the sandbox's own parser
        from .sandbox.server import main as sandbox_main

        return sandbox_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ClmsError as exc:
        print(f"intake-clms {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except FileNotFoundError as exc:
        print(f"intake-clms {args.command}: error: file not found: {exc.filename}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"intake-clms {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
