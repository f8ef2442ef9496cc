"""The lifecycle benchmarks run (``--quick``) and report their figures in the agreed JSON line.

Speed targets are not asserted here (they belong to the benchmarks, on a quiet
machine); these tests catch a benchmark that crashes, or whose result line lost
a field the README and ``bench/run.py`` rely on.  The benchmarks run at once,
in their own processes, so the module costs about as long as the slowest one.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"

#: benchmark -> the result keys each must report (besides "targets" and "ok")
EXPECTED: dict[str, set[str]] = {
    "download": {"size_mib", "curl_mib_s", "ours_download_mib_s", "ours_lifecycle_mib_s", "ratio", "peak_rss_mib"},
    "open": {"ours_s", "open_dataset_s", "ratio", "allowed_s", "three_steps_ours_s", "three_steps_open_mfdataset_s",
             "three_steps_allowed_s", "three_steps_size_check_s", "network_calls_while_reopening"},
    "overlap": {"one", "sequential", "concurrent", "sequential_orders_ratio", "sequential_bytes_ratio",
                "concurrent_orders_ratio", "concurrent_bytes_ratio", "concurrent_completed", "products"},
    "cache_list": {"requests", "products", "product_statuses", "list_s", "list_s_median", "cli_s"},
    "queue": {"status_calls", "late_by_s", "calls_by_wait_s", "policy"},
    "hda_client": {"products", "queue_delay_s", "ours_s", "hda_s", "ratio"},
    "extract": {"ours_s", "ref_s", "ratio", "ours_peak_extra_bytes", "ref_peak_extra_bytes", "size_mib"},
    "cdse_download": {"size_mib", "curl_mib_s", "ours_download_mib_s", "ours_lifecycle_mib_s", "ratio", "peak_rss_mib",
                      "bearer_on_transfer"},
    "cdse_window": {"bytes_sent", "header_bytes", "tile_bytes", "bytes_ratio", "window_s", "download_s", "peak_rss_mib",
                    "rss_steps"},
    "mosaic": {"open_s", "reopen_s", "read_direct_s", "read_ours_s", "read_ratio", "tile_bytes", "product_bytes",
               "bytes_ratio"},
    "series": {"latency_s", "budget", "bbox", "series"},
    "refusal": {"latency_s", "page_cap", "runs", "wall_s", "orders", "catalogue_requests"},
}
EXTRA_ARGS = {"download": ["--runs", "1"], "cdse_download": ["--runs", "1"]}
TIMEOUT = 180.0


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, str, str]]:
    """(exit code, stdout, stderr) of every benchmark run with --quick, all started together."""
    if shutil.which("curl") is None:
        pytest.skip("curl (the download benchmark's reference) is not installed")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TMPDIR": str(tmp_path_factory.mktemp("bench"))}
    procs = {
        name: subprocess.Popen(
            [sys.executable, str(BENCH / f"{name}_bench.py"), "--quick", *EXTRA_ARGS.get(name, [])],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
        )
        for name in EXPECTED
    }
    deadline = time.monotonic() + TIMEOUT
    out: dict[str, tuple[int, str, str]] = {}
    for name, proc in procs.items():
        try:
            stdout, stderr = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
            stderr += f"\n(killed after {TIMEOUT:.0f} s)"
        out[name] = (proc.returncode, stdout, stderr)
    return out


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_quick_benchmark_ends_with_its_json_result(runs: dict[str, tuple[int, str, str]], name: str) -> None:
    code, stdout, stderr = runs[name]
    assert code == 0, f"{name}_bench.py --quick failed:\n{stderr[-3000:]}"
    last = stdout.strip().splitlines()[-1]
    report = json.loads(last)
    assert report["bench"] == name
    results: dict[str, Any] = report["results"]
    missing = EXPECTED[name] - set(results)
    assert not missing, f"{name}: result keys missing: {sorted(missing)}"
    assert results["targets"] and results["ok"]
    assert all(isinstance(v, bool) for v in results["ok"].values())
    assert len(stdout.strip().splitlines()) > 1, "a benchmark also prints human lines before its JSON"


def test_figures_are_plausible(runs: dict[str, tuple[int, str, str]]) -> None:
    """Numbers that cannot be wrong on any machine: sizes, counts, positive timings."""
    res = {name: json.loads(runs[name][1].strip().splitlines()[-1])["results"] for name in EXPECTED if runs[name][0] == 0}
    if "download" in res:
        assert res["download"]["size_mib"] == 64 and res["download"]["ratio"] > 0 and res["download"]["peak_rss_mib"] > 10
    if "queue" in res:
        assert 5 <= res["queue"]["status_calls"] <= 40 and res["queue"]["late_by_s"] >= 0
    if "open" in res:
        assert res["open"]["network_calls_while_reopening"] == 0 and res["open"]["ours_s"] > 0
    if "hda_client" in res:
        assert res["hda_client"]["products"] == 2 and res["hda_client"]["hda_s"] > 0
    if "overlap" in res:
        one = res["overlap"]["one"]
        assert res["overlap"]["products"] == 3 and one["orders"] == 3 and one["downloads"] == 3 and one["bytes"] > 0
        for mode in ("sequential", "concurrent"):
            assert set(res["overlap"][mode]) >= {"orders", "downloads", "bytes", "seconds"}
    if "cache_list" in res:
        assert res["cache_list"]["requests"] == 1000 and res["cache_list"]["products"] == 50
        assert res["cache_list"]["list_s"] > 0
    if "cdse_download" in res:
        d = res["cdse_download"]
        assert d["size_mib"] > 60 and d["ratio"] > 0 and d["bearer_on_transfer"] == 0
    if "series" in res:
        (n, row), = res["series"]["series"].items()
        assert row["products"] == int(n) == 3 and 0 < row["requests_per_product"] <= 4 and row["floor_s"] > 0
        assert row["reopen_s"] > 0 and row["netcdf_s"] > 0 and row["catalogue_pages"] >= 1
    if "refusal" in res:
        runs = res["refusal"]["runs"]["small"]  # --quick: the small pages only
        assert set(runs) == {"wekeo", "cdse", "clms", "clms_files"} and res["refusal"]["orders"] == 0
        assert all(r["refused"] and r["wall_s"] > 0 and r["catalogue_requests"] >= 1 for r in runs.values())
        assert runs["cdse"]["catalogue_requests"] == 1 and runs["wekeo"]["catalogue_requests"] == 5
    if "cdse_window" in res:
        w = res["cdse_window"]
        assert w["rss_steps"] == 6 and w["tile_bytes"] <= w["bytes_sent"] < w["file_bytes"] / 20
    assert res, "no benchmark ran"


# ------------------------------------------------------------------ bench/run.py


def load_runner() -> Any:
    spec = importlib.util.spec_from_file_location("bench_run", BENCH / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CATALOG_OUTPUT = """\
