"""Extraction benchmark (issue 5): a 1 GiB nested result zip, downloaded and extracted, vs ``curl`` + ``unzip`` x2.

The archive is shaped like a CLMS API result: ``outer.zip`` -> ``Results/<name>.zip``
-> ``<name>/DATA/<8 GeoTIFF-like tiles>`` plus metadata (.xml) and a manual (.pdf)
in the inner zip.  The tiles are random bytes behind a TIFF header: real products
are LZW/deflate-compressed GeoTIFFs, which do not shrink any further, and a zip
writer stores what deflate cannot shrink (Info-ZIP's ``zip`` does; it also stores
``.zip`` members by default), so the tiles are STORED in the inner zip and the inner
zip is STORED in the outer one -- the same shape as the sandbox's result zips.
A second archive, identical except that the inner zip is DEFLATED in the outer one
(level 0: stored deflate blocks, so the build stays fast), is measured too, for
information: that is the case where a temporary inflated copy of the inner zip
cannot be avoided.

A plain HTTP server (``http.server`` with ``sendfile``, in its own process so it
takes no CPU time from the client) serves both files.  Each run, alternately:

- reference: ``curl -o outer.zip URL``; ``unzip -q outer.zip -d out``;
  ``unzip -q out/Results/<name>.zip -d out/Results/<name>`` (twice: outer then inner);
- ours: ``intake_clms.net.download.download`` with a ``requests`` opener (it hashes
  sha256 while streaming and returns a ``Downloaded(path, size, hashes)``), then
  ``extract_zip`` (hashing every extracted file for the product's record) and
  ``require_data`` (what the lifecycle engine runs).

Times are the best of the runs; dirty pages are written back between runs.  During
every run a thread samples the bytes allocated in its work folder every 5 ms; the
peak EXTRA disk use is that peak minus what both must keep (the downloaded zip and
the extracted files): curl + unzip keep a full copy of the inner zip, ours none.

Targets: ours / reference time <= 1.2; ours' peak extra disk < 1 % of the archive.
Run: ``python bench/extract_bench.py [--quick] [--runs N]`` (quick: 64 MiB).
"""

from __future__ import annotations

import argparse
import http.server
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import MIB, emit, settle  # noqa: E402

from intake_clms.net.download import download  # noqa: E402
from intake_clms.engine.extract import extract_zip, require_data  # noqa: E402

NAME = "extract"
TARGET_RATIO = 1.2
TARGET_EXTRA = 0.01  # of the archive size
TILES = 8
INNER = "FTY_2015_100m_eu_03035_d02_Full"
TIFF_HEADER = b"II*\x00" + bytes(4092)


# ------------------------------------------------------------------ the server (its own process)


class _Handler(http.server.BaseHTTPRequestHandler):
    """GET/HEAD of the files in the served folder, with one optional ``Range``, bodies via ``sendfile``."""

    protocol_version = "HTTP/1.1"
    folder = Path(".")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  (quiet)
        pass

    def do_HEAD(self) -> None:  # noqa: N802
        self._serve(body=False)

    def do_GET(self) -> None:  # noqa: N802
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        path = self.folder / Path(self.path.split("?")[0]).name
        if not path.is_file():
            self.send_error(404)
            return
        size = path.stat().st_size
        start = 0
        rng = self.headers.get("Range", "")
        if rng.startswith("bytes=") and rng[6:].rstrip("-").isdigit():
            start = int(rng[6:].rstrip("-"))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(size - start))
        self.send_header("Content-Type", "application/zip")
        self.end_headers()
        if body:
            with open(path, "rb") as fh:
                self.wfile.flush()
                self.connection.sendfile(fh, offset=start, count=size - start)


def serve(folder: str) -> int:
    """Serve ``folder`` on a free loopback port; prints the port, runs until killed."""
    _Handler.folder = Path(folder)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()
    return 0


# ------------------------------------------------------------------ building the archives


