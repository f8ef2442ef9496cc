"""What the HDA cassette scenarios ask, shared by the recorder and the replay tests so both send the same requests.

``PAGE`` replaces ``intake_clms.services.wekeo.PAGE`` (100) while recording and
replaying, so a few tiny products already span several pages: the paging
logic is exercised without recording hundreds of features.
"""

from __future__ import annotations

from intake_clms.params import Request

from .stable import FIXED_BASE

SERVICE = "hda"
PAGE = 2
BROKER = f"{FIXED_BASE}/hda-broker"
ID_KEYS = ("download_id",)  # random ids the sandbox hands out, renamed order-0001, ...
ID_PREFIX = "order"

GRASSLAND = "clms_vlcc_grassland_europe_100m_yearly_v1"

#: EO:JRC:DAT:CLMS + datasetIdentifier: 4 products, paged by ``properties.nextIndex`` (0, 2).
NEW_ID = Request.build("EO:JRC:DAT:CLMS", GRASSLAND, bbox=[6, 46, 8, 47], start="2024-01-01", end="2024-12-31")
NEW_ID_COUNT, NEW_ID_INDEXES = 4, [0, 2]

#: An old (not migrated) WEkEO dataset ID: 6 products, paged by ``totalResults`` (0, 2, 4).
OLD_ID = Request.build("EO:CRYO:DAT:HRSI:PSA", None, bbox=[6, 46, 8, 48], start="2024-01-01", end="2024-12-31")
OLD_ID_COUNT, OLD_ID_INDEXES = 6, [0, 2, 4]

#: One page of two products; the first is ordered (a zip of a few KB).
ONE = Request.build("EO:JRC:DAT:CLMS", GRASSLAND, bbox=[6, 46, 6.5, 46.5], start="2024-01-01", end="2024-12-31")

RANGE_OFFSET = 1000  # a resumed download asks for the bytes from here
REVOKED_MESSAGE = "Forbidden: the access token was revoked"
REFRESH_REFUSED_MESSAGE = "Token is not active"
FAILURE_MESSAGE = "Task Error: the product could not be retrieved from the archive"
UNKNOWN_DATASET = "EO:EEA:DAT:NO-SUCH-PRODUCT"
WRONG_PASSWORD = "not-the-sandbox-password"
UNAVAILABLE_MESSAGE = "Service temporarily unavailable"
UNAVAILABLE_TIMES = 2

SCENARIOS = (
    "search_new_id",
    "search_old_id",
    "order_poll_download",
    "token_renewal",
    "order_failure",
    "error_message",
    "retry_5xx",
)
