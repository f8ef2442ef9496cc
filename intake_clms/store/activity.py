"""What every running preload is doing, readable from any process (``intake-clms status``).

Each process that preloads writes ``running/<host>.<pid>.json``: its preloads (stage,
products, bytes, order ids) and the products its open requests read.  A file whose
process no longer runs is ignored and removed by the next reader.  ``cache clean``
never removes a product a live process lists.  The products in use and the preloads'
stages are written at once; products' states and byte counts at most once a second
(a timer writes the last change of a quiet second), so a long series of small products
costs a few writes, not one per product.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from .fsutil import HOST, pid_alive, read_json, write_json_atomic

THROTTLE = 1.0


class ProcessActivity:
    """This process's record (one per store root and process)."""

    def __init__(self, root: Path):
        self.path = root / "running" / f"{HOST}.{os.getpid()}.json"
        self._lock = threading.Lock()
        self._data: dict[str, Any] = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                                      "preloads": {}, "in_use": []}
        self._written = 0.0
        self._timer: threading.Timer | None = None

    def use(self, keys: list[str]) -> None:
        with self._lock:
            have = set(self._data["in_use"])
            if have.issuperset(keys):
                return
            self._data["in_use"] = sorted(have | set(keys))
        self._write(force=True)

    def listener(self, request_key: str, entry: str, service: str) -> PreloadActivity:
        return PreloadActivity(self, request_key, entry, service)

    def _update(self, request_key: str, fn: Any, force: bool) -> None:
        with self._lock:
            fn(self._data["preloads"])
        self._write(force)

    def _write(self, force: bool) -> None:
        now = time.monotonic()
        with self._lock:
            if not force and now - self._written < THROTTLE:
                if self._timer is None:  # the last change of a quiet second is written all the same
                    self._timer = threading.Timer(THROTTLE - (now - self._written), self._write, args=(True,))
                    self._timer.daemon = True
                    self._timer.start()
                return
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._written = now
            snapshot = {**self._data, "updated": time.time()}
        try:
            write_json_atomic(self.path, snapshot, durable=False)  # a status of live processes: no fsync
        except Exception:  # noqa: BLE001 - status display must never fail a preload
            pass

    def finish(self, request_key: str) -> None:
        self._update(request_key, lambda p: p.pop(request_key, None), True)


class PreloadActivity:
    """A progress listener that mirrors one preload into the process's record."""

    def __init__(self, owner: ProcessActivity, request_key: str, entry: str, service: str):
        self.owner, self.key = owner, request_key
        owner._update(request_key, lambda p: p.__setitem__(request_key, {
            "entry": entry, "service": service, "stage": "resolve", "products": {}}), True)

    def on_stage(self, stage: str) -> None:
        self.owner._update(self.key, lambda p: p.get(self.key, {}).__setitem__("stage", stage), True)

    def on_product(self, key: str, name: str, stage: str) -> None:
        def set_(p: dict[str, Any]) -> None:
            prod = p.get(self.key, {}).setdefault("products", {}).setdefault(key, {"name": name, "bytes": 0, "total": None})
            prod["stage"] = stage
            if stage != "waiting":
                prod.pop("waiting_for", None)
        self.owner._update(self.key, set_, False)

    def on_wait(self, key: str, name: str, doing: str, waited: float) -> None:
        """This preload waits for a product another process fetches: who and what (``intake-clms status``)."""
        def set_(p: dict[str, Any]) -> None:
            prod = p.get(self.key, {}).setdefault("products", {}).setdefault(key, {"name": name, "bytes": 0})
            prod["stage"], prod["waiting_for"], prod["waited"] = "waiting", doing, round(waited)
        self.owner._update(self.key, set_, True)

    def on_bytes(self, key: str, done: int, total: int | None) -> None:
        def set_(p: dict[str, Any]) -> None:
            prod = p.get(self.key, {}).setdefault("products", {}).setdefault(key, {"name": key, "stage": "downloading"})
            prod["bytes"], prod["total"] = done, total
        self.owner._update(self.key, set_, False)


def in_use(root: Path) -> set[str]:
    """What live processes read (open requests' products and view versions) or fetch (their preloads' products)."""
    keys: set[str] = set()
    for rec in live_records(root):
        keys.update(rec.get("in_use") or [])
        for pre in (rec.get("preloads") or {}).values():
            keys.update((pre.get("products") or {}).keys())
    return keys


def holder(root: Path, key: str) -> dict[str, Any] | None:
    """The live process (other than this one) whose preload lists product ``key``: pid, host, entry, stage."""
    for rec in live_records(root):
        if rec.get("pid") == os.getpid() and rec.get("host") == socket.gethostname():
            continue
        for pre in (rec.get("preloads") or {}).values():
            prod = (pre.get("products") or {}).get(key)
            if prod is not None and prod.get("stage") not in ("waiting", "pending", "cached"):
                return {"pid": rec.get("pid"), "host": rec.get("host"), "entry": pre.get("entry"),
                        "stage": prod.get("stage"), "bytes": prod.get("bytes"), "total": prod.get("total")}
    return None


def live_records(root: Path) -> list[dict[str, Any]]:
    """The records of processes still running on this host (dead ones are removed); other hosts' as they are."""
    out = []
    folder = root / "running"
    if not folder.is_dir():
        return out
    for path in sorted(folder.glob("*.json")):
        data, _ = read_json(path)
        if not isinstance(data, dict):
            continue
        host, _, pid = path.stem.rpartition(".")
        if host == HOST and pid.isdigit() and not pid_alive(int(pid)):
            path.unlink(missing_ok=True)
            continue
        out.append(data)
    return out
