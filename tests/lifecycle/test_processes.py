"""Several processes and killed processes: one order, one download, identical bytes."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


from .lifecycle_helpers import FAST, ndvi_source, store, stored_files

ONE = {"start": "2024-01-01", "end": "2024-01-05"}
SCRIPT = f"""
import sys
from intake_clms.source import ClmsSource
src = ClmsSource("EO:JRC:DAT:CLMS", "ndvi_global_300m_10daily_v2", bbox=[5, 45, 10, 50],
                 start="{ONE['start']}", end="{ONE['end']}", service="wekeo", **{FAST!r})
ds = src.to_dask()
print("OK", ds.sizes["time"])
"""


def _spawn() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", SCRIPT], env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.nc"))}


def test_kill_9_then_rerun_reuses_the_order(hda_env):
    hda_env.ctx.queue_delay = 3600.0  # the first process waits in the queue until killed
    src = ndvi_source(**ONE)
    jobs = store().jobs
    proc = _spawn()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if any(j.order_id for j in jobs.all()):
                    break
            except (FileNotFoundError, ValueError, KeyError):
                pass
            time.sleep(0.05)
        else:
            raise AssertionError("the first process placed no order")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    hda_env.clock.advance(3601.0)  # now the order is ready
    ds = src.to_dask()
    assert ds.sizes["time"] == 1
    assert hda_env.log.count("hda", "order") == 1  # no second order
    item = hda_env.ctx.store.items("ndvi_global_300m_10daily_v2", None, ONE["start"], ONE["end"])[0]
    expected = hashlib.sha256(Path(hda_env.ctx.store.materialize(item)).read_bytes()).hexdigest()
    assert [hashlib.sha256(p.read_bytes()).hexdigest() for p in stored_files(src, "*.nc")] == [expected]


def test_two_processes_share_one_order_and_one_download(hda_env):
    procs = [_spawn(), _spawn()]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
        assert "OK 1" in out
    assert hda_env.log.count("hda", "order") == 1
    assert len([e for e in hda_env.log.entries("hda", "download") if e.status in (200, 206)]) == 1
