"""CLMS download API authentication: the service key, the RS256 JWT grant, bearer tokens.

A user creates a *service key* once in the portal (My settings -> API tokens)
and saves the JSON.  It is looked for at (1) an explicit path (the source
option ``service_key=``), (2) the file named by ``CLMS_SERVICE_KEY``, (3)
:func:`default_key_path` (``<user config dir>/intake-clms/clms-service-key.json``).

A token is a new grant each time (the API has no refresh token): a JWT signed
with the key (``iss`` = client_id, ``sub`` = user_id, ``aud`` = token_uri,
``exp`` at most an hour after ``iat``) is POSTed to ``token_uri``, but only
when that host is one we expect (land.copernicus.eu, or the host of the
configured ``CLMS_API_URL``), because the key file could send the assertion
anywhere.  Tokens are re-granted when the server says they expired.  Neither
the key, the assertion nor the token is ever logged or put in an error.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ...config import clms_key_default_path, endpoints
from ...errors import CredentialsError, ServiceError
from ...net.http import HttpClient, server_message

log = logging.getLogger(__name__)

SERVICE = "clms"
ENV_VAR = "CLMS_SERVICE_KEY"
REQUIRED = ("client_id", "user_id", "token_uri", "private_key")
PORTAL_HOST = "land.copernicus.eu"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
MAX_LIFE = 3600  # seconds between iat and exp the portal accepts
RENEW_MARGIN = 60.0  # seconds before the announced expiry a token is replaced anyway


def default_key_path() -> Path:
    """The documented default location of the service key."""
    return clms_key_default_path()


def service_key_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Which file holds the service key: explicit path, else ``CLMS_SERVICE_KEY``, else the default location."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return default_key_path()


@dataclass(frozen=True)
class ServiceKey:
    """A validated service key (the private key is kept out of ``repr``)."""

    path: Path
    client_id: str
    user_id: str
    token_uri: str
    private_key: Any = field(repr=False)  # cryptography RSAPrivateKey
    title: str = ""


def _where_looked() -> str:
    return (f"give the path as service_key=..., set {ENV_VAR} to the JSON file's path, or save it as "
            f"{default_key_path()} (create the key on land.copernicus.eu: My settings -> API tokens)")


def load_service_key(path: str | os.PathLike[str] | None = None) -> ServiceKey:
    """Read and check a service-key JSON; every problem is a CredentialsError saying what is wrong."""
    where = service_key_path(path)
    try:
        text = where.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CredentialsError(f"no CLMS service key at {where}; {_where_looked()}") from None
    except OSError as exc:
        raise CredentialsError(f"the CLMS service key {where} cannot be read ({exc.strerror or type(exc).__name__})") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise CredentialsError(f"the CLMS service key {where} is not valid JSON (line {getattr(exc, 'lineno', '?')}, "
                               f"column {getattr(exc, 'colno', '?')}); save the key exactly as the portal showed it") from None
    if not isinstance(data, dict):
        raise CredentialsError(f"the CLMS service key {where} must be a JSON object with {', '.join(REQUIRED)}")
    missing = [name for name in REQUIRED if not isinstance(data.get(name), str) or not data[name].strip()]
    if missing:
        fields = ", ".join(repr(m) for m in missing)
        raise CredentialsError(f"the CLMS service key {where} lacks the field{'s' if len(missing) > 1 else ''} {fields} "
                               f"(a service key holds {', '.join(REQUIRED)})")
    try:
        private = serialization.load_pem_private_key(data["private_key"].encode(), password=None)
    except (ValueError, TypeError):
        raise CredentialsError(f"the CLMS service key {where}: 'private_key' is not a PEM private key "
                               "(expected a PEM block, BEGIN ... PRIVATE KEY, with its line breaks written as '\\n')") from None
    if not isinstance(private, rsa.RSAPrivateKey):
        raise CredentialsError(f"the CLMS service key {where}: 'private_key' is not an RSA key (RS256 needs one)")
    token_uri = data["token_uri"].strip()
    parts = urlsplit(token_uri)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise CredentialsError(f"the CLMS service key {where}: 'token_uri' {token_uri!r} is not an http(s) URL")
    return ServiceKey(where, data["client_id"].strip(), data["user_id"].strip(), token_uri, private,
                      str(data.get("title") or ""))


def check_token_host(token_uri: str, api_url: str | None = None) -> None:
    """Refuse to send an assertion to a host we do not expect (the portal, or the configured API's host)."""
    parts = urlsplit(token_uri)
    host = (parts.hostname or "").lower()
    if host == PORTAL_HOST and parts.scheme == "https":
        return
    api = urlsplit(api_url or endpoints().clms_api)
    if parts.scheme == api.scheme and parts.netloc.lower() == api.netloc.lower():
        return
    raise CredentialsError(
        f"the service key's token_uri points at host {parts.netloc or '?'!r} ({parts.scheme or '?'}), which is neither "
        f"https://{PORTAL_HOST} nor the configured CLMS API host {api.netloc!r}; refusing to send it a signed assertion "
        "(check the key file, or CLMS_API_URL)"
    )


class GrantRefusedError(CredentialsError):
    """The token endpoint refused the key's grant: carries the server's HTTP status and message."""

    def __init__(self, status: int | None, message: str, key_path: Path):
        self.status, self.message = status, message
        super().__init__(f"the CLMS API refused the service key {key_path} (HTTP {status}): {message}. "
                         "Create a new key on land.copernicus.eu (My settings -> API tokens) if it was revoked")


class ClmsAuth:
    """Bearer tokens from a service key: granted when first needed, re-granted when refused (thread-safe).

    Implements the lifecycle's ``TokenSource`` (``headers()`` / ``renew()``).
    """

    def __init__(self, key: ServiceKey, *, api_url: str | None = None, http: HttpClient | None = None,
                 lifetime: int = MAX_LIFE):
        check_token_host(key.token_uri, api_url)
        self.key = key
        # Its own client, without the preload's cancel event: a grant needed by a best-effort
        # server-side cancel must still go out after the user cancelled.
        self.http = http or HttpClient(SERVICE, attempts=3, backoff=0.5, timeout=(10.0, 30.0))
        self.lifetime = max(60, min(int(lifetime), MAX_LIFE))
        self._token: str | None = None
        self._expires = 0.0
        self._margin = RENEW_MARGIN
        self._generation = 0
        self._seen = threading.local()  # the generation each thread last sent
        self._lock = threading.Lock()
        self.grants = 0

    @property
    def user_id(self) -> str:
        return self.key.user_id

    def headers(self) -> dict[str, str]:
        with self._lock:
            if self._token is None or self.http.clock.time() > self._expires - self._margin:
                self._grant_locked()
            self._seen.generation = self._generation
            return {"Authorization": f"Bearer {self._token}"}

    def renew(self) -> None:
        """A new grant, unless another thread already replaced the token this thread was refused with."""
        with self._lock:
            if getattr(self._seen, "generation", None) not in (None, self._generation):
                return
            self._grant_locked()

    def assertion(self, now: float | None = None) -> str:
        """The signed JWT of a grant (never logged); its times are wall-clock times, as the server checks them."""
        now = int(time.time() if now is None else now)
        claims = {"iss": self.key.client_id, "sub": self.key.user_id, "aud": self.key.token_uri,
                  "iat": now, "exp": now + self.lifetime}
        return jwt.encode(claims, self.key.private_key, algorithm="RS256")

    def _grant_locked(self) -> None:
        data = {"grant_type": JWT_BEARER, "assertion": self.assertion()}
        r = self.http.request("POST", self.key.token_uri, data=data, headers={"Accept": "application/json"},
                              ok=(200, 400, 401, 403), what="token grant")
        if r.status_code != 200:
            raise GrantRefusedError(r.status_code, server_message(r) or "refused", self.key.path)
        try:
            body = r.json()
            token = str(body["access_token"])
        except (ValueError, KeyError, TypeError):
            raise ServiceError(SERVICE, r.status_code, "token grant: the answer holds no access_token") from None
        try:
            life = float(body.get("expires_in") or self.lifetime)
        except (TypeError, ValueError):
            life = float(self.lifetime)
        self._token, self._expires = token, self.http.clock.time() + life
        self._margin = min(RENEW_MARGIN, life / 10.0)  # a short-lived token is not renewed before every call
        self._generation += 1
        self.grants += 1
        log.info("clms: granted an API token with the service key %s (valid %.0f s)", self.key.path.name, life)
