"""GDAL settings and credentials for reading CDSE COGs in place, scoped to one read.

Why scoped: users keep their own ``AWS_*`` variables and GDAL settings for other
buckets, and tools that overwrite them process-wide are a known complaint.  So the
S3 keys, the endpoint and our tuning live only inside a ``rasterio.Env`` opened
around each read (:func:`gdal_env`); ``os.environ`` is never written and the GDAL
configuration is restored when the block ends.

Why a reference and not the secret: a window read is a dask task, and a task graph
is pickled, shipped to workers, logged and shown.  :class:`CredentialRef` carries
only *where* the secret is: a key of a per-process registry (filled by the process
that built the graph, e.g. from ``username=``/``password=`` keywords) and, failing
that, the environment variable names the worker reads in its own environment
(``CDSE_S3_ACCESS_KEY`` / ``CDSE_S3_SECRET_KEY`` for S3; ``CDSE_USERNAME`` /
``CDSE_PASSWORD`` or ``~/.netrc`` for the bearer token of the HTTPS path, through
the process's one token manager).  Its pickle and repr hold no secret.

Two ways in, chosen by :func:`mode` where the graph is built: S3 (``/vsis3/``, path
style, endpoint from ``CDSE_S3_ENDPOINT``) when both S3 keys are set, else HTTPS
``Products(<Id>)/Nodes(..)/Nodes(..)/$value`` through ``/vsicurl/`` with the bearer
token in ``GDAL_HTTP_HEADERS`` (curl keeps an ``Authorization`` header on the
original host: the download service's redirect to its transfer URL, whose query
is the credential, gets no token).
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ...errors import CredentialsError

S3, HTTPS = "s3", "https"
ACCESS_KEY, SECRET_KEY = "CDSE_S3_ACCESS_KEY", "CDSE_S3_SECRET_KEY"
BUCKET = "eodata"

#: GDAL's network settings for our reads (each can be overridden by the user's own GDAL config or env).
TUNING: dict[str, str] = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",  # no directory listing, no side-car probes (.aux.xml, .ovr)
    "GDAL_PAM_ENABLED": "NO",  # never write .aux.xml beside a remote file
    "GDAL_HTTP_MULTIRANGE": "SERIAL",  # one request at a time: a read holds exactly one connection of the budget
    "GDAL_HTTP_MULTIPLEX": "NO",
    "GDAL_HTTP_MAX_RETRY": "4",  # 429 / 5xx: bounded retries with GDAL's exponential backoff
    "GDAL_HTTP_RETRY_DELAY": "1",
    "GDAL_HTTP_TIMEOUT": "120",
    "GDAL_HTTP_CONNECTTIMEOUT": "30",
    # Read granularity of /vsicurl/ and /vsis3/ (16 KiB by default): a COG's header fits in 4 KiB and
    # every tile is read rounded to this size, so 4 KiB cuts the overhead (measured in the README).
    # GDAL reads it once per process, at its first network read.
    "CPL_VSIL_CURL_CHUNK_SIZE": "4096",
    "GDAL_INGESTED_BYTES_AT_OPEN": "4096",
}

_REGISTRY: dict[str, dict[str, str]] = {}
_REGISTRY_LOCK = threading.Lock()


def keys_at_hand(env: Mapping[str, str] | None = None) -> bool:
    """Both S3 keys are set (then window reads go through S3, else through HTTPS with the bearer token)."""
    env = os.environ if env is None else env
    return bool(env.get(ACCESS_KEY) and env.get(SECRET_KEY))


def register(settings: Mapping[str, Any]) -> str:
    """Keep credentials given as keywords in this process's registry; the key a :class:`CredentialRef` carries.

    Only this process can resolve it: a worker elsewhere falls back to its own environment.
    """
    wanted = {k: str(v) for k, v in settings.items()
              if k in ("username", "password", "totp", "s3_access_key", "s3_secret_key") and v}
    if not wanted:
        return ""
    with _REGISTRY_LOCK:
        for key, value in _REGISTRY.items():
            if value == wanted:
                return key
        key = uuid.uuid4().hex
        _REGISTRY[key] = wanted
        return key


@dataclass(frozen=True)
class CredentialRef:
    """Where a worker finds the credentials of a read: a registry key and env var names, never the secret."""

    mode: str  # s3 | https
    registry: str = ""  # a key of this process's registry ("" = the environment only)

    def settings(self) -> dict[str, str]:
        with _REGISTRY_LOCK:
            return dict(_REGISTRY.get(self.registry, {}))

    def s3_keys(self) -> tuple[str, str]:
        found = self.settings()
        access = found.get("s3_access_key") or os.environ.get(ACCESS_KEY)
        secret = found.get("s3_secret_key") or os.environ.get(SECRET_KEY)
        if not (access and secret):
            raise CredentialsError(
                f"this window read goes through CDSE's S3 but {ACCESS_KEY} and {SECRET_KEY} are not set where it "
                f"runs (pid {os.getpid()}); set them in the environment of every dask worker")
        return access, secret

    def token(self, refresh: bool = False) -> str:
        from .auth import process_token

        return process_token(self.settings() or None, refresh=refresh)

    def __repr__(self) -> str:
        return f"CredentialRef(mode={self.mode!r}, from={'registry+env' if self.registry else 'env'})"


def mode(env: Mapping[str, str] | None = None) -> str:
    """S3 when both keys are at hand, else HTTPS."""
    return S3 if keys_at_hand(env) else HTTPS


def vsi_path(file: Mapping[str, Any], how: str) -> str:
    """GDAL's path of one product file: ``/vsis3/eodata/<key>`` or ``/vsicurl/<href>``."""
    if how == S3:
        key = str(file["key"]).lstrip("/")
        if key.startswith(BUCKET + "/"):
            key = key[len(BUCKET) + 1:]
        return f"/vsis3/{file.get('bucket') or BUCKET}/{key}"
    return f"/vsicurl/{file['href']}"


