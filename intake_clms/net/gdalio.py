"""What GDAL's remote reads report, read safely: HTTP statuses, transient faults, bounded retries, scrubbed logs.

Why a module of its own: GDAL reports a failed ``/vsis3/`` or ``/vsicurl/`` read as an
exception whose *text* mixes the file name, the server's answer and sometimes a
capability URL.  Searching that text for "401" reads the date ``202401010000`` in a
file name as a 401 (and March products as 403).  So a status is taken only from what
GDAL classifies: its error class (``CPLE_AWSObjectNotFound`` is a 404,
``CPLE_AWSAccessDenied`` a 403, ...) or, for ``CPLE_HttpResponseError``, the response
code GDAL states at the start of its message (``HTTP response code: 404``) or the
``<Code>`` of the S3 error document it quotes.  A dropped connection or a truncated
body shows as a short read (``got 0 bytes, expected 5912``) and is retried a bounded
number of times (:func:`retrying`), with GDAL's cache of that file bypassed so the
short bytes are not served again.  With ``CPL_DEBUG=ON`` GDAL logs every URL it
fetches, presigned ones (``X-Amz-Signature``) included, through rasterio's loggers:
:func:`install_scrubber` filters them (query strings and signatures replaced by ``...``).
After a read that failed for good, :func:`forget` drops what GDAL's process-wide cache learnt from it:
otherwise every later read of the file in the process, a rerun after the fault, fails.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import re
from collections.abc import Callable, Iterator
from typing import TypeVar

from .clock import SYSTEM, Clock

log = logging.getLogger(__name__)
T = TypeVar("T")

#: GDAL error classes (CPLErrorNum, cpl_error.h) that name an HTTP status.
CPLE_HTTP_RESPONSE = 11
_CPLE_STATUS = {
    12: 404,  # CPLE_AWSBucketNotFound
    13: 404,  # CPLE_AWSObjectNotFound
    14: 403,  # CPLE_AWSInvalidCredentials
    15: 403,  # CPLE_AWSAccessDenied
    16: 403,  # CPLE_AWSSignatureDoesNotMatch
}
_S3_CODES = {"AccessDenied": 403, "SignatureDoesNotMatch": 403, "InvalidAccessKeyId": 403,
             "RequestTimeTooSkewed": 403, "NoSuchKey": 404, "NoSuchBucket": 404, "SlowDown": 503,
             "InternalError": 500, "ServiceUnavailable": 503}
_RESPONSE_CODE = re.compile(r"^HTTP response code: (\d{3})\b")
_S3_ERROR = re.compile(r"<Code>([A-Za-z]+)</Code>(?:.*?<Message>([^<]*)</Message>)?", re.S)
#: what GDAL (or curl through it) says when a transfer ended early: a reset, a cut or truncated body
_SHORT = re.compile(r"got \d+ bytes, expected \d+|Read error at|after end of file|Failed to read directory|"
                    r"Connection reset|transfer closed|Recv failure|Failure when receiving data|Empty reply|"
                    r"Operation timed out|partial file|TIFFReadEncodedTile\(\) failed", re.I)
_URL_QUERY = re.compile(r"((?:https?|s3)://[^\s?'\"<>]+)\?[^\s'\"<>)]*")
_SECRETS = re.compile(r"(?i)(X-Amz-(?:Signature|Credential|Security-Token)=|\bbearer\s+|"
                      r"\bauthorization:?\s+(?!bearer\b))[^&\s'\"]+")


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _cple(exc: BaseException) -> int | None:
    """The GDAL error class of a rasterio CPLE exception (``errno``), None for others."""
    number = getattr(exc, "errno", None)
    return number if type(exc).__name__.startswith("CPLE_") and isinstance(number, int) else None


def http_status(exc: BaseException) -> int | None:
    """The HTTP status a failed GDAL read reports, from its error class or the response; None if none is stated."""
    for one in _chain(exc):
        number = _cple(one)
        if number in _CPLE_STATUS:
            return _CPLE_STATUS[number]
        text = str(getattr(one, "errmsg", None) or one)
        if number == CPLE_HTTP_RESPONSE or number is None:
            m = _RESPONSE_CODE.match(text)
            if m:
                return int(m.group(1))
        m = _S3_ERROR.search(text)
        if m and m.group(1) in _S3_CODES:
            return _S3_CODES[m.group(1)]
    return None


def transient(exc: BaseException) -> bool:
    """A fault that reading again may cure: a dropped connection or a truncated body, a 429 or a 5xx."""
    status = http_status(exc)
    if status is not None:
        return status == 429 or status >= 500
    return any(_SHORT.search(str(one)) for one in _chain(exc))


def message(exc: BaseException) -> str:
    """GDAL's words for a failure, without rasterio's "see previous exception", S3 XML or any credential."""
    parts: list[str] = []
    for one in _chain(exc):
        text = str(getattr(one, "errmsg", None) or one).strip()
        if not text or "See previous exception" in text or text in parts:
            continue
        parts.append(text)
    return scrub("; ".join(parts) or type(exc).__name__)


def scrub(text: str) -> str:
    """``text`` without query strings, signatures or tokens; an S3 error document as ``Code: Message``."""
    text = re.sub(r"<(Resource|RequestId|HostId|Key|BucketName)>[^<]*</\1>|<\?xml[^>]*>", "", text)
    text = _S3_ERROR.sub(lambda m: f"{m.group(1)}: {m.group(2) or ''}".rstrip(": "), text)
    text = re.sub(r"</?Error>", "", text)
    text = _URL_QUERY.sub(r"\1?...", text)
    return _SECRETS.sub(lambda m: m.group(1) + "...", text)


def retrying(fn: Callable[[int], T], attempts: int = 3, backoff: float = 0.5, clock: Clock = SYSTEM,
             retry_if: Callable[[BaseException], bool] = transient, what: str = "read") -> T:
    """``fn(attempt)`` (1, 2, ...) until it returns; a failure ``retry_if`` accepts is tried again after
    ``backoff * 2**(attempt-1)`` seconds, at most ``attempts`` times in all; the last failure is raised."""
    for attempt in range(1, attempts + 1):
        try:
            return fn(attempt)
        except Exception as exc:
            if attempt >= attempts or not retry_if(exc):
                raise
            delay = backoff * 2 ** (attempt - 1)
            log.info("%s failed (%s); retry %d/%d in %.1f s", what, message(exc)[:200], attempt, attempts - 1, delay)
            clock.sleep(delay)
    raise AssertionError("unreachable")


class ScrubFilter(logging.Filter):
    """Rewrites a log record's text without capability URLs (GDAL's ``CPL_DEBUG`` lines through rasterio)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001 - a record that cannot be formatted is left to logging
            return True
        clean = scrub(text)
        if clean != text:
            record.msg, record.args = clean, ()
        return True