def build(folder: Path, nbytes: int) -> tuple[Path, Path, int]:
    """(outer zip with the inner zip stored, the same with it deflated, bytes of data files)."""
    rng = np.random.default_rng(5)
    per_tile = nbytes // TILES
    inner = folder / f"{INNER}.zip"
    data = 0
    with zipfile.ZipFile(inner, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for i in range(TILES):
            with zf.open(f"{INNER}/DATA/{INNER}_part{i:02d}.tif", "w", force_zip64=True) as out:
                out.write(TIFF_HEADER)
                left = per_tile - len(TIFF_HEADER)
                while left > 0:
                    block = rng.integers(0, 256, min(left, 16 * MIB), dtype=np.uint8).tobytes()
                    out.write(block)
                    left -= len(block)
            data += per_tile
        meta = f"<metadata><title>{INNER}</title></metadata>\n".encode() * 50
        zf.writestr(f"{INNER}/Metadata/{INNER}.xml", meta)
        zf.writestr(f"{INNER}/Documents/{INNER}_Product_User_Manual.pdf", b"%PDF-1.4\n" + bytes(20_000))
        data += len(meta) + 20_009
    stored = folder / "result-stored.zip"
    deflated = folder / "result-deflated.zip"
    with zipfile.ZipFile(stored, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        zf.write(inner, f"Results/{inner.name}")
    with zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED, compresslevel=0, allowZip64=True) as zf:
        zf.write(inner, f"Results/{inner.name}")
    inner.unlink()
    return stored, deflated, data


# ------------------------------------------------------------------ the two contenders


def run_reference(url: str, work: Path) -> Path:
    archive = work / "outer.zip"
    out = work / "out"
    subprocess.run(["curl", "-sS", "-f", "-o", str(archive), url], check=True)
    subprocess.run(["unzip", "-q", str(archive), "-d", str(out)], check=True)
    inner = out / "Results" / f"{INNER}.zip"
    subprocess.run(["unzip", "-q", str(inner), "-d", str(out / "Results" / INNER)], check=True)
    return out


def run_ours(url: str, work: Path) -> Path:
    session = requests.Session()

    def open_body(offset: int) -> requests.Response:
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        response = session.get(url, headers=headers, stream=True, timeout=60)
        response.raise_for_status()
        return response

    archive = work / "outer.zip"
    target = work / "ready"
    got = download(open_body, archive, service="bench")  # sha256 computed while the bytes stream in
    assert got.path == archive and got.size == archive.stat().st_size and "sha256" in got.hashes
    member_hashes: dict[str, str] = {}  # each extracted file's sha256, for the product's record
    extract_zip(got.path, target, hashes=member_hashes)
    require_data(target, got.path.name)
    assert member_hashes, "extract_zip reported no member hashes"
    session.close()
    return target


def data_files(folder: Path) -> dict[str, int]:
    """Relative path -> size of the extracted files (zips excluded: the reference keeps the inner one)."""
    return {p.relative_to(folder).as_posix(): p.stat().st_size
            for p in folder.rglob("*") if p.is_file() and p.suffix != ".zip"}


def disk_bytes(folder: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


def peak_disk(fn: Callable[[], Any], folder: Path) -> int:
    """Run ``fn`` while sampling the bytes allocated under ``folder``; the peak."""
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], disk_bytes(folder))
            stop.wait(0.005)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        fn()
    finally:
        stop.set()
        thread.join()
    return max(peak[0], disk_bytes(folder))


