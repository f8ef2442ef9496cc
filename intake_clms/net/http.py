"""A polite HTTP client: bounded retries of transient failures only, errors that carry the server's message.

Transient means a connection error, 408, 429 or a 5xx; any other 4xx is the
caller's mistake and is raised at once.  Waits honour ``Retry-After`` and the
HDA ``X-Quota-*`` headers, and stop early when the preload is cancelled.
URLs and tokens never reach the log or the error messages (download links can
be credentials).
"""

from __future__ import annotations

import datetime as dt
import email.utils
import logging
import threading
import time
from typing import Any, Protocol

import requests

from ..errors import AmbiguousOrderError, CancelledError, QuotaError, ServiceError, ServiceUnreachableError
from .clock import SYSTEM, Clock

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504}) | frozenset(range(505, 600))


class TokenSource(Protocol):
    """Gives the Authorization header at request time, and renews it when the server refuses it."""

    def headers(self) -> dict[str, str]: ...

    def renew(self) -> None: ...


def server_message(response: requests.Response) -> str:
    """The human part of an error answer (JSON detail/message/error_description, else the text)."""
    try:
        body = response.json()
    except ValueError:
        return (response.text or response.reason or "").strip()[:500]
    if isinstance(body, dict):
        for key in ("detail", "message", "msg", "error_description", "error", "title"):
            if body.get(key):
                return str(body[key])[:500]
    return str(body)[:500]


def retry_after(response: requests.Response, now: float | None = None) -> float | None:
    """Seconds asked by ``Retry-After`` (delta or HTTP date), or None."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - (time.time() if now is None else now)) if when else None


def quota_reset(response: requests.Response) -> float | None:
    """Epoch seconds when the quota frees, from ``X-Quota-Reset`` (epoch ms, as hda 2.40 reads it)."""
    value = response.headers.get("X-Quota-Reset")
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number / 1000.0 if number > 1e11 else number


class HttpClient:
    """``requests`` with the retry, auth-renewal and cancellation rules of the lifecycle."""

    def __init__(
        self,
        service: str,
        *,
        session: requests.Session | None = None,
        attempts: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        quota_wait: float = 120.0,
        timeout: tuple[float, float] = (10.0, 60.0),
        cancel: threading.Event | None = None,
        clock: Clock | None = None,
    ):
        self.service = service
        self.clock = clock or SYSTEM
        self.session = session or requests.Session()
        self.attempts, self.backoff, self.max_backoff = attempts, backoff, max_backoff
        self.quota_wait = quota_wait
        self.timeout = timeout
        self.cancel = cancel or threading.Event()

    def sleep(self, seconds: float) -> None:
        """Wait, but wake up (and raise) as soon as the preload is cancelled."""
        self.clock.sleep(seconds, self.cancel)

    def request(
        self,
        method: str,
        url: str,
        *,
        auth: TokenSource | None = None,
        ok: tuple[int, ...] = (200,),
        what: str = "request",
        idempotent: bool = True,
        **kwargs: Any,
    ) -> requests.Response:
        """Send with retries; returns a response whose status is in ``ok``, else raises ServiceError.

        ``idempotent=False`` (an order POST): a failure after which the server may have acted
        (a 5xx, a connection dropped after sending, a read timeout) is not retried but raised as
        :class:`AmbiguousOrderError`, so the caller looks for what the server took first.
        """
        kwargs.setdefault("timeout", self.timeout)
        renewed = False
        attempt = 0
        while True:
            if self.cancel.is_set():
                raise CancelledError("cancelled")
            attempt += 1
            headers = dict(kwargs.pop("headers", None) or {})
            if auth is not None:
                headers.update(auth.headers())
            try:
                response = self.session.request(method, url, headers=headers, **kwargs)
            except (requests.ConnectionError, requests.Timeout) as exc:
                kwargs["headers"] = {k: v for k, v in headers.items() if k != "Authorization"}
                if not idempotent and not isinstance(exc, requests.ConnectTimeout) and not _never_sent(exc):
                    raise AmbiguousOrderError(self.service, None, f"{what}: the answer was lost ({type(exc).__name__})") from None
                if attempt >= self.attempts:
                    raise ServiceUnreachableError(self.service, None, f"{what}: connection failed after {attempt} attempts "
                                                  f"({type(exc).__name__})") from None
                self._backoff(attempt, None, what, "connection error")
                continue
            kwargs["headers"] = {k: v for k, v in headers.items() if k != "Authorization"}
            status = response.status_code
            if status in ok:
                return response
            message = server_message(response)
            if status in (401, 403) and auth is not None and not renewed:
                response.close()
                renewed = True
                log.info("%s: %s answered %d, renewing the token", self.service, what, status)
                auth.renew()
                attempt -= 1
                continue
            if status == 429 and response.headers.get("X-Quota-Reset"):
                self._quota(response, what, message)
                attempt -= 1  # the quota wait is not a failed attempt
                continue
            if not idempotent and status >= 500:
                response.close()
                raise AmbiguousOrderError(self.service, status, f"{what}: {message}" if message else what)
            if status in RETRY_STATUS and attempt < self.attempts:
                wait = retry_after(response, self.clock.time())
                response.close()
                self._backoff(attempt, wait, what, f"HTTP {status}")
                continue
            response.close()
            raise ServiceError(self.service, status, f"{what}: {message}" if message else what)

    def _backoff(self, attempt: int, wait: float | None, what: str, why: str) -> None:
        delay = min(self.max_backoff, self.backoff * 2 ** (attempt - 1)) if wait is None else min(wait, self.max_backoff * 4)
        log.info("%s: %s failed (%s); retry %d/%d in %.1f s", self.service, what, why, attempt, self.attempts - 1, delay)
        self.sleep(delay)

    def _quota(self, response: requests.Response, what: str, message: str) -> None:
        reset = quota_reset(response)
        response.close()
        limit = response.headers.get("X-Quota-Limit", "?")
        wait = (reset - self.clock.time()) if reset is not None else None
        if wait is None or wait > self.quota_wait:
            when = dt.datetime.fromtimestamp(reset, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") if reset else "unknown"
            raise QuotaError(
                self.service,
                429,
                f"{what}: download quota used up ({limit} per hour); it frees at {when}"
                + (f" (in {wait / 60:.0f} min)" if wait is not None else "")
                + f"; run again then. Server said: {message}",
            )
        log.warning("%s: quota used up; waiting %.0f s for it to free", self.service, max(wait, 0))
        self.sleep(max(wait, 0.0) + 0.5)


def _never_sent(exc: BaseException) -> bool:
    """A connection that was never made (refused, name not resolved): the request did not reach the server."""
    text = repr(exc)
    return "NewConnectionError" in text or "NameResolutionError" in text or "Connection refused" in text
