"""The product store and the engine's unit of work (issue 9): every row of its "Why", against the sandbox.

Each test names the defect it covers; each failed on the main it was found on.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from intake_clms.cli import main as cli_main
from intake_clms.errors import LocalStorageError
from intake_clms.engine import PreloadError
from intake_clms.errors import DamagedProductError, IntegrityError
from intake_clms.source import ClmsSource
from intake_clms.store import Store
from intake_clms.store.fsutil import HOST

from .lifecycle_helpers import BBOX, FAST, NDVI, ndvi_source, store, stored_files, view_of

ONE = {"start": "2024-01-01", "end": "2024-01-05"}  # a single 10-daily product
THREE = {"start": "2024-01-01", "end": "2024-01-31"}


def orders(sb) -> int:
    return len([e for e in sb.log.entries("hda", "order") if e.status in (200, 201, 202, 502)])


def downloads(sb) -> int:
    return len([e for e in sb.log.entries("hda", "download") if e.status in (200, 206)])


def reference(sb, start: str, end: str) -> list[xr.DataArray]:
    items = sb.ctx.store.items("ndvi_global_300m_10daily_v2", None, start, end)
    return [xr.open_dataset(sb.ctx.store.materialize(i))["NDVI"].sel(lat=slice(50, 45), lon=slice(5, 10)) for i in items]


# --------------------------------------------------------------------------- sharing


def test_overlapping_requests_share_products_orders_equal_distinct_products(hda_env):
    """Was: three requests of the same dekads differing by bbox placed 6 orders and 6 downloads instead of 3."""
    for box in ([5, 45, 10, 50], [6, 45, 10, 50], [5, 46, 10, 50]):
        ds = ClmsSource(**NDVI, bbox=box, service="wekeo", **THREE, **FAST).to_dask()
        assert ds.sizes["time"] == 3
        assert float(ds.lon.min()) >= box[0] and float(ds.lat.min()) >= box[1]
    assert orders(hda_env) == 3 and downloads(hda_env) == 3
    st = store()
    assert len(list(st.products.keys())) == 3 and len(list(st.views.keys())) == 3


def test_concurrent_overlapping_requests_in_one_process_share_the_work(hda_env):
    handles = [ClmsSource(**NDVI, bbox=box, service="wekeo", **THREE, **FAST).preload(blocking=False, progress_bar=False)
               for box in ([5, 45, 10, 50], [6, 45, 10, 50])]
    for h in handles:
        assert h.wait(120).sizes["time"] == 3
    assert orders(hda_env) == 3 and downloads(hda_env) == 3


def test_a_service_switch_never_reads_another_services_order(hda_env, monkeypatch):
    """Was: cancel a WEkEO preload while queued, then read with service='clms': the CLMS backend polled the HDA id."""
    hda_env.ctx.queue_delay = 1e9
    handle = ndvi_source(**ONE).preload(blocking=False, progress_bar=False)
    deadline = time.monotonic() + 10
    while not store().jobs.all() or not store().jobs.all()[0].order_id:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    handle.cancel()
    (job,) = store().jobs.all()
    assert job.service == "wekeo"
    for name, value in hda_env.env().items():
        monkeypatch.setenv(name, value)
    src = ClmsSource(**NDVI, bbox=BBOX, service="clms", **ONE, **FAST)
    try:
        src.to_dask()
    except Exception as exc:  # the CLMS API may not serve it; it must say so in its own words
        assert "request items" not in str(exc) and job.order_id not in str(exc)
    sent = [e.path for e in hda_env.log.entries("clms")]
    assert sent and not any(job.order_id in p for p in sent)
    assert [j.service for j in store().jobs.all() if j.order_id == job.order_id] == ["wekeo"]


# --------------------------------------------------------------------------- damage


@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_damaged_stored_file_is_fetched_again_once_with_a_warning(hda_env, caplog, damage):
    """Was: a truncated or deleted file in a published product was never detected or re-fetched."""
    src = ndvi_source(**ONE)
    src.to_dask()
    (nc,) = stored_files(src, "*.nc")
    if damage == "truncate":
        with open(nc, "r+b") as fh:
            fh.truncate(100)
    else:
        nc.unlink()
    with caplog.at_level(logging.WARNING):
        ds = ndvi_source(**ONE).to_dask()
    assert str(nc) in caplog.text and "fetching that product again" in caplog.text
    np.testing.assert_allclose(ds["NDVI"].isel(time=0).values, reference(hda_env, **ONE)[0].isel(time=0).values,
                               equal_nan=True)
    assert orders(hda_env) == 2 and downloads(hda_env) == 2


def test_damage_that_cannot_be_refetched_is_one_error_naming_the_file(hda_env, monkeypatch):
    src = ndvi_source(**ONE)
    src.to_dask()
    (nc,) = stored_files(src, "*.nc")
    nc.unlink()
    monkeypatch.delenv("HDA_USER")
    monkeypatch.delenv("HDA_PASSWORD")
    with pytest.raises(DamagedProductError, match="fetching it again failed") as info:
        ndvi_source(**ONE).to_dask()
    assert str(nc) in str(info.value)


@pytest.mark.parametrize("record", ["", "{}", '{"version": 1, "files": [{"path"'])
def test_unreadable_record_is_damage_not_a_traceback(hda_env, record):
    """Was: a half-written manifest caused a silent re-download then permanent failure; ``{}`` a KeyError."""
    src = ndvi_source(**ONE)
    src.to_dask()
    st = store()
    (key,) = list(st.products.keys())
    (st.products.path(key) / "record.json").write_text(record)
    ds = ndvi_source(**ONE).to_dask()
    assert ds.sizes["time"] == 1 and orders(hda_env) == 2
    assert st.products.check(key) is not None


def test_bit_flip_is_found_by_cache_verify_naming_the_file(hda_env, capsys):
    """Was: a bit-flipped NetCDF failed at read time naming no file."""
    src = ndvi_source(**ONE)
    src.to_dask()
    (nc,) = stored_files(src, "*.nc")
    assert cli_main(["cache", "verify"]) == 0
    data = bytearray(nc.read_bytes())
    data[len(data) // 2] ^= 0x01
    nc.write_bytes(bytes(data))
    assert cli_main(["cache", "verify"]) == 1
    out = capsys.readouterr().out
    assert str(nc) in out and "sha256" in out


# --------------------------------------------------------------------------- failures a rerun clears


def test_a_wrong_content_length_restarts_from_zero_instead_of_416_forever(hda_env):
    """Was: the file stayed ``.part`` and every resume was answered 416."""
    hda_env.faults.add("wrong_length", "hda", "download")
    ds = ndvi_source(**ONE).to_dask()
    assert ds.sizes["time"] == 1
    statuses = [e.status for e in hda_env.log.entries("hda", "download")]
    # the 416 names the file's real size: the .part has it all, so it is kept (issue 18: no second download)
    assert 416 in statuses and statuses.count(200) == 1


def test_a_terminal_order_is_not_polled_again_a_rerun_orders_anew(hda_env):
    """Was: a terminal or cancelled order was polled again forever."""
    hda_env.faults.add("terminal_failure", "hda", "order", message="Task Error: product unavailable")
    with pytest.raises(PreloadError, match="product unavailable"):
        ndvi_source(**ONE).to_dask()
    assert [j.stage for j in store().jobs.all()] == ["failed"]
    ds = ndvi_source(**ONE).to_dask()
    assert ds.sizes["time"] == 1 and orders(hda_env) == 2
    assert store().jobs.all() == []


# --------------------------------------------------------------------------- orders exactly once


@pytest.mark.parametrize("params", [{"status": 502}, {"drop": 1}])
def test_an_order_whose_answer_was_lost_is_found_not_placed_twice(hda_env, params):
    """Was: the order POST was retried blindly after a 5xx or a dropped connection (2 orders on the server)."""
    hda_env.faults.add("lost_answer", "hda", "order", **params)
    ds = ndvi_source(**ONE).to_dask()
    assert ds.sizes["time"] == 1
    assert len(hda_env.log.entries("hda", "order")) == 1  # the one POST; the server took it
    assert hda_env.log.count("hda", "downloads") >= 1  # found again through the download listing


def test_a_full_disk_while_saving_the_order_id_costs_no_second_order(hda_env, monkeypatch):
    """Was: ENOSPC while saving the order id was a traceback, and the rerun ordered again."""
    from intake_clms.store import jobs as jobs_module

    real = jobs_module.write_json_atomic

    def full(path, data):
        if data.get("stage") == "ordered":
            raise LocalStorageError(path, "no space left on the device")
        return real(path, data)

    monkeypatch.setattr(jobs_module, "write_json_atomic", full)
    with pytest.raises(LocalStorageError, match="no space left"):
        ndvi_source(**ONE).to_dask()
    monkeypatch.setattr(jobs_module, "write_json_atomic", real)
    assert ndvi_source(**ONE).to_dask().sizes["time"] == 1
    assert len(hda_env.log.entries("hda", "order")) == 1


def test_a_corrupt_job_state_while_queued_costs_no_second_order(hda_env, caplog):
    """Was: a corrupt state.json while queued ordered again."""
    hda_env.ctx.queue_delay = 3600.0
    handle = ndvi_source(**ONE).preload(blocking=False, progress_bar=False)
    deadline = time.monotonic() + 10
    while not [j for j in store().jobs.all() if j.order_id]:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    handle.cancel()
    (job,) = store().jobs.all()
    store().jobs.path("wekeo", job.key).write_text('{"stage": "ord')
    hda_env.clock.advance(3601)
    with caplog.at_level(logging.WARNING):
        assert ndvi_source(**ONE).to_dask().sizes["time"] == 1
    assert "unreadable" in caplog.text
    assert len(hda_env.log.entries("hda", "order")) == 1


# --------------------------------------------------------------------------- local faults are local


def test_a_full_disk_during_download_is_a_local_error_with_no_network_retry(hda_env, tmp_path):
    """Was: reported as "download dropped 6 times" after 5 useless Range requests.  A real limit: RLIMIT_FSIZE."""
    script = f"""
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
from intake_clms.cli import main
sys.exit(main(["preload", "ndvi_global_300m_10daily_v2", "--bbox", "5,45,10,50", "--start", "{ONE['start']}",
               "--end", "{ONE['end']}", "--service", "wekeo", "-q"]))
