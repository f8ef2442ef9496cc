"""Which hosts may receive the CDSE bearer token: the one rule for every CDSE request that can be redirected.

Why a rule of its own: ``$value`` on the catalogue host answers 301 to
``zipper.dataspace.copernicus.eu``, which still wants the bearer token (the CDSE
documentation uses ``curl --location-trusted``), while the download service's
307 to a presigned transfer URL (another domain; its query string is the
credential) must get none.  So the token follows a redirect only to a trusted
host: ``CDSE_TRUSTED_HOSTS`` (comma-separated host names, or ``.domain``
suffixes matching that domain and every host under it; default
``.dataspace.copernicus.eu``), plus always the hosts of ``CDSE_ODATA_URL`` and
``CDSE_DOWNLOAD_URL``.  The window reader (remote COG reads) calls the same
:func:`is_trusted` before it hands a token to a redirected host.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

DEFAULT = ".dataspace.copernicus.eu"
ENV = "CDSE_TRUSTED_HOSTS"


def trusted_hosts(env: Mapping[str, str] | None = None, urls: Iterable[str] = ()) -> frozenset[str]:
    """The trusted host names and ``.suffix`` patterns (lower case): ``CDSE_TRUSTED_HOSTS`` (else the
    default), the hosts of ``CDSE_ODATA_URL`` / ``CDSE_DOWNLOAD_URL``, and the hosts of ``urls``."""
    from ...config import endpoints

    env = os.environ if env is None else env
    text = env.get(ENV)
    listed = [h.strip().lower() for h in (DEFAULT if text is None else text).split(",")]
    ends = endpoints(dict(env))
    hosts = {(urlsplit(u).hostname or "").lower() for u in (ends.cdse_odata, ends.cdse_download, *urls)}
    return frozenset(h for h in [*listed, *hosts] if h and h != ".")


def is_trusted(url: str, trusted: Iterable[str]) -> bool:
    """Whether the bearer token may be sent to ``url``'s host (exact name, or under a ``.domain`` pattern)."""
    host = (urlsplit(url).hostname or "").lower().rstrip(".")
    if not host:
        return False
    for pattern in trusted:
        if pattern.startswith("."):
            if host == pattern[1:] or host.endswith(pattern):
                return True
        elif host == pattern:
            return True
    return False
