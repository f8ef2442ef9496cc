"""Run every benchmark (``bench/*_bench.py``), each in its own process; print a table; save the figures.

Each benchmark prints, as its last stdout line, ``{"bench": name, "results": {...}}``
with its figures, "targets" and "ok" booleans.  A benchmark written before that
convention (``catalog_bench.py``) is read by an adapter here.  ``--quick`` passes
through (small sizes); a benchmark with no quick mode is then skipped.

Run: ``python bench/run.py [--quick] [--only NAME ...] [--output FILE] [--strict]`` (or ``make bench``).
Writes ``bench/results.json`` (``bench/results-quick.json`` with ``--quick``); with ``--only`` the
named benchmarks' entries are updated in that file and the others kept.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
TIMEOUT = 1800.0  # seconds per benchmark


def parse_catalog(stdout: str, returncode: int) -> dict[str, Any]:
    """catalog_bench.py prints a Markdown table and a 'slowest step' line; turn them into results."""
    results: dict[str, Any] = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 7 and cells[1].isdigit():
            key = "bundled" if cells[0].startswith("bundled") else re.sub(r"\W+", "_", cells[0]).strip("_")
            results[key] = {
                "entries": int(cells[1]),
                "generate_s": float(cells[2]),
                "generate_vs_pandas": float(cells[3].rstrip("x")),
                "open_list_s": float(cells[4]),
                "open_list_vs_yaml": float(cells[5].rstrip("x")),
                "describe_all_s": float(cells[6]),
            }
        m = re.search(r"slowest step ([0-9.]+) s", line)
        if m:
            results["slowest_step_s"] = float(m.group(1))
    if "slowest_step_s" not in results:
        raise ValueError("no 'slowest step' line in catalog_bench.py's output")
    results["targets"] = {"slowest_step_s": "< 1 (bundled table)"}
    results["ok"] = {"slowest_step_s": returncode == 0}
    return results


#: benchmarks that predate the JSON-last-line convention: name -> (adapter, has a --quick mode)
LEGACY: dict[str, tuple[Callable[[str, int], dict[str, Any]], bool]] = {"catalog": (parse_catalog, False)}


def discover(only: list[str] | None = None) -> list[tuple[str, Path]]:
    found = [(p.name[: -len("_bench.py")], p) for p in sorted(HERE.glob("*_bench.py"))]
    if only:
        unknown = set(only) - {name for name, _ in found}
        if unknown:
            raise SystemExit(f"no benchmark named {', '.join(sorted(unknown))}; have {', '.join(n for n, _ in found)}")
        found = [(n, p) for n, p in found if n in only]
    return found


def last_json(stdout: str) -> dict[str, Any] | None:
    lines = [line for line in stdout.strip().splitlines() if line.strip()]
    if not lines:
        return None
    try:
        value = json.loads(lines[-1])
    except ValueError:
        return None
    return value if isinstance(value, dict) and "results" in value else None


def run_one(name: str, path: Path, quick: bool) -> dict[str, Any]:
    """Run one benchmark; its results, or a record of why there are none."""
    legacy = LEGACY.get(name)
    if quick and legacy is not None and not legacy[1]:
        return {"status": "skipped", "reason": "no quick mode"}
    cmd = [sys.executable, str(path)] + (["--quick"] if quick and legacy is None else [])
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    t = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, env=env, cwd=HERE.parent)
    except subprocess.TimeoutExpired:
        return {"status": "error", "reason": f"timed out after {TIMEOUT:.0f} s", "seconds": time.perf_counter() - t}
    elapsed = time.perf_counter() - t
    sys.stdout.write("".join(f"  {line}\n" for line in done.stdout.strip().splitlines()[:-1]))
    record: dict[str, Any] = {"seconds": elapsed, "returncode": done.returncode}
    try:
        if legacy is not None:
            results = legacy[0](done.stdout, done.returncode)
        else:
            parsed = last_json(done.stdout)
            if parsed is None or done.returncode != 0:
                raise ValueError(f"exit code {done.returncode}, last line not the JSON result")
            results = parsed["results"]
    except ValueError as exc:
        tail = (done.stderr or done.stdout).strip().splitlines()[-15:]
        return {**record, "status": "error", "reason": str(exc), "tail": tail}
    return {**record, "status": "ok" if all((results.get("ok") or {}).values()) else "missed", "results": results}


def headline(record: dict[str, Any]) -> str:
    """The figures the targets are about, e.g. ``ratio=0.97 peak_rss_mib=177``."""
    if record["status"] in ("skipped", "error"):
        return record.get("reason", "")
    results = record["results"]
    parts = []
    for key in results.get("targets") or {}:
        value = results.get(key)
        if isinstance(value, float):
            value = f"{value:.3g}"
        parts.append(f"{key}={value} (target {results['targets'][key]})")
    return "; ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a few seconds per benchmark)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these benchmarks (e.g. download open)")
    parser.add_argument("--output", type=Path, default=None, help="where to write the JSON (default bench/results.json)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed, too")
    args = parser.parse_args(argv)
    output = args.output or HERE / ("results-quick.json" if args.quick else "results.json")
    records: dict[str, dict[str, Any]] = {}
    for name, path in discover(args.only):
        print(f"== {name} ({path.name}{' --quick' if args.quick else ''})", flush=True)
        records[name] = run_one(name, path, args.quick)
        print(f"   {records[name]['status']}: {headline(records[name])}", flush=True)
    width = max((len(n) for n in records), default=5)
    print()
    print(f"| {'bench':{width}} | status  | time (s) | figures against targets |")
    print(f"|{'-' * (width + 2)}|---------|----------|-------------------------|")
    for name, rec in records.items():
        seconds = f"{rec['seconds']:.1f}" if "seconds" in rec else "-"
        print(f"| {name:{width}} | {rec['status']:7} | {seconds:>8} | {headline(rec)} |")
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    for rec in records.values():
        rec["date"] = now
    benches = dict(records)
    if args.only and output.exists():  # a partial run updates its benchmarks in the saved figures
        try:
            saved = json.loads(output.read_text())
            if saved.get("quick") == args.quick:
                benches = {**saved.get("benches", {}), **records}
        except ValueError:
            pass
    report = {
        "quick": args.quick,
        "date": now,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "benches": dict(sorted(benches.items())),
    }
    output.write_text(json.dumps(report, indent=1, sort_keys=True, default=str) + "\n")
    print(f"\nwritten to {output}")
    failed = [n for n, r in records.items() if r["status"] == "error"]
    missed = [n for n, r in records.items() if r["status"] == "missed"]
    if failed:
        print(f"did not run: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed or (args.strict and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
