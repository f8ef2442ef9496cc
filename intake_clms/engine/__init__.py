"""The preload lifecycle shared by every service: resolve, search, order, wait, download,
verify, extract, assemble, publish, open.

Services plug in through the small :class:`~intake_clms.services.base.Service`
interface and keep products in :mod:`intake_clms.store`; everything else (retries,
polling, download, extraction, assembly, progress, cancellation) lives here once.
"""

from ..errors import CancelledError, IntegrityError, PreloadError, QuotaError, UnsafeArchiveError
from .handle import PreloadHandle

__all__ = ["CancelledError", "IntegrityError", "PreloadError", "PreloadHandle", "QuotaError", "UnsafeArchiveError"]
