"""Catalog entry lookup that fails with the names the user probably meant.

intake answers ``cat.ndvi_globl_300m`` with a bare ``AttributeError`` naming
only the typo.  :class:`EntryLookup` turns that into an
:class:`~intake_clms.errors.UnknownEntryError` (still an AttributeError and a
KeyError) listing close matches; it backs :class:`ClmsCatalog`, the driver
``clms_cat`` for the top-level catalog (``intake_clms.open_catalog()``), and the
nested CLMS download API catalog.

A plain ``intake.open_catalog("clms.yaml")`` cannot be given that driver: intake
2.0.9 opens every ``.yaml`` path with its own ``yaml_file_cat`` (registered at
runtime with ``clobber=True``, so no entry point can replace it), and a V1 file
has no key naming its catalog class.  What a V1 file can do is name modules to
import when it is read (``plugins: {source: [{module: ...}]}``): our generated
catalogs name this one, and mark themselves with ``metadata.catalog_driver:
clms_cat``.  Importing it (:func:`install`) makes intake's YAML catalogs that
carry the mark answer unknown entries as :class:`ClmsCatalog` does; every other
catalog is left exactly as intake made it.
"""

from __future__ import annotations

import os
from typing import Any, Callable

from intake.catalog.local import YAMLFileCatalog

from .. import __version__
from ..errors import ClmsError, UnknownEntryError


def _choices(catalog: Any) -> list[str]:
    try:
        return sorted(str(k) for k in catalog._get_entries())
    except Exception:  # noqa: BLE001 - a catalog that cannot list itself still gets an error naming the key
        return []


def _unknown(catalog: Any, key: object) -> UnknownEntryError:
    where = f"catalog {getattr(catalog, 'name', None) or ''}".strip()
    return UnknownEntryError(str(key), _choices(catalog), where if where != "catalog" else "the catalog")


def _item(catalog: Any, key: Any, plain: Callable[[Any, Any], Any]) -> Any:
    """``catalog[key]`` by intake's ``plain`` lookup; an unknown name raises :class:`UnknownEntryError`."""
    try:
        return plain(catalog, key)
    except KeyError as exc:
        if isinstance(exc, ClmsError) or not isinstance(key, str):
            raise
        raise _unknown(catalog, key) from None


def _attr(catalog: Any, item: str, plain: Callable[[Any, str], Any]) -> Any:
    """``catalog.item`` by intake's ``plain`` lookup; an unknown entry name raises :class:`UnknownEntryError`."""
    if item.startswith("_") or item == "entry":  # private names and intake's own probes stay intake's
        return plain(catalog, item)
    try:
        return plain(catalog, item)
    except AttributeError as exc:
        if isinstance(exc, ClmsError):
            raise
        raise _unknown(catalog, item) from None


class EntryLookup:
    """Mixin for intake catalogs: unknown entry names raise :class:`UnknownEntryError`."""

    def __getitem__(self, key: Any) -> Any:
        return _item(self, key, super().__getitem__.__func__)  # type: ignore[misc]

    def __getattr__(self, item: str) -> Any:
        return _attr(self, item, super().__getattr__.__func__)  # type: ignore[misc]


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


#: The metadata key and value by which a catalog file asks for :class:`ClmsCatalog`'s lookups when it is opened
#: by plain ``intake.open_catalog`` (written by ``intake-clms generate``, with the ``plugins`` entry naming
#: this module).
DRIVER_KEY = "catalog_driver"
PLUGINS = {"source": [{"module": __name__}]}


def _marked(catalog: Any) -> bool:
    meta = vars(catalog).get("metadata")  # never through __getattr__ (it may run before __init__ set it)
    return isinstance(meta, dict) and meta.get(DRIVER_KEY) == ClmsCatalog.name


def install() -> None:
    """Make intake's ``yaml_file_cat`` catalogs marked ``catalog_driver: clms_cat`` answer unknown entries as
    :class:`ClmsCatalog` does (done once, when this module is imported); other catalogs are unchanged."""
    if getattr(YAMLFileCatalog, "_clms_lookup", False):
        return
    plain_item, plain_attr = YAMLFileCatalog.__getitem__, YAMLFileCatalog.__getattr__

    def __getitem__(self: Any, key: Any) -> Any:
        return _item(self, key, plain_item) if _marked(self) else plain_item(self, key)

    def __getattr__(self: Any, item: str) -> Any:
        return _attr(self, item, plain_attr) if _marked(self) else plain_attr(self, item)

    YAMLFileCatalog.__getitem__ = __getitem__  # type: ignore[method-assign]
    YAMLFileCatalog.__getattr__ = __getattr__  # type: ignore[method-assign]
    YAMLFileCatalog._clms_lookup = True  # type: ignore[attr-defined]


install()
