"""Errors raised by the lifecycle, all under :class:`intake_clms.errors.ClmsError`."""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import ClmsError, ServiceError


class CancelledError(ClmsError):
    """The preload was cancelled by the user."""


class QuotaError(ServiceError):
    """The service's download quota is used up and does not free soon; says when it does."""


class IntegrityError(ClmsError):
    """A downloaded file is not what it should be (wrong size, corrupt archive)."""


class UnsafeArchiveError(IntegrityError):
    """An archive tries to write outside its folder, holds links, or exceeds the extraction limits."""


class NoDataFilesError(IntegrityError):
    """An archive held no data file (GeoTIFF/NetCDF); ``members`` lists (relative path, bytes) of what it held."""

    def __init__(self, message: str, archive: str = "", members: Sequence[tuple[str, int]] = ()):
        super().__init__(message)
        self.archive = archive
        self.members = list(members)


class PreloadError(ClmsError):
    """One or more products failed; ``failures`` maps product id -> the error, none swallowed."""

    def __init__(self, failures: dict[str, BaseException]):
        self.failures = dict(failures)
        lines = [f"{pid}: {exc}" for pid, exc in self.failures.items()]
        super().__init__(f"{len(lines)} product(s) failed:\n  " + "\n  ".join(lines))


class OrderExpiredError(ServiceError):
    """The server no longer knows an order (expired link, restarted service): order again."""


class DamagedProductError(IntegrityError):
    """A stored product no longer matches its record (a file missing, truncated or changed); names the file."""

    def __init__(self, key: str, path: str, problem: str):
        self.key, self.path, self.problem = key, path, problem
        super().__init__(f"stored product {key} is damaged: {path}: {problem}")


class AmbiguousOrderError(ServiceError):
    """An order's answer was lost (5xx or a dropped connection): the server may or may not have taken it."""


class OrderFailedError(ServiceError):
    """The server ended an order badly (a terminal status): a rerun orders anew."""
