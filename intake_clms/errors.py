"""The package's exception hierarchy.

Every error raised on purpose derives from :class:`ClmsError`, so callers can
catch one class.  Errors that come from a service carry the HTTP status and the
server's own message, because that is what a user needs to act on.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence


class ClmsError(Exception):
    """Root of every error intake-clms raises on purpose."""


class TableError(ClmsError):
    """The transition table cannot be read or lacks an essential column."""


class ColumnNotFoundError(TableError):
    """An essential column is missing from a sheet of the transition table."""

    def __init__(self, sheet: str, column: str, found: list[str], given: str | None = None):
        self.sheet, self.column, self.found = sheet, column, list(found)
        shown = ", ".join(repr(h) for h in self.found) or "(none)"
        if given is not None:
            super().__init__(f"sheet {sheet!r}: no header {given!r} for column {column!r}; headers found: {shown}")
        else:
            super().__init__(
                f"sheet {sheet!r}: no column for {column!r}; headers found: {shown}. "
                f"Pass an explicit mapping, e.g. --columns '{column}=<header>'."
            )


class ParameterError(ClmsError, ValueError):
    """A user parameter (bbox, dates, service, ...) has an invalid value."""

    def __init__(self, name: str, message: str):
        self.name = name
        super().__init__(f"{name}: {message}")


class UnknownIdentifierError(ClmsError, KeyError):
    """An ID resolves to no catalog entry."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class UnknownEntryError(ClmsError, AttributeError, KeyError):
    """A catalog has no entry of that name; names the closest ones.

    An AttributeError for ``cat.name`` and a KeyError for ``cat["name"]``, so
    ``hasattr``, ``getattr(cat, name, default)`` and intake keep working.
    """

    def __init__(self, name: str, choices: list[str], catalog: str = "the catalog"):
        self.name, self.choices = name, list(choices)
        close = difflib.get_close_matches(name, self.choices, n=3, cutoff=0.5)
        close += [c for c in self.choices if name.lower() in c.lower() and c not in close][: max(0, 5 - len(close))]
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        more = f" ({len(self.choices)} entries: list(cat), or `intake-clms list --search WORD`)" if self.choices else ""
        super().__init__(f"{catalog} has no entry {name!r}{hint}{more}")

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ServiceNotImplementedError(ClmsError, NotImplementedError):
    """Reading through this service is not implemented yet."""


class CredentialsError(ClmsError):
    """Credentials for a service are missing or unusable."""


class ServiceError(ClmsError):
    """A service answered with an error: carries the HTTP status and its message."""

    def __init__(self, service: str, status: int | None, message: str):
        # No URL on purpose: download links can be credentials (capability URLs).
        self.service, self.status, self.message = service, status, message
        code = f"HTTP {status}" if status is not None else "no HTTP status"
        super().__init__(f"{service}: {code}: {message}")


class ServiceUnreachableError(ServiceError):
    """A service could not be reached at all (no HTTP answer after the bounded retries)."""


class LocalStorageError(ClmsError):
    """The local disk refused a write or read (full, read-only, not a folder): names the path; never retried."""

    def __init__(self, path: object, problem: str, needed: int | None = None):
        self.path, self.problem, self.needed = str(path), problem, needed
        extra = f" ({needed / 1024**2:.1f} MiB were needed)" if needed else ""
        super().__init__(f"local storage: {problem}: {self.path}{extra}")


# --------------------------------------------------------------------------- lifecycle errors


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

    def __reduce__(self) -> tuple[type, tuple[str, str, str]]:  # raised in dask worker processes: it must pickle
        return type(self), (self.key, self.path, self.problem)


class AmbiguousOrderError(ServiceError):
    """An order's answer was lost (5xx or a dropped connection): the server may or may not have taken it."""


class OrderFailedError(ServiceError):
    """The server ended an order badly (a terminal status): a rerun orders anew."""


class TooManyProductsError(ClmsError):
    """A service's catalogue says, before anything is listed, that a request has more products than allowed."""

    def __init__(self, service: str, total: int, limit: int):
        self.service, self.total, self.limit = service, total, limit
        super().__init__(f"{service}: the request has {total} products, more than {limit}")
