"""Catalog entry lookup that fails with the names the user probably meant.

intake answers ``cat.ndvi_globl_300m`` with a bare ``AttributeError`` naming
only the typo.  :class:`EntryLookup` turns that into an
:class:`~intake_clms.errors.UnknownEntryError` (still an AttributeError and a
KeyError) listing close matches; it backs :class:`ClmsCatalog`, the driver
``clms_cat`` for the top-level catalog (``intake_clms.open_catalog()``), and the
nested CLMS download API catalog.
"""

from __future__ import annotations

import os
from typing import Any

from intake.catalog.local import YAMLFileCatalog

from .. import __version__
from ..errors import ClmsError, UnknownEntryError


def _choices(catalog: Any) -> list[str]:
    try:
        return sorted(str(k) for k in catalog._get_entries())
    except Exception:  # noqa: BLE001 - a catalog that cannot list itself still gets an error naming the key
        return []


class EntryLookup:
    """Mixin for intake catalogs: unknown entry names raise :class:`UnknownEntryError`."""

    def _unknown(self, key: object) -> UnknownEntryError:
        where = f"catalog {getattr(self, 'name', None) or ''}".strip()
        return UnknownEntryError(str(key), _choices(self), where if where != "catalog" else "the catalog")

    def __getitem__(self, key: Any) -> Any:
        try:
            return super().__getitem__(key)  # type: ignore[misc]
        except KeyError as exc:
            if isinstance(exc, ClmsError) or not isinstance(key, str):
                raise
            raise self._unknown(key) from None

    def __getattr__(self, item: str) -> Any:
        if item.startswith("_") or item == "entry":  # private names and intake's own probes stay intake's
            return super().__getattr__(item)  # type: ignore[misc]
        try:
            return super().__getattr__(item)  # type: ignore[misc]
        except AttributeError as exc:
            if isinstance(exc, ClmsError):
                raise
            raise self._unknown(item) from None


class ClmsCatalog(EntryLookup, YAMLFileCatalog):
    """A YAML catalog file (by default the bundled ``clms.yaml``) whose unknown entries raise clear errors."""

    name = "clms_cat"
    version = __version__

    def __init__(self, path: str | os.PathLike[str] | None = None, **kwargs: Any):
        if path is None:
            from .resolve import default_catalog_path

            path = default_catalog_path()
        super().__init__(os.fspath(path), **kwargs)


def open_catalog(path: str | os.PathLike[str] | None = None, **kwargs: Any) -> ClmsCatalog:
    """Open a catalog file (default: the bundled one) as :class:`ClmsCatalog`.

    The same as ``intake.open_catalog(path, driver="clms_cat")``; plain
    ``intake.open_catalog(path)`` opens the same entries but answers an unknown
    entry name with intake's bare AttributeError.
    """
    return ClmsCatalog(path, **kwargs)
