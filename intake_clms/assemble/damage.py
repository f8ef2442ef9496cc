"""What a read error in a stored file means: decided by whoever opened the files, handed down as a hook.

A library's read error (GDAL's, HDF5's ``NetCDF: HDF error``) in a stored file is, most
likely, damage of the product the file belongs to (a flipped byte the size check cannot
see).  Only the store can record that, and assembly imports no store: data flows
source -> engine -> service -> store -> xarray, never back.  So the opener (the engine)
passes an ``on_damage`` hook down with the files; assembly calls it with the file and the
error and raises what it returns (the store's ``DamagedProductError``, the product marked
damaged so the next open fetches it again), else an :class:`IntegrityError` naming the file.

The hook travels inside dask graphs (a worker process may run the read), so it must be
picklable (a module-level function) and carry no credentials.
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import ClmsError, IntegrityError

#: ``on_damage(path, error)``: the error to raise for a failed read of a stored file, or None (not a stored file).
OnDamage = Callable[[str, BaseException], "ClmsError | None"]


def read_error(path: str, shown: str, exc: BaseException, on_damage: OnDamage | None) -> ClmsError:
    """The error a failed read of local file ``path`` raises (``shown``: its name in messages)."""
    found = on_damage(path, exc) if on_damage is not None else None
    return found or IntegrityError(f"cannot read {shown}: {exc}; `intake-clms cache verify` checks stored files")


__all__ = ["OnDamage", "read_error"]