# ------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64 MiB instead of 1 GiB")
    parser.add_argument("--runs", type=int, default=None, help="timed runs of each (default 3, quick 2)")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        return serve(args.serve)
    for tool in ("curl", "unzip"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed: the reference cannot run", file=sys.stderr)
            return 2
    nbytes = (64 if args.quick else 1024) * MIB
    runs = args.runs or (2 if args.quick else 3)
    work = Path(tempfile.mkdtemp(prefix="intake-clms-extract-bench-"))
    server = None
    try:
        served = work / "served"
        served.mkdir()
        t = time.perf_counter()
        stored, deflated, data_size = build(served, nbytes)
        size = stored.stat().st_size
        print(f"result zips of {size / MIB:.0f} MiB built in {time.perf_counter() - t:.1f} s "
              f"(outer -> Results/{INNER}.zip -> {TILES} tiles + metadata); {runs} runs of each")
        server = subprocess.Popen([sys.executable, __file__, "--serve", str(served)], stdout=subprocess.PIPE, text=True)
        assert server.stdout is not None
        port = int(server.stdout.readline())
        base = f"http://127.0.0.1:{port}"

        def one(kind: str, archive: Path, i: int) -> tuple[float, int, dict[str, int]]:
            """One run: (seconds, peak extra bytes on disk, extracted files)."""
            folder = work / "runs" / f"{kind}-{archive.stem}-{i}"
            folder.mkdir(parents=True)
            fn = run_ours if kind == "ours" else run_reference
            url = f"{base}/{archive.name}"
            settle()
            result: dict[str, Path] = {}
            t0 = time.perf_counter()
            peak = peak_disk(lambda: result.setdefault("out", fn(url, folder)), folder)
            seconds = time.perf_counter() - t0
            out = result["out"]
            kept = (folder / "outer.zip").stat().st_blocks * 512 + disk_bytes(out) - sum(
                p.stat().st_blocks * 512 for p in out.rglob("*.zip"))  # the reference's inner zip is extra
            files = data_files(out)
            shutil.rmtree(folder)
            return seconds, max(0, peak - kept), files

        times: dict[str, list[float]] = {"ours": [], "ref": []}
        extra: dict[str, int] = {"ours": 0, "ref": 0}
        listings = []
        for i in range(runs):
            for kind in ("ref", "ours"):
                seconds, peak, files = one(kind, stored, i)
                times[kind].append(seconds)
                extra[kind] = max(extra[kind], peak)
                listings.append(files)
            print(f"run {i + 1}: curl + unzip x2 {times['ref'][-1]:.2f} s | ours {times['ours'][-1]:.2f} s")
        deflated_runs = {}
        for kind in ("ref", "ours"):
            seconds, peak, files = one(kind, deflated, 0)
            deflated_runs[kind] = (seconds, peak)
            listings.append(files)
    finally:
        if server is not None:
            server.kill()
            server.wait()
        shutil.rmtree(work, ignore_errors=True)
    if any(files != listings[0] for files in listings) or sum(listings[0].values()) != data_size:
        raise AssertionError("ours and the reference did not extract the same files")
    ours, ref = min(times["ours"]), min(times["ref"])
    ratio = ours / ref
    ratio_deflated = deflated_runs["ours"][0] / deflated_runs["ref"][0]
    results = {
        "size_mib": size / MIB,
        "runs": runs,
        "ours_s": ours,
        "ref_s": ref,
        "ratio": ratio,
        "ours_mib_s": size / MIB / ours,
        "ref_mib_s": size / MIB / ref,
        "ours_peak_extra_bytes": extra["ours"],
        "ref_peak_extra_bytes": extra["ref"],
        "deflated_outer": {
            "ours_s": deflated_runs["ours"][0],
            "ref_s": deflated_runs["ref"][0],
            "ratio": ratio_deflated,
            "ours_peak_extra_bytes": deflated_runs["ours"][1],
            "ref_peak_extra_bytes": deflated_runs["ref"][1],
        },
        "targets": {"ratio": f"<= {TARGET_RATIO}", "ours_peak_extra_bytes": f"< {TARGET_EXTRA:.0%} of the archive"},
        "ok": {"ratio": ratio <= TARGET_RATIO, "ours_peak_extra_bytes": extra["ours"] < TARGET_EXTRA * size},
    }
    print(f"download + extract, best of {runs}: ours {ours:.2f} s ({size / MIB / ours:.0f} MiB/s), "
          f"curl + unzip x2 {ref:.2f} s -> ratio {ratio:.2f} (target <= {TARGET_RATIO})")
    print(f"peak extra disk: ours {extra['ours'] / MIB:.1f} MiB, curl + unzip {extra['ref'] / MIB:.1f} MiB "
          f"(a full copy of the inner zip)")
    print(f"inner zip deflated in the outer (for information): ours {deflated_runs['ours'][0]:.2f} s, "
          f"reference {deflated_runs['ref'][0]:.2f} s (ratio {ratio_deflated:.2f}); peak extra disk ours "
          f"{deflated_runs['ours'][1] / MIB:.1f} MiB (the inflated inner zip, while it is expanded), "
          f"reference {deflated_runs['ref'][1] / MIB:.1f} MiB")
    emit(NAME, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
