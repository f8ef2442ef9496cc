"""The ``intake-clms`` command line.

Errors the user can fix print one line on stderr and exit with status 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from ..errors import ClmsError
from ..gui import add_gui_parser

EXIT_USAGE = 2


def _api_catalog(args: argparse.Namespace) -> dict:
    """The static CLMS download API catalog, from a saved listing (offline) or the live one."""
    from ..services.clms_api import listing as clms_listing
    from ..catalog.clms_api import build_api_catalog
    from ..config import endpoints

    if args.listing:
        listing = clms_listing.load_listing_file(args.listing)
        return build_api_catalog(listing, source=Path(args.listing).name)
    base = (args.base_url or endpoints().clms_api).rstrip("/")
    listing = clms_listing.fetch_listing(base, refresh=True)
    return build_api_catalog(listing, source=f"{base}/@search")


def _cmd_generate(args: argparse.Namespace) -> int:
    from ..catalog.generate import build_catalog, dump_catalog, write_catalog

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
        from ..catalog.table import read_transition_table

        table = Path(args.table)
        products = read_transition_table(table, columns=args.columns)
        catalog = build_catalog(products, source=table.name)
    if args.output in (None, "-"):
        sys.stdout.write(dump_catalog(catalog))
    else:
        try:
            path = write_catalog(catalog, args.output)
        except OSError as exc:  # a read-only folder, a directory in the way, a full disk: the user's to fix
            why = f"{exc.filename} is a file, not a folder" if isinstance(exc, FileExistsError) else exc.strerror or exc
            raise ClmsError(f"cannot write {args.output}: {why}") from None
        print(f"wrote {len(catalog['sources'])} entries to {path}", file=sys.stderr)
    return 0


def _cmd_resolve(args: argparse.Namespace) -> int:
    from ..catalog.resolve import resolve, sources_with_api

    names = resolve(args.id, args.catalog, args.listing)
    sources, _ = sources_with_api(args.catalog, args.listing)
    for name in names:
        md = sources[name].get("metadata") or {}
        status = md.get("migration_status") or ("clms_api" if md.get("service") == "clms" else "")
        ident = md.get("dataset_id") or (sources[name].get("args") or {}).get("dataset_id", "")
        print(f"{name}\t{status}\t{ident}\t{md.get('dataset_identifier') or ''}")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from ..catalog.resolve import sources_with_api

    words = (args.search or "").lower().split()
    sources, note = sources_with_api(args.catalog, args.listing)
    shown = 0
    for name, spec in sorted(sources.items()):
        md = spec.get("metadata") or {}
        haystack = " ".join(
            [name, spec.get("description", ""), str(md.get("identifier", "")), " ".join(md.get("old_ids") or [])]
        ).lower()
        if all(w in haystack for w in words):
            status = md.get("migration_status") or ("catalog" if spec.get("driver") != "clms" else "clms_api")
            print(f"{name:<72} {status:<13} {md.get('resolution') or '':<8} {md.get('frequency') or ''}")
            shown += 1
    if shown == 0 and words:
        raise ClmsError(f"no entry matches {args.search!r}" + (f"; {note}" if note else ""))
    if note and words:
        print(f"intake-clms list: note: {note}", file=sys.stderr)
    return 0


_LISTING_HELP = ("a saved CLMS download API listing whose datasets are included as clms_download_api.NAME "
                 "(default: the listing cached when the nested catalog was last opened; never the network)")


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
    p.add_argument("--listing", metavar="FILE", help=_LISTING_HELP)
    p.set_defaults(func=_cmd_resolve)

    p = sub.add_parser("list", help="list catalog entries", description="List catalog entries, optionally filtered.")
    p.add_argument("--search", metavar="TEXT", help="only entries whose name, description or IDs contain every word")
    p.add_argument("--catalog", help="catalog YAML (default: the bundled catalogs/clms.yaml)")
    p.add_argument("--listing", metavar="FILE", help=_LISTING_HELP)
    p.set_defaults(func=_cmd_list)

    # Listed for --help only: main() hands `sandbox ...` to the sandbox's own parser.
    sub.add_parser("sandbox", help="run the local sandbox server (WEkEO HDA, CLMS API, CDSE); see `sandbox --help`")

    from .cache import add_cache_parsers
    from ..health import add_doctor_parser
    from .export import add_export_parser
    from .preload import add_preload_parser

    add_preload_parser(sub)
    add_cache_parsers(sub)
    add_gui_parser(sub)
    add_export_parser(sub)
    add_doctor_parser(sub)
    return parser


#: Options whose value may start with "-" (a western longitude): ``--bbox -10,35,0,44`` as written.
_SIGNED_VALUES = ("--bbox",)
_SIGNED = re.compile(r"^-\d")


def glue_signed_values(argv: Sequence[str]) -> list[str]:
    """``--bbox -10,35,0,44`` -> ``--bbox=-10,35,0,44``: argparse takes a value starting with "-" for an option."""
    out: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        if args[i] in _SIGNED_VALUES and i + 1 < len(args) and _SIGNED.match(args[i + 1]):
            out.append(f"{args[i]}={args[i + 1]}")
            i += 2
            continue
        if args[i] == "--":
            out += args[i:]
            break
        out.append(args[i])
        i += 1
    return out


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["sandbox"]:  # its options belong to the sandbox's own parser
        from ..sandbox.server import main as sandbox_main

        return sandbox_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(glue_signed_values(argv))
    try:
        code = args.func(args)
        sys.stdout.flush()  # inside the try: a reader gone away (`| head`) is handled below, not at exit
        return code
    except ClmsError as exc:
        print(f"intake-clms {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # `intake-clms cache list | head`: the reader has what it wanted
        _quiet_stdout()
        return 0
    except FileNotFoundError as exc:
        print(f"intake-clms {args.command}: error: file not found: {exc.filename}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # a disk-side fault (full, read-only, not a folder) is the user's to fix: one line
        from ..store.fsutil import is_local_fault, storage_error

        if not is_local_fault(exc):
            raise
        print(f"intake-clms {args.command}: error: {storage_error(exc, exc.filename or '?')}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"intake-clms {args.command}: interrupted", file=sys.stderr)
        return 130


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush of a closed pipe raises nothing."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