#: the loggers GDAL's messages reach Python through (rasterio's error and environment handlers)
GDAL_LOGGERS = ("rasterio._err", "rasterio._env", "rasterio._base", "rasterio._io", "rasterio.env")
_FILTER = ScrubFilter()


def install_scrubber() -> None:
    """Put :class:`ScrubFilter` on rasterio's GDAL loggers (once; idempotent)."""
    for name in GDAL_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


__all__ = ["http_status", "install_scrubber", "message", "retrying", "scrub", "transient"]


def forget() -> bool:
    """Drop everything GDAL's network file systems keep (sizes, existence, directory listings, bytes read).

    Called after a read that failed for good: ``CPL_VSIL_CURL_NON_CACHED`` alone does not reach what GDAL
    learnt from an error answer (after one, GDAL lists the bucket and takes the file for absent, and a rerun in
    the same process failed with "not a supported format" without asking the server), nor does clearing the
    file's own entries.  rasterio does not expose GDAL's ``VSICurlClearCache``; it is called in the GDAL
    library rasterio loaded (found in ``/proc/self/maps``).  False where it cannot be found (then only a new
    process reads the file again)."""
    clear = _clear()
    if clear is None:
        return False
    clear()
    return True


@functools.lru_cache(maxsize=1)
def _clear() -> Callable[[], None] | None:
    import rasterio  # noqa: F401 - loads its GDAL library

    try:
        with open("/proc/self/maps") as fh:
            libs = sorted({line.split()[-1] for line in fh if "libgdal" in line.rsplit("/", 1)[-1]})
    except OSError:
        return None
    for lib in libs:
        try:
            fn = ctypes.CDLL(lib).VSICurlClearCache  # the library already loaded: the same cache
        except (OSError, AttributeError):
            continue
        fn.argtypes, fn.restype = [], None
        return fn
    return None