"""
    proc = subprocess.run([sys.executable, "-c", script], env=dict(os.environ), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "local storage" in lines[0] and "Traceback" not in proc.stderr
    assert not [e for e in hda_env.log.entries("hda", "download") if e.range]  # no Range retry


def test_a_cache_path_that_is_a_file_is_one_line_exit_2(hda_env, tmp_path, capsys):
    bad = tmp_path / "not-a-folder"
    bad.write_text("x")
    code = cli_main(["preload", "ndvi_global_300m_10daily_v2", "--bbox", "5,45,10,50", "--start", ONE["start"],
                     "--end", ONE["end"], "--service", "wekeo", "-q", "--cache-dir", str(bad / "sub")])
    err = capsys.readouterr().err
    assert code == 2 and "local storage" in err and str(bad) in err and len(err.strip().splitlines()) == 1
    assert hda_env.log.count("hda", "order") == 0


def test_a_read_only_cache_is_one_error_naming_it(hda_env, tmp_path, monkeypatch):
    """Root ignores permissions, so a read-only mount is stood in for by EROFS from mkdir (no real one can be made)."""
    real = Path.mkdir

    def ro(self, *a, **k):
        if str(self).startswith(str(tmp_path / "ro")):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "mkdir", ro)
    with pytest.raises(LocalStorageError, match="read-only") as info:
        ndvi_source(**ONE, cache_dir=str(tmp_path / "ro")).to_dask()
    assert str(tmp_path / "ro") in str(info.value)
    assert hda_env.log.count("hda", "order") == 0


# --------------------------------------------------------------------------- leftovers and cache commands


def test_leftovers_of_dead_processes_are_removed_by_the_next_run(hda_env):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    st = store()
    st.ensure_writable()
    tag = f"{HOST}.{pid}.0123abcd"
    junk = [st.root / "staging" / f"c_gls_x.nc.{tag}", st.root / "jobs" / "wekeo" / f".k.json.{tag}.tmp",
            st.root / "views" / f".view.json.{tag}.tmp"]
    junk[0].mkdir(parents=True)
    (junk[0] / "half.nc").write_bytes(b"CDF\x01")
    for p in junk[1:]:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("{")
    mine = st.root / "staging" / f"c_gls_y.nc.{HOST}.{os.getpid()}.0123abcd"  # a live process's work stays
    mine.mkdir()
    ndvi_source(**ONE).to_dask()
    assert not any(p.exists() for p in junk) and mine.exists()


def test_cache_list_clean_and_status(hda_env, capsys):
    ndvi_source(**THREE).to_dask()
    ClmsSource(**NDVI, bbox=[6, 45, 10, 50], service="wekeo", **ONE, **FAST).to_dask()
    assert cli_main(["cache", "list"]) == 0
    out = capsys.readouterr().out
    assert "2 request(s)" in out and "3 product(s)" in out and "c_gls_NDVI300_20240101" in out and "complete" in out
    assert cli_main(["status"]) == 0
    assert "no preload in progress" in capsys.readouterr().out
    st = store()
    size = sum(p.stat().st_size for p in st.products.products.rglob("*") if p.is_file())
    # this process's open requests use every product: nothing may go
    assert cli_main(["cache", "clean", "--max-size", "1"]) == 0
    assert len(list(st.products.keys())) == 3
    assert size > 0


def test_cache_clean_is_lru_and_spares_what_a_live_process_uses(hda_env):
    script = """
