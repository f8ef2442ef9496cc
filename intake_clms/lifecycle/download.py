"""Streaming a file into the cache: large chunks, flat memory, Range resume, size checks, atomic rename.

The body goes to ``<final>.part``; after a dropped connection the next request
asks only for the missing bytes (``Range: bytes=<have>-``).  The file is renamed
to its final name only once its size matches ``Content-Length``, so a file
without ``.part`` is always complete.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path

import requests
import urllib3

from ..errors import ServiceError
from .errors import CancelledError, IntegrityError

log = logging.getLogger(__name__)

#: Bytes asked of the socket per read.  1 MiB, not more: a bigger read1() buffer is a fresh
#: mmap that the kernel fills only in part (page faults on every call), which cost ~2x the
#: CPU per GiB over loopback (bench/download_bench.py); 1 MiB buffers are reused by malloc.
CHUNK = 1024 * 1024
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")

#: opens the body from a byte offset: (offset) -> streaming response (200 or 206)
Opener = Callable[[int], requests.Response]


def _total(response: requests.Response, offset: int) -> int | None:
    """The full file size announced by the server for this answer."""
    if response.status_code == 206:
        m = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
        if not m or int(m.group(1)) != offset:
            raise IntegrityError(f"server answered a resume from byte {offset} with Content-Range {response.headers.get('Content-Range')!r}")
        return int(m.group(3)) if m.group(3) != "*" else None
    length = response.headers.get("Content-Length")
    return int(length) if length and length.isdigit() else None


def download(
    open_body: Opener,
    final: Path,
    *,
    service: str,
    chunk: int = CHUNK,
    progress: Callable[[int, int | None], None] | None = None,
    cancel: threading.Event | None = None,
    max_resumes: int = 5,
) -> int:
    """Download to ``final`` (resuming ``final.part`` if present); returns the size. ``progress(done, total)``."""
    cancel = cancel or threading.Event()
    part = final.with_name(final.name + ".part")
    final.parent.mkdir(parents=True, exist_ok=True)
    drops = 0
    total: int | None = None
    while True:
        have = part.stat().st_size if part.exists() else 0
        if total is not None and have == total:
            break
        response = open_body(have)
        try:
            if have and response.status_code == 200:
                log.info("%s: server ignored the Range request; restarting the download", service)
                have = 0
            announced = _total(response, have)
            if total is not None and announced is not None and announced != total:
                raise IntegrityError(f"the file changed size on the server during the download ({total} -> {announced} bytes)")
            total = announced if announced is not None else total
            if progress:
                progress(have, total)
            with open(part, "r+b" if have else "wb") as fh:
                fh.seek(have)
                fh.truncate()
                done = have
                try:
                    raw = response.raw
                    while True:
                        if cancel.is_set():
                            raise CancelledError("cancelled")
                        data = raw.read1(chunk) if hasattr(raw, "read1") else raw.read(chunk)
                        if not data:
                            break
                        fh.write(data)
                        done += len(data)
                        if progress:
                            progress(done, total)
                except (requests.ConnectionError, urllib3.exceptions.HTTPError, OSError) as exc:
                    if isinstance(exc, CancelledError):
                        raise
                    drops += 1
                    log.info("%s: connection dropped after %d bytes (%s); resuming", service, done, type(exc).__name__)
                    if drops > max_resumes:
                        raise ServiceError(service, None, f"download dropped {drops} times; giving up at {done} bytes") from None
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
    os.replace(part, final)
    return size
