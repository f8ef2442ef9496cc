"""`make demo` end to end: against the sandbox, both services, quicklooks written, the cache reopened offline."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path


def test_demo_runs_the_whole_lifecycle_against_the_sandbox(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HDA_", "CLMS_", "CDSE_", "INTAKE_CLMS"))}
    env.update(HOME=str(tmp_path), HDA_RC=str(tmp_path / "no-hdarc"), TMPDIR=str(tmp_path))
    run = subprocess.run([sys.executable, "-m", "intake_clms.demo"], env=env, capture_output=True, text=True, timeout=300)
    out = run.stdout
    assert run.returncode == 0, run.stderr[-2000:]
    assert "using the local sandbox" in out
    assert re.search(r"Reopened from the cache in [\d.]+ s, 0 HTTP calls; same data: True", out)
    # the CLMS-API tile: named after its product, on its projected grid with a time step, decoded
    assert re.search(r"\bFTY\s+\(time, y, x\) float32", out) and "band_data" not in out, out[-3000:]
    assert re.search(r"\bNDVI\s+\(time, lat, lon\) float32", out)  # the global NetCDF and COG products
    pngs = re.findall(r"Quicklook saved to (\S+\.png)", out)
    assert len(pngs) == 3 and all(Path(p).stat().st_size > 1000 for p in pngs)
    cdse = re.search(r"CDSE (window|download) read of 3 products: ([\d,]+) bytes read of ([\d,]+)", out)
    assert cdse, out[-3000:]
    read, size = (int(cdse.group(i).replace(",", "")) for i in (2, 3))
    assert 0 < read and (read * 20 < size if cdse.group(1) == "window" else read >= size)
    for secret in ("sandbox-password", "BEGIN PRIVATE KEY", "Bearer "):
        assert secret not in out + run.stderr
