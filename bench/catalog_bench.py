"""Catalog benchmarks (issue 2): generate, open + list, instantiate + describe every entry.

Each figure is reported in seconds and as a ratio to a reference measured in the
same run on the same input (a plain pandas read of the workbook; a plain YAML
load of the catalog), for the bundled table and for a synthetic table of
thousands of rows.  Run: `python bench/catalog_bench.py` (or `make bench`).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import intake
import openpyxl
import pandas as pd
import yaml

from intake_clms.catalog.generate import build_catalog, write_catalog
from intake_clms.catalog.table import read_transition_table

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "catalogs" / "clms_transition_table.xlsx"


def best(fn, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def big_table(path: Path, copies: int) -> Path:
    """The bundled table with every row repeated under new identifiers (thousands of rows)."""
    wb = openpyxl.load_workbook(TABLE)
    for ws in wb.worksheets:
        rows = [list(r) for r in ws.iter_rows(min_row=4, values_only=True)]
        for k in range(1, copies):
            for row in rows:
                row = list(row)
                for j, v in enumerate(row):
                    if isinstance(v, str) and (v.startswith("EO:") and j == 0 or "_v" in v and ":" not in v):
                        row[j] = f"{v}_x{k}" if not v.startswith("EO:") else f"{v}_X{k}"
                ws.append(row)
    wb.save(path)
    return path


def measure(table: Path, workdir: Path) -> dict[str, float]:
    out = workdir / f"{table.stem}.yaml"
    t_generate = best(lambda: write_catalog(build_catalog(read_transition_table(table)), out), 3)
    t_read_ref = best(lambda: pd.read_excel(table, sheet_name=None, header=None), 3)
    t_open = best(lambda: list(intake.open_catalog(str(out))))
    t_yaml_ref = best(lambda: yaml.safe_load(out.read_text()))
    names = list(intake.open_catalog(str(out)))

    def describe_all():
        # A fresh catalog each time: intake caches default sources once built.
        cat = intake.open_catalog(str(out))
        for name in names:
            cat[name].describe()

    t_describe = best(describe_all, 3)
    return {"entries": len(names), "generate": t_generate, "read_ref": t_read_ref, "open_list": t_open,
            "yaml_ref": t_yaml_ref, "describe_all": t_describe - t_open}


def main() -> int:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for label, table in (("bundled table", TABLE), ("synthetic 20x table", big_table(work / "big.xlsx", 20))):
            m = measure(table, work)
            rows.append((label, m))
    print("| table | entries | generate (s) | vs pandas read | open + list (s) | vs yaml load | instantiate + describe all (s, after open) |")
    print("|---|---|---|---|---|---|---|")
    for label, m in rows:
        print(f"| {label} | {m['entries']} | {m['generate']:.3f} | {m['generate'] / m['read_ref']:.2f}x "
              f"| {m['open_list']:.3f} | {m['open_list'] / m['yaml_ref']:.2f}x | {m['describe_all']:.3f} |")
    worst = max(max(m["generate"], m["open_list"], m["describe_all"]) for _, m in rows[:1])
    print(f"\nbundled table: slowest step {worst:.3f} s (target < 1 s)")
    return 0 if worst < 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