import sys
from intake_clms.source import ClmsSource
for start, end in (("2024-01-01", "2024-01-05"), ("2024-01-11", "2024-01-15")):
    ClmsSource(dataset_id="EO:JRC:DAT:CLMS", dataset_identifier="ndvi_global_300m_10daily_v2", bbox=[5, 45, 10, 50],
               start=start, end=end, service="wekeo", poll_first=0.05, poll_cap=0.2).to_dask()
"""
    proc = subprocess.run([sys.executable, "-c", script], env=dict(os.environ), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    st = store()
    old, new = sorted(st.products.keys())
    first = ndvi_source(start="2024-01-01", end="2024-01-05").request.key()
    os.utime(st.views.path(first) / "view.json", (1, 1))  # the first request was last used long ago
    from intake_clms.store.maintenance import clean_cache, list_cache

    rows = {r.key: r for r in list_cache(st).products}
    assert rows[old].last_used < rows[new].last_used
    removed = clean_cache(st, max_size=st.products.check(new).size)
    assert list(st.products.keys()) == [new] and any(old in line for line in removed)
    assert st.views.get(first) is None  # its view named the removed product
    # a product this process has opened is in use: a clean from another process leaves it
    ndvi_source(start="2024-01-11", end="2024-01-15").to_dask()
    proc = subprocess.run([sys.executable, "-m", "intake_clms.cli", "cache", "clean", "--max-size", "1"],
                          env=dict(os.environ), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert list(st.products.keys()) == [new]


def test_failed_jobs_are_listed_with_why_and_cleaned(hda_env, capsys):
    hda_env.faults.add("terminal_failure", "hda", "order", message="Task Error: product unavailable")
    with pytest.raises(PreloadError):
        ndvi_source(**ONE).to_dask()
    assert cli_main(["cache", "list"]) == 0
    assert "failed (failed: order failed" in capsys.readouterr().out
    assert cli_main(["cache", "clean", "--failed"]) == 0
    assert store().jobs.all() == []


def test_max_products_refuses_before_any_order(hda_env):
    src = ClmsSource(**NDVI, bbox=BBOX, start="2024-01-01", end="2024-03-31", service="wekeo", max_products=4, **FAST)
    with pytest.raises(Exception, match=r"max_products: this request needs at least 5 products") as info:
        src.to_dask()  # 9 products: the search stops once it has found more than 4
    assert "raise max_products" in str(info.value) and "--max-products" in str(info.value)
    assert hda_env.log.count("hda", "order") == 0
    assert hda_env.log.count("hda", "search") == 1  # one small page, not the whole listing


def test_the_size_budget_is_applied_after_each_preload(hda_env, monkeypatch):
    """INTAKE_CLMS_CACHE_MAX: after a preload, least recently used products of no live process are removed."""
    script = """
import sys
from intake_clms.source import ClmsSource
start, end = sys.argv[1:3]
ClmsSource(dataset_id="EO:JRC:DAT:CLMS", dataset_identifier="ndvi_global_300m_10daily_v2", bbox=[5, 45, 10, 50],
           start=start, end=end, service="wekeo", poll_first=0.05, poll_cap=0.2).to_dask()
"""
    run = lambda *dates, **env: subprocess.run([sys.executable, "-c", script, *dates], env={**os.environ, **env},  # noqa: E731
                                               capture_output=True, text=True, timeout=120)
    first = run("2024-01-01", "2024-01-05")
    assert first.returncode == 0, first.stderr[-2000:]
    st = store()
    (old,) = list(st.products.keys())
    size = st.products.check(old).size
    second = run("2024-01-11", "2024-01-15", INTAKE_CLMS_CACHE_MAX=str(int(size * 1.5)))
    assert second.returncode == 0, second.stderr[-2000:]
    keys = list(st.products.keys())
    assert len(keys) == 1 and keys != [old]  # the older product made room for the newer one
