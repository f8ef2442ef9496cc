"""How CDSE's COGs are reached for window reads: the service's :class:`RasterAccess` for the one raster reader.

Why scoped settings: users keep their own ``AWS_*`` variables and GDAL settings for
other buckets, and tools that overwrite them process-wide are a known complaint.  So
the S3 keys, the endpoint and our tuning live only inside a ``rasterio.Env`` opened
around each read (:meth:`CdseAccess.env`); ``os.environ`` is never written and the
GDAL configuration is restored when the block ends.  S3 keys reach GDAL through a small
rasterio ``Session`` of our own (:class:`_Keys`), so no boto3 is needed.

Two ways in, chosen per read: S3 (``/vsis3/``, path style, endpoint from
``CDSE_S3_ENDPOINT``) when both S3 keys are set and no ``username``/``password`` was
given for this read, else HTTPS ``Products(<Id>)/Nodes(..)/Nodes(..)/$value`` through
``/vsicurl/`` with the bearer token of the service's token manager in
``GDAL_HTTP_HEADERS`` (curl keeps an ``Authorization`` header on the original host: the
download service's redirect to its transfer URL, whose query is the credential, gets no
token).  Credentials given for CDSE are always the ones used: never silently ignored.

Reads happen in the engine's process (the window stage), never in a dask task, so no
credential is ever pickled; an access's repr names the mode only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

from ...errors import CredentialsError, ServiceError

log = logging.getLogger(__name__)

S3, HTTPS = "s3", "https"
ACCESS_KEY, SECRET_KEY = "CDSE_S3_ACCESS_KEY", "CDSE_S3_SECRET_KEY"
BUCKET = "eodata"

#: GDAL's network settings for our reads (each can be overridden by the user's own GDAL config or env).
TUNING: dict[str, str | int] = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",  # no directory listing, no side-car probes (.aux.xml, .ovr)
    "GDAL_PAM_ENABLED": "NO",  # never write .aux.xml beside a remote file
    "GDAL_HTTP_MULTIRANGE": "SERIAL",  # one request at a time: a read holds exactly one connection of the budget
    "GDAL_HTTP_MULTIPLEX": "NO",
    "GDAL_HTTP_MAX_RETRY": "4",  # 429 / 5xx: bounded retries with GDAL's exponential backoff
    "GDAL_HTTP_RETRY_DELAY": "1",
    "GDAL_HTTP_TIMEOUT": "120",
    "GDAL_HTTP_CONNECTTIMEOUT": "30",
    "CPL_VSIL_CURL_USE_HEAD": "NO",  # no HEAD before the first read: a window costs one header and one tile read
    "GDAL_CACHEMAX": 64,  # MB of GDAL block cache (an int: rasterio refuses a string): a window is read once
    # Read granularity of /vsicurl/ and /vsis3/ (16 KiB by default): a COG's header fits in 4 KiB and
    # every tile is read rounded to this size, so 4 KiB cuts the overhead.
    "CPL_VSIL_CURL_CHUNK_SIZE": "4096",
    "GDAL_INGESTED_BYTES_AT_OPEN": "4096",
}
#: reads of one file in all when the transfer is reset or its body truncated
READS = 3



def keys_at_hand(env: Mapping[str, str] | None = None) -> bool:
    """Both S3 keys are set (then window reads go through S3, else through HTTPS with the bearer token)."""
    env = os.environ if env is None else env
    return bool(env.get(ACCESS_KEY) and env.get(SECRET_KEY))


def mode(settings: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None) -> str:
    """S3 when both keys are at hand and no CDSE login was given for this read, else HTTPS."""
    if settings and settings.get("username") and settings.get("password"):
        return HTTPS
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
    if name == "GDAL_CACHEMAX":  # rasterio reports GDAL's cache size whether or not anyone set it: only the
        return False  # environment says the user did (else our cap was never applied: GDAL's 5% of RAM was)
    try:
        from rasterio.env import get_gdal_config

        return get_gdal_config(name) is not None
    except Exception:  # noqa: BLE001 - no GDAL env yet: nothing set
        return False


def _keys_session(access: str, secret: str, endpoint: str, https: bool) -> Any:
    """A rasterio Session handing GDAL the S3 keys and endpoint as options of one Env (no boto3)."""
    from rasterio.session import Session

    class _Keys(Session):
        def __init__(self) -> None:
            self._options = {"AWS_ACCESS_KEY_ID": access, "AWS_SECRET_ACCESS_KEY": secret, "AWS_S3_ENDPOINT": endpoint,
                             "AWS_HTTPS": "YES" if https else "NO", "AWS_VIRTUAL_HOSTING": "FALSE",
                             "AWS_REGION": "default", "AWS_NO_SIGN_REQUEST": "NO"}

        @classmethod
        def hascreds(cls, config: Any) -> bool:
            return True

        @property
        def credentials(self) -> dict[str, str]:
            return dict(self._options)

        def get_credential_options(self) -> dict[str, str]:
            return dict(self._options)

        def __repr__(self) -> str:
            return "CdseS3Keys(...)"

    return _Keys()


class CdseAccess:
    """The CDSE service's :class:`~intake_clms.assemble.raster.RasterAccess`: settings, credentials, budget."""

    def __init__(self, how: str, tokens: Any, budget: Any, cancel: threading.Event | None = None,
                 s3_keys: tuple[str, str] | None = None):
        self.mode = how
        self._tokens, self._budget, self._cancel = tokens, budget, cancel
        self._keys = s3_keys
        self._again = threading.local()  # per reading thread: renewed once, read the next time past GDAL's cache
        if how == S3 and not s3_keys:
            access, secret = os.environ.get(ACCESS_KEY), os.environ.get(SECRET_KEY)
            if not (access and secret):
                raise CredentialsError(f"window reads through CDSE's S3 need {ACCESS_KEY} and {SECRET_KEY}")
            self._keys = (access, secret)

    def __repr__(self) -> str:
        return f"CdseAccess(mode={self.mode!r})"

    def __reduce__(self) -> Any:  # never pickled with its secrets: a read runs where the service runs
        raise TypeError("a CDSE raster access holds credentials and is not pickled")

    def slot(self, opening: bool = False) -> contextlib.AbstractContextManager[None]:
        return self._budget.slot(self._cancel, opening)

    @contextlib.contextmanager
    def env(self) -> Iterator[None]:
        import rasterio

        from ...config import endpoints

        from ...net import gdalio

        gdalio.install_scrubber()  # CPL_DEBUG output reaches the log without capability URLs
        options = {k: v for k, v in TUNING.items() if not _user_has(k)}
        if getattr(self._again, "fresh", False):  # a read again: GDAL's cache of what failed is not served
            options["CPL_VSIL_CURL_NON_CACHED"] = "/vsis3/:/vsicurl/"
            self._again.fresh = False
        if self.mode == S3:
            assert self._keys is not None
            url = urlsplit(endpoints().cdse_s3)
            session = _keys_session(self._keys[0], self._keys[1], url.netloc, url.scheme != "http")
            with rasterio.Env(session=session, **options):
                yield
            return
        with rasterio.Env(GDAL_HTTP_HEADERS=f"Authorization: {self._tokens.headers()['Authorization']}", **options):
            yield

    def failed(self, exc: Exception, shown: str, attempt: int) -> bool:
        """A 401 (the token ran out) or a 403 (the transfer link expired) over HTTPS renews the token and the
        ``$value`` link once; a reset or truncated body is read again (:data:`READS` in all); anything else is the
        service's error, its status from GDAL's error class or the response (:mod:`~intake_clms.net.gdalio`)."""
        from ...net import gdalio
        from ...net.clock import SYSTEM

        if attempt == 1:
            self._again.renewed = False
        status = gdalio.http_status(exc)
        if status in (401, 403) and self.mode == HTTPS and not self._again.renewed:
            self._again.renewed = self._again.fresh = True
            self._tokens.renew()
            return True
        if gdalio.transient(exc) and attempt < READS:
            log.info("cdse: reading %s failed (%s); reading it again (%d/%d)", shown, gdalio.message(exc)[:200],
                     attempt, READS - 1)
            self._again.fresh = True
            SYSTEM.sleep(0.5 * attempt, self._cancel)
            return True
        where = "CDSE S3" if self.mode == S3 else "CDSE HTTPS"
        gdalio.forget()  # a rerun reads the file, not what GDAL learnt from the failure
        raise ServiceError("cdse", status, f"{where} read of {shown} failed: {gdalio.message(exc)[:300]}") from None


__all__ = ["ACCESS_KEY", "HTTPS", "S3", "SECRET_KEY", "TUNING", "CdseAccess", "keys_at_hand", "mode", "vsi_path"]
