"""The lifecycle's errors, defined with every other error in :mod:`intake_clms.errors` (one hierarchy, one
module: the store and assembly raise them too without importing the lifecycle).  Re-exported here."""

from ..errors import (  # noqa: F401
    AmbiguousOrderError,
    CancelledError,
    DamagedProductError,
    IntegrityError,
    NoDataFilesError,
    OrderExpiredError,
    OrderFailedError,
    PreloadError,
    QuotaError,
    UnsafeArchiveError,
)
