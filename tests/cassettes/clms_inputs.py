"""What the CLMS download API cassette scenarios ask, shared by the recorder and the replay tests.

Both sides build the client with :func:`client` and ask the same requests, so a
replay sends exactly what was recorded.  The catalogue listing is recorded once
(scenario ``grant_listing``, small pages); every other scenario starts from a
listing already in the client's disk cache (:func:`seed_listing`), as a
second run of a real user would, so the listing is not repeated in each
cassette.  Service keys for the replay are throwaway RSA keys written by
:func:`write_key`: the grant's assertion is scrubbed, so any key matches.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from intake_clms.services.clms_api import DEFAULT_LINK_MAX_AGE, ClmsApiService
from intake_clms.services.clms_api.auth import ClmsAuth, load_service_key
from intake_clms.services.clms_api.listing import ApiDataset, listing_cache_path, save_listing
from intake_clms.net.http import HttpClient
from intake_clms.params import Request

from .stable import FIXED_BASE

SERVICE = "clms"
ID_KEYS = ("TaskID",)  # random task ids the sandbox hands out, renamed task-0001, ...
ID_PREFIX = "task"
STAMP_KEYS = ("RegistrationDateTime", "FinalizationDateTime")  # sandbox-clock times, fixed in the cassettes
API = f"{FIXED_BASE}/api"
TOKEN_URI = f"{FIXED_BASE}/@@oauth2-token"

#: @search page size while recording the listing: the sandbox's 64 datasets span pages at b_start 0, 25, 50.
LISTING_PAGE = 25
LISTING_COUNT, LISTING_STARTS = 64, [0, 25, 50]

FOREST = "forest-type-2015"
TILE = "FTY_2015_100m_eu_03035_d02_E30N20"  # a pre-packaged file; its result zip is a few KB
NOT_DOWNLOADABLE = "FTY_2015_020m_eu_03035_d04_Full"
ONE_FILE = Request.build(FOREST, file=TILE)
#: A cut-to-order request (one general item) that stays queued while the scenario runs.
CUT = Request.build(FOREST, bbox=[5.0, 45.0, 10.0, 50.0], crs="EPSG:3035")
#: LANDCOVER (auxiliary API): the list holds every year of the tile; the client keeps 2018 and 2019.
LANDCOVER = Request.build("global-dynamic-land-cover", bbox=[5.0, 45.0, 10.0, 50.0], start="2018-01-01", end="2019-12-31")
LANDCOVER_LISTED, LANDCOVER_KEPT = 5, ["2018", "2019"]
SWI = "soil-water-index-12-5km-10-daily-v3"
#: LEGACY (auxiliary API): 10-daily files between the dates; none before the dataset starts.
LEGACY = Request.build(SWI, bbox=[5.0, 45.0, 10.0, 50.0], start="2020-01-01", end="2020-01-31")
LEGACY_DAYS = ["2020-01-01", "2020-01-11", "2020-01-21"]
LEGACY_EMPTY = Request.build(SWI, bbox=[5.0, 45.0, 10.0, 50.0], start="1990-01-01", end="1990-01-31")
NO_CONTENT = "There is no content between the selected dates"

UNKNOWN_TASK = "12345678901"  # a TaskID the server never handed out
RANGE_OFFSET = 1000  # a resumed download asks for the bytes from here
DEAD_LINK_STATUS = 410
NOK_MESSAGE = "Error in the FME process: the clip step ran out of memory"
REJECTED_MESSAGE = "The request was rejected: the area is outside the product's extent"
OTHER_USER = "clms-other-user"  # owns a task our user may not cancel
REFUSED_GRANT = "The assertion signature does not match the service key"
DUPLICATED = "same thing at least twice"
SEARCH_DOWN = "search unavailable"
#: find_order(hit, since) with ``since`` this many seconds after the task was registered: too late, not found.
FIND_LATER = 3600.0

SCENARIOS = (
    "grant_listing",
    "prepackaged_download",
    "duplicated_reuse",
    "terminal_failure",
    "token_expiry",
    "cancel",
    "auxiliary",
)


def new_private_pem() -> str:
    """A fresh RSA private key (PEM, as the portal's service keys hold it)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    ).decode()


def write_key(path: Path, *, client_id: str, user_id: str, token_uri: str, private_pem: str) -> Path:
    """A service-key JSON file (mode 0600) shaped like the portal's."""
    doc = {"client_id": client_id, "user_id": user_id, "token_uri": token_uri, "private_key": private_pem,
           "key_id": f"{client_id}-key", "title": "cassette key"}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(doc, fh)
    return path


def client(api: str, key_path: Path, cache_dir: Path, *, link_max_age: float = DEFAULT_LINK_MAX_AGE,
           cancel: threading.Event | None = None) -> ClmsApiService:
    """Our CLMS API service as ``clms_api.connect`` builds it, without retry waits (``backoff=0``)."""
    http = HttpClient(SERVICE, attempts=3, backoff=0.0, cancel=cancel)
    auth = ClmsAuth(load_service_key(key_path), api_url=api,
                    http=HttpClient(SERVICE, session=http.session, attempts=3, backoff=0.0))
    return ClmsApiService(http, auth, api_url=api, cache_dir=cache_dir, link_max_age=link_max_age)


def seed_listing(cache_dir: Path, api: str, datasets: Sequence[ApiDataset]) -> Path:
    """Put a fresh listing in a client's disk cache (what a first run leaves), so no @search call is made."""
    path = listing_cache_path(api.rstrip("/"), cache_dir)
    save_listing(datasets, path, base_url=api.rstrip("/"))
    return path