| table | entries | generate (s) | vs pandas read | open + list (s) | vs yaml load | instantiate + describe all (s, after open) |
|---|---|---|---|---|---|---|
| bundled table | 151 | 0.250 | 10.00x | 0.390 | 1.02x | 0.870 |
| synthetic 20x table | 3001 | 7.600 | 23.00x | 13.600 | 0.74x | 81.000 |

bundled table: slowest step 0.870 s (target < 1 s)
"""


def test_runner_finds_every_benchmark_and_reads_the_legacy_catalog_output() -> None:
    run = load_runner()
    names = [name for name, _ in run.discover()]
    assert {"catalog", *EXPECTED} <= set(names)
    results = run.parse_catalog(CATALOG_OUTPUT, 0)
    assert results["bundled"]["entries"] == 151 and results["synthetic_20x_table"]["describe_all_s"] == 81.0
    assert results["slowest_step_s"] == 0.87 and results["ok"] == {"slowest_step_s": True}
    with pytest.raises(ValueError):
        run.parse_catalog("nothing useful", 1)


def test_runner_runs_a_benchmark_and_reports_a_missed_target_or_a_crash(tmp_path: Path) -> None:
    run = load_runner()
    good = tmp_path / "fake_bench.py"
    good.write_text(
        "import json, sys\n"
        "print('a human line')\n"
        "print(json.dumps({'bench': 'fake', 'results': {'x': 2.0, 'quick': '--quick' in sys.argv,"
        " 'targets': {'x': '<= 1'}, 'ok': {'x': False}}}))\n"
    )
    record = run.run_one("fake", good, quick=True)
    assert record["status"] == "missed" and record["results"]["quick"] is True
    assert "x=2 (target <= 1)" in run.headline(record)
    bad = tmp_path / "broken_bench.py"
    bad.write_text("raise SystemExit('boom')\n")
    record = run.run_one("broken", bad, quick=False)
    assert record["status"] == "error" and any("boom" in line for line in record["tail"])
    assert run.run_one("catalog", good, quick=True)["status"] == "skipped"  # the legacy one has no quick mode
