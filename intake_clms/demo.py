"""`make demo`: generate the catalog from the bundled transition table and show what it holds."""

from __future__ import annotations

import collections
import sys
import tempfile
from pathlib import Path

import intake

from .catalog import build_catalog, write_catalog
from .resolve import default_catalog_path, resolve
from .table import read_transition_table


def main() -> int:
    table = default_catalog_path().parent / "clms_transition_table.xlsx"
    out = Path(tempfile.mkdtemp(prefix="intake-clms-demo-")) / "clms.yaml"
    products = read_transition_table(table)
    write_catalog(build_catalog(products, source=table.name), out)
    print(f"Generated {out} from {table.name}: {len(products)} entries")
    cat = intake.open_catalog(str(out))
    by_status = collections.Counter(cat[name].describe()["metadata"]["migration_status"] for name in cat)
    print("Migration status:", ", ".join(f"{k} {v}" for k, v in sorted(by_status.items())))
    by_type = collections.Counter(cat[name].describe()["metadata"]["product_type"] or "?" for name in cat)
    print("\nProduct types:")
    for kind, n in sorted(by_type.items()):
        print(f"  {kind:<55} {n:>3}")
    old = "EO:CLMS:DAT:CLMS_GLOBAL_NDVI_300M_V1_10DAILY_NETCDF"
    print(f"\nresolve({old!r}) -> {resolve(old, out)}")
    entry = cat.ndvi_global_300m_10daily_v2
    print("\ncat.ndvi_global_300m_10daily_v2:")
    print("  ", entry.description)
    for p in entry.describe()["user_parameters"]:
        print(f"   {p['name']:<8} default={p['default']!r:<32} {p['description']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
