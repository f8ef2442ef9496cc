"""Streaming a file into the cache: large chunks, flat memory, Range resume, hashes while streaming, rename.

The body goes to ``<final>.part``; after a dropped connection the next request asks
only for the missing bytes (``Range: bytes=<have>-``).  The file is renamed to its
final name only once its size matches ``Content-Length``, so a file without ``.part``
is always complete.  Content hashes (the algorithms the server announced a checksum in,
e.g. md5, else sha256: one hash, not two, which is what keeps pace with the socket) are computed
as the bytes arrive, on a helper thread; a resumed ``.part`` is hashed once from disk first.

A ``416`` on a resume means the ``.part`` does not fit the file on the server (a wrong
length announced earlier): its size is checked against the server's; when they are equal
the ``.part`` is the whole file (a run killed before its rename, or a body announced too
long) and is kept, else the download restarts from zero rather than staying stuck.  A write that the disk refuses (full,
read-only) is a :class:`~intake_clms.errors.LocalStorageError`, never a network retry.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import requests
import urllib3

from ..errors import CancelledError, IntegrityError, ServiceError
from ..store.fsutil import is_local_fault, local_faults, storage_error

log = logging.getLogger(__name__)

#: Bytes asked of the socket per read.  1 MiB, not more: a bigger read1() buffer is a fresh
#: mmap that the kernel fills only in part (page faults on every call), which cost ~2x the
#: CPU per GiB over loopback (bench/download_bench.py); 1 MiB buffers are reused by malloc.
CHUNK = 1024 * 1024
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_UNSATISFIED = re.compile(r"bytes \*/(\d+)")

#: opens the body from a byte offset: (offset) -> streaming response (200, 206 or 416)
Opener = Callable[[int], requests.Response]


@dataclass(frozen=True)
class Downloaded:
    path: Path
    size: int
    hashes: dict[str, str]


def _total(response: requests.Response, offset: int) -> int | None:
    """The full file size announced by the server for this answer."""
    if response.status_code == 206:
        m = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
        if not m or int(m.group(1)) != offset:
            raise IntegrityError(f"server answered a resume from byte {offset} with Content-Range {response.headers.get('Content-Range')!r}")
        return int(m.group(3)) if m.group(3) != "*" else None
    length = response.headers.get("Content-Length")
    return int(length) if length and length.isdigit() else None


class _Digests:
    """Content hashes of a stream, computed on a helper thread so that hashing overlaps the socket reads
    (hashlib releases the GIL on large buffers); ``hexdigests()`` waits for the last bytes."""

    def __init__(self, algorithms: Iterable[str]):
        self.algorithms = tuple(dict.fromkeys(algorithms)) or ("sha256",)
        self.reset()

    def reset(self) -> None:
        """Start over (the download restarts from byte 0, or a .part is hashed from disk)."""
        if getattr(self, "_thread", None) is not None:
            self.close()
        self._hashers = {name: hashlib.new(name) for name in self.algorithms}
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=8)  # at most 8 chunks in flight
        self._thread = threading.Thread(target=self._run, name="intake-clms-hash", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (data := self._queue.get()) is not None:
            for h in self._hashers.values():
                h.update(data)

    def update(self, data: bytes) -> None:
        self._queue.put(data)

    def hash_file(self, path: Path, chunk: int) -> None:
        with open(path, "rb") as fh:
            while data := fh.read(chunk):
                self.update(data)

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def hexdigests(self) -> dict[str, str]:
        self.close()
        return {name: h.hexdigest() for name, h in self._hashers.items()}


def download(
    open_body: Opener,
    final: Path,
    *,
    service: str,
    chunk: int = CHUNK,
    progress: Callable[[int, int | None], None] | None = None,
    cancel: threading.Event | None = None,
    max_resumes: int = 5,
    algorithms: Iterable[str] = (),
) -> Downloaded:
    """Download to ``final`` (resuming ``final.part`` if present). ``progress(done, total)``."""
    cancel = cancel or threading.Event()
    part = final.with_name(final.name + ".part")
    with local_faults(final.parent):
        final.parent.mkdir(parents=True, exist_ok=True)
    hashers = _Digests(algorithms)
    try:
        return _download(open_body, final, part, service, chunk, progress, cancel, max_resumes, hashers)
    finally:
        hashers.close()


def _download(open_body: Opener, final: Path, part: Path, service: str, chunk: int,
              progress: Callable[[int, int | None], None] | None, cancel: threading.Event, max_resumes: int,
              hashers: _Digests) -> Downloaded:
    hashed = 0  # bytes of the .part already fed to the hashers
    drops = restarts = 0
    total: int | None = None
    while True:
        have = part.stat().st_size if part.exists() else 0
        if total is not None and have == total:
            break
        response = open_body(have)
        try:
            if response.status_code == 416:
                m = _UNSATISFIED.match(response.headers.get("Content-Range", ""))
                real = int(m.group(1)) if m else None
                if have and real == have:  # the .part holds the whole file (a kill before its rename): done
                    log.info("%s: %s was complete already (%d bytes)", service, final.name, have)
                    total = have
                    break
                restarts += 1
                if restarts > 2:
                    part.unlink(missing_ok=True)
                    raise IntegrityError(f"the server refuses every resume of {final.name} (HTTP 416); the partial file was removed")
                log.info("%s: the server refused a resume at byte %d (its file has %s bytes); restarting from zero",
                         service, have, real if real is not None else "an unknown number of")
                part.unlink(missing_ok=True)
                hashers.reset()
                hashed, total = 0, None
                continue
            if have and response.status_code == 200:
                log.info("%s: server ignored the Range request; restarting the download", service)
                have = 0
            announced = _total(response, have)
            if total is not None and announced is not None and announced != total:
                raise IntegrityError(f"the file changed size on the server during the download ({total} -> {announced} bytes)")
            total = announced if announced is not None else total
            if have == 0 and hashed:
                hashers.reset()
                hashed = 0
            elif hashed != have:
                hashers.reset()
                with local_faults(part):
                    hashers.hash_file(part, chunk)
                hashed = have
            if progress:
                progress(have, total)
            try:
                fh = open(part, "r+b" if have else "wb")
            except OSError as exc:
                raise storage_error(exc, part) from None
            dropped = False
            with fh:
                fh.seek(have)
                fh.truncate()
                done = have
                raw = response.raw
                while True:
                    if cancel.is_set():
                        raise CancelledError("cancelled")
                    try:
                        data = raw.read1(chunk) if hasattr(raw, "read1") else raw.read(chunk)
                    except (requests.ConnectionError, urllib3.exceptions.HTTPError, OSError) as exc:
                        drops += 1
                        log.info("%s: connection dropped after %d bytes (%s); resuming", service, done, type(exc).__name__)
                        if drops > max_resumes:
                            raise ServiceError(service, None, f"download dropped {drops} times; giving up at {done} bytes") from None
                        dropped = True
                        break
                    if not data:
                        break
                    try:
                        fh.write(data)
                    except OSError as exc:
                        if is_local_fault(exc):
                            raise storage_error(exc, part, (total or done + len(data)) - done) from None
                        raise
                    hashers.update(data)
                    done += len(data)
                    hashed = done
                    if progress:
                        progress(done, total)
                try:
                    fh.flush()
                except OSError as exc:
                    raise storage_error(exc, part) from None
            if dropped:
                continue
        finally:
            response.close()
        size = part.stat().st_size
        if total is None:
            break  # no length announced: trust the clean end of the body
        if size == total:
            break
        if size > total:
            part.unlink()
            raise IntegrityError(f"received {size} bytes, more than the announced {total}")
        drops += 1
        if drops > max_resumes:
            raise IntegrityError(f"download stopped short {drops} times ({size} of {total} bytes)")
        log.info("%s: body ended at %d of %d bytes; resuming", service, size, total)
    size = part.stat().st_size
    if hashed != size:  # e.g. a complete .part from a killed run: hash it once
        hashers.reset()
        hashers.hash_file(part, chunk)
    with local_faults(final):
        os.replace(part, final)
    return Downloaded(final, size, hashers.hexdigests())
