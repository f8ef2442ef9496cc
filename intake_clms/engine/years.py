"""Yearly and multi-yearly products asked for with no dates: the newest year, and which years exist.

A request without ``start``/``end`` means the product's whole time coverage.  For a
product published once a year or less often (CORINE every six years, yearly layers)
that is every edition, all fetched to answer what is usually a question about the
current state.  So such a request reads the newest edition and says which others
exist; giving dates reads those.  Products with several dates a year (daily, 10-daily)
are left as the search found them (``max_products`` guards those).  Service-agnostic:
it looks only at the hits' start dates.
"""

from __future__ import annotations

import logging

from ..params import Request
from ..services.base import Hit

log = logging.getLogger(__name__)


def newest_year(hits: list[Hit], request: Request, what: str = "") -> list[Hit]:
    """The hits of the newest date when no dates were asked and every date found is in a year of its own."""
    if request.start is not None or request.end is not None:
        return hits
    dates = sorted({h.start[:10] for h in hits if h.start})
    years = sorted({d[:4] for d in dates})
    if len(years) < 2 or len(dates) != len(years) or any(not h.start for h in hits):
        return hits
    newest = dates[-1]
    log.warning("%s: no dates given; products exist for %s: reading the newest (%s); give start/end to read "
                "others", what or request.dataset_identifier or request.dataset_id, ", ".join(years), years[-1])
    return [h for h in hits if h.start and h.start[:10] == newest]
