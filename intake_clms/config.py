"""Where the services are and where the cache lives, read from the environment at call time.

Every URL can be overridden by an environment variable (the official clients'
names where they exist), so the same code runs against the real services, the
sandbox, or any other server.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

DEFAULTS = {
    "HDA_URL": "https://gateway.prod.wekeo2.eu/hda-broker",
    "CLMS_API_URL": "https://land.copernicus.eu/api",
    "CDSE_TOKEN_URL": "https://identity.dataspace.copernicus.eu/auth/realms/CDSE/protocol/openid-connect/token",
    "CDSE_ODATA_URL": "https://catalogue.dataspace.copernicus.eu/odata/v1",
    "CDSE_DOWNLOAD_URL": "https://download.dataspace.copernicus.eu/odata/v1",
    "CDSE_S3_ENDPOINT": "https://eodata.dataspace.copernicus.eu",
}


@dataclass(frozen=True)
class Endpoints:
    hda: str
    clms_api: str
    cdse_token: str
    cdse_odata: str
    cdse_download: str
    cdse_s3: str  # a URL (path-style S3, bucket eodata); the keys are CDSE_S3_ACCESS_KEY / CDSE_S3_SECRET_KEY


def endpoints(env: dict[str, str] | None = None) -> Endpoints:
    """Service base URLs: environment first, then the public defaults."""
    env = os.environ if env is None else env

    def get(name: str) -> str:
        return (env.get(name) or DEFAULTS[name]).rstrip("/")

    return Endpoints(
        hda=get("HDA_URL"),
        clms_api=get("CLMS_API_URL"),
        cdse_token=get("CDSE_TOKEN_URL"),
        cdse_odata=get("CDSE_ODATA_URL"),
        cdse_download=get("CDSE_DOWNLOAD_URL"),
        cdse_s3=get("CDSE_S3_ENDPOINT"),
    )


def cache_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """The download cache: explicit argument, else ``INTAKE_CLMS_CACHE``, else the platform user cache dir."""
    if override:
        return Path(override).expanduser()
    env = os.environ.get("INTAKE_CLMS_CACHE")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_cache_dir("intake-clms", appauthor=False))


def hdarc_path() -> Path:
    return Path(os.environ.get("HDA_RC") or Path.home() / ".hdarc").expanduser()


def clms_key_default_path() -> Path:
    """Where the CLMS service key is looked for when neither an argument nor CLMS_SERVICE_KEY names one."""
    return Path(platformdirs.user_config_dir("intake-clms", appauthor=False)) / "clms-service-key.json"


def available_services(env: dict[str, str] | None = None) -> set[str]:
    """Services for which credentials appear to be at hand (presence only: nothing is read or checked)."""
    env = os.environ if env is None else env
    found = set()
    if (env.get("HDA_USER") and env.get("HDA_PASSWORD")) or hdarc_path().is_file():
        found.add("wekeo")
    if env.get("CLMS_SERVICE_KEY") or clms_key_default_path().is_file():
        found.add("clms")
    if (env.get("CDSE_USERNAME") and env.get("CDSE_PASSWORD")) or _netrc_has(endpoints(env).cdse_token, env):
        found.add("cdse")
    return found


def _netrc_has(url: str, env: dict[str, str] | os._Environ[str]) -> bool:
    """Whether the netrc file (``NETRC`` or ``~/.netrc``) has a login for the host of ``url`` (a cheap text look)."""
    import netrc
    from urllib.parse import urlsplit

    path = Path(env.get("NETRC") or Path.home() / ".netrc").expanduser()
    if not path.is_file():
        return False
    try:
        return netrc.netrc(str(path)).authenticators(urlsplit(url).hostname or "") is not None
    except (netrc.NetrcParseError, OSError):
        return True  # present but unreadable: the read says what is wrong with it
