"""CDSE identity: one token manager per process (per token URL and user), and where credentials come from.

Why one manager: every password grant opens a Keycloak session, sessions are
capped, and clients that logged in per file were banned.  So the password grant
runs once; the access token (about 10 minutes) is renewed with the refresh grant
before its end; a new login happens only after the refresh token's own end (or
when the server refuses the refresh).  Lifetimes are read from ``expires_in`` and
``refresh_expires_in``, and measured on the lifecycle clock (a FakeClock in tests).

A 401 on a request makes :class:`~intake_clms.net.http.HttpClient` call
:meth:`TokenManager.renew` once and retry; a second 401 raises the ServiceError
with the server's status and message.  When several threads hit the 401 of the
same token together, only the first renews it (a thread renews only the token it
was given itself).

Credentials: the ``username``/``password`` settings, then ``CDSE_USERNAME`` /
``CDSE_PASSWORD`` (plus ``CDSE_TOTP`` for a two-factor code), then ``~/.netrc``
(or the file named by ``NETRC``) for the identity host.  The password and the
tokens are never logged or shown in a repr.
"""

from __future__ import annotations

import logging
import netrc
import os
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from ...errors import CredentialsError, ServiceError
from ...net.clock import SYSTEM, Clock
from ...net.http import HttpClient, server_message

log = logging.getLogger(__name__)

SERVICE = "cdse"
CLIENT_ID = "cdse-public"


def netrc_path() -> Path:
    return Path(os.environ.get("NETRC") or Path.home() / ".netrc").expanduser()


def netrc_login(token_url: str) -> tuple[str, str] | None:
    """(login, password) for the identity host in the netrc file, or None (no file, no such machine)."""
    path = netrc_path()
    if not path.is_file():
        return None
    host = urlsplit(token_url).hostname or ""
    try:
        found = netrc.netrc(str(path)).authenticators(host)
    except (netrc.NetrcParseError, OSError) as exc:
        raise CredentialsError(f"cannot read {path}: {getattr(exc, 'msg', exc)}") from None
    if not found or not found[0] or not found[2]:
        return None
    return found[0], found[2]


def read_credentials(token_url: str, settings: dict[str, Any] | None = None,
                     env: dict[str, str] | None = None) -> tuple[str, str, str | None]:
    """(user, password, totp or None): settings, then CDSE_USERNAME/CDSE_PASSWORD, then ~/.netrc."""
    s = settings or {}
    env = os.environ if env is None else env
    totp = s.get("totp") or env.get("CDSE_TOTP") or None
    if s.get("username") and s.get("password"):
        return str(s["username"]), str(s["password"]), totp
    if env.get("CDSE_USERNAME") and env.get("CDSE_PASSWORD"):
        return env["CDSE_USERNAME"], env["CDSE_PASSWORD"], totp
    found = netrc_login(token_url)
    if found:
        return found[0], found[1], totp
    host = urlsplit(token_url).hostname
    raise CredentialsError(
        "no CDSE credentials found; give them (1) as arguments (username=..., password=...), (2) in the "
        "environment variables CDSE_USERNAME and CDSE_PASSWORD (CDSE_TOTP for a two-factor code), or "
        f"(3) in {netrc_path()} as 'machine {host} login ... password ...'"
    )