def _user_has(name: str) -> bool:
    """The user set this GDAL option (environment or GDAL config): theirs wins over our tuning."""
    if os.environ.get(name):
        return True
    try:
        from rasterio.env import get_gdal_config

        return get_gdal_config(name) is not None
    except Exception:  # noqa: BLE001 - no GDAL env yet: nothing set
        return False


def gdal_env(ref: CredentialRef, token: str | None = None) -> Any:
    """A ``rasterio.Env`` for one read: the endpoint, the credentials and :data:`TUNING`, undone at its end.

    S3 keys go in a rasterio ``AWSSession`` (rasterio refuses them as plain options when
    boto3 is installed), as GDAL config options of the block: ``os.environ`` is not touched.
    """
    import rasterio
    from rasterio.session import AWSSession

    from ...config import endpoints

    options = {k: v for k, v in TUNING.items() if not _user_has(k)}
    if ref.mode == S3:
        access, secret = ref.s3_keys()
        url = urlsplit(endpoints().cdse_s3)
        session = AWSSession(aws_access_key_id=access, aws_secret_access_key=secret, region_name="default",
                             endpoint_url=url.netloc)  # host:port: GDAL's AWS_S3_ENDPOINT takes no scheme
        return rasterio.Env(session=session, AWS_HTTPS="NO" if url.scheme == "http" else "YES",
                            AWS_VIRTUAL_HOSTING="FALSE", AWS_NO_SIGN_REQUEST="NO", **options)
    bearer = token if token is not None else ref.token()
    return rasterio.Env(GDAL_HTTP_HEADERS=f"Authorization: Bearer {bearer}", **options)


__all__ = ["ACCESS_KEY", "HTTPS", "S3", "SECRET_KEY", "TUNING", "CredentialRef", "gdal_env", "keys_at_hand", "mode",
           "register", "vsi_path"]
