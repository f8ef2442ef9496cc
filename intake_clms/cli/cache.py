"""``intake-clms cache list|verify|clean`` and ``intake-clms status``: the store from the shell.

Python equivalents: :mod:`intake_clms.store.maintenance` (``list_cache``,
``verify_cache``, ``clean_cache``, ``running``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from typing import Any

from ..errors import ClmsError


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _when(t: float) -> str:
    return dt.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M") if t else "-"


def _store(args: argparse.Namespace) -> Any:
    from ..store import Store

    return Store(args.cache_dir)


def _cmd_list(args: argparse.Namespace) -> int:
    from ..store.maintenance import list_cache

    listing = list_cache(_store(args))
    print(f"{len(listing.requests)} request(s)")
    for r in listing.requests:
        print(f"  {r.key}  {r.entry[:48]:<48} {r.service:<6} {r.products:>4} product(s) {_size(r.size):>10}  "
              f"{_when(r.last_used)}  {r.status}")
    print(f"{len(listing.products)} product(s)")
    for p in listing.products:
        why = f" ({p.why})" if p.why else ""
        print(f"  {p.name[:64]:<64} {p.service:<6} {_size(p.size):>10}  {_when(p.last_used)}  {p.status}{why}")
    if any(p.status == "damaged" for p in listing.products):
        print("damaged products are fetched again by their next open; `intake-clms cache clean --failed` removes them")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from ..store.maintenance import verify_cache

    store = _store(args)
    problems = verify_cache(store)
    for exc in problems:
        print(f"damaged: {exc.path}: {exc.problem} (product {exc.key})")
    count = sum(1 for _ in store.products.keys())
    print(f"{count} product(s) checked, {len(problems)} problem(s)", file=sys.stderr)
    return 1 if problems else 0


def _cmd_clean(args: argparse.Namespace) -> int:
    from ..store.maintenance import clean_cache, parse_age, parse_size

    if not (args.failed or args.older_than or args.max_size or args.leftovers):
        raise ClmsError("say what to clean: --failed, --older-than AGE, --max-size SIZE or --leftovers")
    removed = clean_cache(_store(args), failed=args.failed,
                          older_than=parse_age(args.older_than) if args.older_than else None,
                          max_size=parse_size(args.max_size) if args.max_size else None)
    for line in removed:
        print(f"removed {line}")
    print(f"{len(removed)} item(s) removed", file=sys.stderr)
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from ..store.maintenance import running

    rows = running(_store(args))
    if not rows:
        print("no preload in progress")
    for row in rows:
        if row.get("job"):
            print(f"order {row['service']}/{row['product']}: {row['stage']} (order {row.get('order_id') or '-'})")
            continue
        products = row.get("products") or {}
        done = sum(int(p.get("bytes") or 0) for p in products.values())
        stages = ", ".join(sorted({str(p.get("stage")) for p in products.values()})) or "-"
        print(f"pid {row['pid']} {row.get('entry') or row['request']} via {row.get('service')}: {row.get('stage')}; "
              f"{len(products)} product(s) [{stages}], {_size(done)}")
        for prod in products.values():
            if prod.get("waiting_for"):
                print(f"  waiting {prod.get('waited', 0)} s for {prod.get('name')}: {prod['waiting_for']}")
    return 0


def add_cache_parsers(sub: Any) -> None:
    """Add ``cache`` (list, verify, clean) and ``status`` to the ``intake-clms`` parser."""
    p = sub.add_parser("cache", help="list, verify or clean the local product store",
                       description="The local store of products and request views.")
    p.add_argument("--cache-dir", help="cache folder (default: INTAKE_CLMS_CACHE or the user cache dir)")
    csub = p.add_subparsers(dest="cache_command", required=True, metavar="ACTION")
    q = csub.add_parser("list", help="requests and products: name, service, size, last use, status")
    q.set_defaults(func=_cmd_list)
    q = csub.add_parser("verify", help="re-hash every stored file against its record; exit 1 naming damaged files")
    q.set_defaults(func=_cmd_verify)
    q = csub.add_parser("clean", help="remove failed jobs, old or least recently used data (never what is in use)")
    q.add_argument("--failed", action="store_true", help="failed, cancelled or expired orders and damaged products")
    q.add_argument("--older-than", metavar="AGE", help="not used for AGE (e.g. 30d, 12h)")
    q.add_argument("--max-size", metavar="SIZE", help="remove least recently used products until the store fits SIZE (e.g. 20G)")
    q.add_argument("--leftovers", action="store_true", help="only what interrupted runs left behind (always done)")
    q.set_defaults(func=_cmd_clean)
    for q in csub.choices.values():
        q.add_argument("--cache-dir", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    p = sub.add_parser("status", help="preloads in progress in any process: stage, products, bytes, orders")
    p.add_argument("--cache-dir", help="cache folder (default: INTAKE_CLMS_CACHE or the user cache dir)")
    p.set_defaults(func=_cmd_status)
