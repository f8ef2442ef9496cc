"""Shared machinery of the sandbox server: its clock, fault plan, request log and file serving.

Each protocol module (``hda``, ``clms_api``, ``cdse``) adds its routes with a
``setup(app, ctx)`` function and uses only what this module offers, so faults,
logging and accelerated time behave the same on every service.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

CHUNK = 1024 * 1024  # bytes per write when a body fault forces us to stream by hand


class Clock:
    """Sandbox time: real seconds times ``speed``, plus manual jumps.

    Queue delays and token lifetimes are measured on this clock, so tests can
    make an hour pass in a second (``speed=3600``) or jump (``advance(3600)``).
    """

    def __init__(self, speed: float = 1.0):
        self.speed = float(speed)
        self._t0 = time.monotonic()
        self._base = time.time()
        self._offset = 0.0
        self._lock = threading.Lock()

    def now(self) -> float:
        """Seconds since the epoch on the sandbox clock."""
        with self._lock:
            return self._base + (time.monotonic() - self._t0) * self.speed + self._offset

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._offset += seconds

    def set_speed(self, speed: float) -> None:
        with self._lock:
            now = self._base + (time.monotonic() - self._t0) * self.speed
            self._t0, self._base, self.speed = time.monotonic(), now, float(speed)


#: Fault kinds understood by the sandbox.  Generic ones are applied by the
#: middleware to any endpoint; body ones by :func:`serve_file`; the others are
#: read by the protocol module that owns the behaviour.
GENERIC_FAULTS = {"status"}  # params: status (int), message, retry_after, headers (dict)
#: The server does the work, then the answer is lost: ``lost_answer`` answers 502 (params: status)
#: or, with ``drop=1``, closes the connection without an answer (what a proxy timeout looks like).
AFTER_FAULTS = {"lost_answer"}
#: ``bad_checksum``: the whole body is sent, but the byte at file offset ``offset``
#: (default: the middle) is flipped, so it no longer matches the announced MD5.
BODY_FAULTS = {"reset", "truncate", "wrong_length", "trickle", "bad_checksum"}  # params: after_bytes, rate (B/s), offset
PROTOCOL_FAULTS = {
    "token_expiry",  # every token issued so far is expired now
    "expired_link",  # params: status (403/404/410)
    "terminal_failure",  # params: status (e.g. Finished_nok / Rejected), message
    "corrupt_zip",  # bad CRC in the next result zip
    "hostile_zip",  # params: variant (slip, absolute, symlink, bomb)
    "server_cancel",  # the server cancels the next queued order/task
    "quota",  # HDA: answer 429 as if the hourly quota were used up; params: reset_after (sandbox s)
    "order_expired",  # HDA: the server forgets the order the call names (404 from then on)
    "token_cut",  # CDSE: the transfer is cut after after_bytes, then access tokens are refused until refreshed
    "connection_cap",  # CDSE: answer 429 as if the user's connection cap were exceeded
}
FAULT_KINDS = GENERIC_FAULTS | AFTER_FAULTS | BODY_FAULTS | PROTOCOL_FAULTS


@dataclass
class Fault:
    kind: str
    service: str = "*"  # hda | clms | cdse | *
    endpoint: str = "*"  # logical endpoint name (see each protocol module) or *
    times: int | None = 1  # None: forever
    params: dict[str, Any] = field(default_factory=dict)
    fired: int = 0

    def matches(self, service: str, endpoint: str) -> bool:
        return self.service in ("*", service) and self.endpoint in ("*", endpoint)


class FaultPlan:
    """Faults queued by tests or the CLI, consumed by the server as they fire."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()

    def add(self, kind: str, service: str = "*", endpoint: str = "*", times: int | None = 1, **params: Any) -> Fault:
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {sorted(FAULT_KINDS)}")
        fault = Fault(kind, service, endpoint, times, params)
        with self._lock:
            self._faults.append(fault)
        return fault

    def take(self, service: str, endpoint: str, kinds: set[str] | frozenset[str]) -> Fault | None:
        """Consume and return the first pending fault of one of ``kinds`` for this endpoint."""
        with self._lock:
            for fault in self._faults:
                if fault.kind in kinds and fault.matches(service, endpoint):
                    fault.fired += 1
                    if fault.times is not None:
                        fault.times -= 1
                        if fault.times <= 0:
                            self._faults.remove(fault)
                    return fault
        return None

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def pending(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    def add_spec(self, spec: str) -> Fault:
        """Add a fault from ``SERVICE.ENDPOINT:KIND[:key=value,...]``, e.g. ``hda.download:reset:after_bytes=1000``."""
        where, _, rest = spec.partition(":")
        kind, _, kv = rest.partition(":")
        service, _, endpoint = where.partition(".")
        params: dict[str, Any] = {}
        for pair in filter(None, kv.split(",")):
            key, _, value = pair.partition("=")
            params[key.strip()] = int(value) if value.strip().lstrip("-").isdigit() else value.strip()
        times = params.pop("times", 1)
        times = None if times in ("inf", "forever", -1) else int(times)
        return self.add(kind.strip(), service or "*", endpoint or "*", times, **params)


@dataclass(frozen=True)
class LogEntry:
    time: float  # sandbox clock
    service: str
    endpoint: str
    method: str
    path: str
    status: int
    bytes_sent: int = 0
    range: str | None = None


class EventLog:
    """Every response the sandbox gave, kept in memory so tests can count calls."""

    def __init__(self) -> None:
        self._entries: list[LogEntry] = []
        self._lock = threading.Lock()

    def record(self, entry: LogEntry) -> None:
        with self._lock:
            self._entries.append(entry)

    def entries(self, service: str | None = None, endpoint: str | None = None, method: str | None = None) -> list[LogEntry]:
        with self._lock:
            return [
                e
                for e in self._entries
                if (service is None or e.service == service)
                and (endpoint is None or e.endpoint == endpoint)
                and (method is None or e.method == method)
            ]

    def count(self, service: str | None = None, endpoint: str | None = None, method: str | None = None) -> int:
        return len(self.entries(service, endpoint, method))

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


@dataclass
class SandboxContext:
    """What every protocol module receives in ``setup(app, ctx)``."""

    data_dir: Path
    clock: Clock
    faults: FaultPlan
    log: EventLog
    base_url: str = ""  # filled in once the server is bound, e.g. http://127.0.0.1:8765
    latency: float = 0.0  # seconds added to every response (real time)
    #: the most items one catalogue page holds (CDSE ``$top``, HDA ``itemsPerPage``, CLMS ``b_size``); a larger
    #: page asked for is cut to this size and the paging links go on from there, as a server with small pages
    #: answers (None: each protocol's own maximum)
    page_cap: int | None = None
    queue_delay: float = 30.0  # sandbox seconds an order/task spends queued + in progress
    token_lifetime: float = 3600.0  # sandbox seconds
    hda_quota: int = 100  # HDA orders per hour per user
    size: str = "tiny"  # product size class for the generator: tiny | small | large
    seed: int = 0
    store: Any = None  # the datagen.ProductStore
    state: dict[str, Any] = field(default_factory=dict)  # per-protocol state, keyed by module name


def tag(request: web.Request, service: str, endpoint: str) -> None:
    """Name the service and logical endpoint of a request (for the log and for fault matching).

    The server's middleware does this from the route name (``"hda.search"``,
    ``"hda.token.identity"``: service, endpoint, optional variant); call it only
    to override.
    """
    request["sandbox_service"] = service
    request["sandbox_endpoint"] = endpoint


def json_error(status: int, body: dict[str, Any] | str, headers: dict[str, str] | None = None) -> web.Response:
    if isinstance(body, str):
        return web.Response(status=status, text=body, headers=headers)
    return web.json_response(body, status=status, headers=headers)


async def apply_generic_fault(request: web.Request, ctx: SandboxContext) -> web.Response | None:
    """Answer with an injected ``status`` fault if one is pending for this endpoint."""
    service = request.get("sandbox_service", "*")
    endpoint = request.get("sandbox_endpoint", "*")
    fault = ctx.faults.take(service, endpoint, GENERIC_FAULTS)
    if fault is None:
        return None
    status = int(fault.params.get("status", 503))
    headers = dict(fault.params.get("headers") or {})
    if "retry_after" in fault.params:
        headers["Retry-After"] = str(fault.params["retry_after"])
    message = fault.params.get("message", "Injected fault")
    return web.json_response({"detail": message, "message": message}, status=status, headers=headers)


def _parse_range(header: str | None, size: int) -> tuple[int, int] | None | str:
    """(start, end inclusive) for a single ``bytes=`` range, None for none, "bad" if unsatisfiable."""
    if not header:
        return None
    if not header.startswith("bytes=") or "," in header:
        return "bad"
    first, _, last = header[6:].partition("-")
    try:
        if first == "":
            length = int(last)
            if length <= 0:
                return "bad"
            return max(0, size - length), size - 1
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return "bad"
    if start >= size or end < start:
        return "bad"
    return start, min(end, size - 1)


async def serve_file(
    request: web.Request,
    path: Path,
    ctx: SandboxContext,
    *,
    filename: str | None = None,
    content_type: str = "application/octet-stream",
    extra_headers: dict[str, str] | None = None,
    fault: Fault | None = None,
) -> web.StreamResponse:
    """Serve a file with Content-Length, Content-Disposition and single-range support.

    Without a pending body fault, aiohttp's FileResponse streams with sendfile
    (hundreds of MB/s over loopback).  With one, the body is written by hand so
    the fault can cut, shorten, mislabel, corrupt or slow it.  ``fault`` forces
    one (a protocol module's own fault, e.g. CDSE's ``token_cut``) instead of
    taking a pending one from the plan.
    """
    service = request.get("sandbox_service", "*")
    endpoint = request.get("sandbox_endpoint", "*")
    size = path.stat().st_size
    headers = {
        "Accept-Ranges": "bytes",
        "Content-Disposition": f'attachment; filename="{filename or path.name}"',
    }
    headers.update(extra_headers or {})
    if fault is None:
        fault = ctx.faults.take(service, endpoint, BODY_FAULTS)
    rng = _parse_range(request.headers.get("Range"), size)
    if rng == "bad":
        return web.Response(status=416, headers={"Content-Range": f"bytes */{size}"})
    if fault is None:
        headers["Content-Type"] = content_type
        response = web.FileResponse(path, headers=headers)  # handles Range itself
        request["sandbox_bytes"] = (rng[1] - rng[0] + 1) if rng else size
        return response
    start, end = rng if rng else (0, size - 1)
    length = end - start + 1
    status = 206 if rng else 200
    if rng:
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    declared = length
    if fault.kind == "wrong_length":
        declared = length + int(fault.params.get("extra", 1024))
    headers["Content-Length"] = str(declared)
    headers["Content-Type"] = content_type
    response = web.StreamResponse(status=status, headers=headers)
    await response.prepare(request)
    limit = length
    if fault.kind in ("reset", "truncate", "token_cut"):
        limit = min(length, int(fault.params.get("after_bytes", length // 2)))
    flip = int(fault.params.get("offset", size // 2)) if fault.kind == "bad_checksum" else -1
    rate = float(fault.params.get("rate", 64 * 1024)) if fault.kind == "trickle" else None
    sent = 0
    with open(path, "rb") as fh:
        fh.seek(start)
        while sent < limit:
            step = min(CHUNK if rate is None else max(1, int(rate / 10)), limit - sent)
            data = fh.read(step)
            if not data:
                break
            at = start + sent
            if at <= flip < at + len(data):
                data = data[: flip - at] + bytes([data[flip - at] ^ 0xFF]) + data[flip - at + 1 :]
            await response.write(data)
            sent += len(data)
            if rate is not None:
                await asyncio.sleep(len(data) / rate)
    request["sandbox_bytes"] = sent
    if fault.kind in ("reset", "token_cut") and request.transport is not None:
        request.transport.abort()  # RST-like: the client sees a dropped connection
        return response
    if fault.kind in ("truncate", "wrong_length") and request.transport is not None:
        request.transport.close()  # fewer bytes than declared, then a clean close
        return response
    await response.write_eof()
    return response