class TokenManager:
    """Bearer tokens of one CDSE user, shared by every thread and preload of the process."""

    def __init__(self, token_url: str, user: str, password: str, totp: str | None = None, clock: Clock = SYSTEM):
        self.token_url, self.user = token_url, user
        self._password, self._totp = password, totp
        self.clock = clock
        self.http = HttpClient(SERVICE, attempts=3, backoff=0.5, clock=clock)
        self._access: str | None = None
        self._access_end = 0.0
        self._refresh: str | None = None
        self._refresh_end = 0.0
        self._lock = threading.Lock()
        self._given = threading.local()
        self.logins = 0  # password grants so far (tests and the demo read them)
        self.refreshes = 0  # refresh grants so far

    def __repr__(self) -> str:
        return f"TokenManager(user={self.user!r}, token_url={self.token_url!r})"

    # -- TokenSource (what HttpClient asks)

    def headers(self) -> dict[str, str]:
        with self._lock:
            if self._access is None or self.clock.time() >= self._access_end:
                self._renew_locked()
            token = self._access
        self._given.token = token
        return {"Authorization": f"Bearer {token}"}

    def renew(self) -> None:
        """The server refused the token this thread was given: renew it, unless another thread already did."""
        with self._lock:
            if getattr(self._given, "token", None) in (None, self._access):
                self._access = None
                self._renew_locked()

    def update(self, password: str, totp: str | None) -> None:
        with self._lock:
            if password != self._password:
                self._access = self._refresh = None
            self._password, self._totp = password, totp

    # -- grants

    def _renew_locked(self) -> None:
        now = self.clock.time()
        if self._refresh is not None and now < self._refresh_end:
            r = self._grant({"grant_type": "refresh_token", "refresh_token": self._refresh}, "token refresh")
            if r.status_code == 200:
                self.refreshes += 1
                self._store(r.json())
                return
            log.info("%s: the refresh token was refused (%s); logging in again", SERVICE, server_message(r) or r.status_code)
        self._refresh = None
        self._login_locked()

    def _login_locked(self) -> None:
        form = {"grant_type": "password", "username": self.user, "password": self._password}
        if self._totp:
            form["totp"] = str(self._totp)
        r = self._grant(form, "login")
        if r.status_code != 200:
            message = server_message(r) or "refused"
            if r.status_code in (400, 401, 403):
                raise CredentialsError(f"CDSE refused the credentials of user {self.user!r} (HTTP {r.status_code}): {message}")
            raise ServiceError(SERVICE, r.status_code, f"login: {message}")
        self.logins += 1
        log.info("%s: logged in as %s", SERVICE, self.user)
        self._store(r.json())

    def _grant(self, form: dict[str, str], what: str) -> requests.Response:
        return self.http.request("POST", self.token_url, data={"client_id": CLIENT_ID, **form},
                                 ok=(200, 400, 401, 403), what=what)

    def _store(self, body: dict[str, Any]) -> None:
        now = self.clock.time()
        life = float(body.get("expires_in") or 600)
        self._access = str(body["access_token"])
        self._access_end = now + life - _margin(life)
        refresh = body.get("refresh_token")
        if refresh:
            rlife = float(body.get("refresh_expires_in") or 3600)
            self._refresh, self._refresh_end = str(refresh), now + rlife - _margin(rlife)
        else:
            self._refresh = None


def _margin(life: float) -> float:
    """Renew this long before a token's end: 30 s, or a tenth of a short life (a 1-second token is still used)."""
    return min(30.0, life / 10.0)


_MANAGERS: dict[tuple[str, str], TokenManager] = {}
_MANAGERS_LOCK = threading.Lock()


def manager(token_url: str, user: str, password: str, totp: str | None = None, clock: Clock = SYSTEM) -> TokenManager:
    """The process's token manager of this identity endpoint and user (created on first use)."""
    key = (token_url.rstrip("/"), user)
    with _MANAGERS_LOCK:
        found = _MANAGERS.get(key)
        if found is None or found.clock is not clock:  # another clock: only tests run several
            found = _MANAGERS[key] = TokenManager(key[0], user, password, totp, clock)
        else:
            found.update(password, totp)
        return found


def process_token(settings: dict[str, Any] | None = None, refresh: bool = False, clock: Clock = SYSTEM) -> str:
    """The current access token of this process's manager (credentials from settings, env or ~/.netrc).

    For code that cannot hold a manager, e.g. a dask worker's window read over HTTPS: it
    reads the configuration where it runs, so no secret travels in a task graph.
    ``refresh=True`` after a 401: the token is renewed (refresh grant), once per token.
    """
    from ...config import endpoints

    url = endpoints().cdse_token
    user, password, totp = read_credentials(url, settings)
    tokens = manager(url, user, password, totp, clock)
    if refresh:
        with tokens._lock:
            tokens._access = None
            tokens._renew_locked()
    return tokens.headers()["Authorization"].split(" ", 1)[1]


def forget_managers() -> None:
    """Drop every token manager (tests; a process normally keeps its managers to its end)."""
    with _MANAGERS_LOCK:
        _MANAGERS.clear()
