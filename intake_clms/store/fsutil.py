"""File-system primitives of the store: atomic JSON, owner-tagged temporaries, local faults as errors.

Every write of the store ends with one ``os.replace`` of something complete, so a
kill at any instant leaves the old state or the new one.  What a killed process
leaves behind (temporary files and folders) carries its host and pid in its name,
so the next run can tell a dead process's leftovers from a live one's work and
remove them.  A disk that is full, read-only or not a folder raises
:class:`~intake_clms.errors.LocalStorageError` naming the path: never a traceback,
never a network retry.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import re
import secrets
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import LocalStorageError

HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"
_OWNER = re.compile(r"\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.[0-9a-f]{8}(?:\.tmp)?$")
_LOCAL = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOTDIR: "a path component is a file, not a folder",
    errno.EISDIR: "a folder stands where a file should be",
    errno.EEXIST: "a file stands where a folder should be",
    errno.EFBIG: "the file is larger than the file system (or the process's file size limit) allows",
}


def safe_name(text: str, limit: int = 120) -> str:
    """A file-system-safe name for an id from a server (no separators, no ``..``, portable characters)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("._") or "item"
    return cleaned[:limit]


def owned(name: str) -> str:
    """``name`` tagged with this host, this process and a random part: ``name.<host>.<pid>.<hex>``."""
    return f"{name}.{HOST}.{os.getpid()}.{secrets.token_hex(4)}"


def pid_alive(pid: int) -> bool:
    """True while the process exists and is no zombie (a killed child its parent has not reaped yet)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def is_dead_leftover(name: str) -> bool:
    """Whether an owner-tagged name was left by a process of this host that no longer runs."""
    m = _OWNER.search(name)
    if not m or m.group("host") != HOST:
        return False
    pid = int(m.group("pid"))
    return pid != os.getpid() and not pid_alive(pid)


def storage_error(exc: OSError, path: object, needed: int | None = None) -> LocalStorageError:
    problem = _LOCAL.get(exc.errno or 0, exc.strerror or type(exc).__name__)
    return LocalStorageError(getattr(exc, "filename", None) or path, problem, needed if exc.errno == errno.ENOSPC else None)


def is_local_fault(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in _LOCAL


@contextlib.contextmanager
def local_faults(path: object, needed: int | None = None) -> Iterator[None]:
    """Turn a disk-side OSError (full, read-only, not a folder, ...) into one LocalStorageError."""
    try:
        yield
    except OSError as exc:
        if is_local_fault(exc):
            raise storage_error(exc, path, needed) from None
        raise


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (a kill does not need it; a power cut does)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def shallow(record: Any) -> dict[str, Any]:
    """A dataclass's fields as a dict, values as they are (what ``json`` needs; ``asdict`` deep-copies)."""
    return {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}


def write_json_atomic(path: Path, data: Any, durable: bool = True) -> None:
    """Write JSON to an owner-tagged temp file beside ``path``, fsync, rename: the old or the new, never half.

    Compact (no indent): only then does :mod:`json` use its C encoder, and records, views and the activity
    file are written once per product (an indented dump of a long series' activity cost a millisecond)."""
    with local_faults(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(owned("." + path.name) + ".tmp")
        try:
            text = json.dumps(data, sort_keys=True, default=str, separators=(",", ":"))
            with open(tmp, "w") as fh:
                fh.write(text)
                if durable:  # records survive a crash; a status file (``durable=False``) need not
                    fh.flush()
                    os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def read_json(path: Path) -> tuple[Any, str | None]:
    """(data, None), (None, None) when absent, or (None, why) when unreadable or not JSON."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, f"cannot read it ({exc.strerror or exc})"
    try:
        return json.loads(text), None
    except ValueError as exc:
        return None, f"not valid JSON ({exc})"


def remove_tree(path: Path) -> None:
    """Remove a folder so that it disappears at once: rename it aside, then delete."""
    if not path.exists():
        return
    aside = path.with_name(owned("." + path.name + ".trash"))
    try:
        os.replace(path, aside)
    except FileNotFoundError:
        return
    shutil.rmtree(aside, ignore_errors=True)


def tree_size(path: Path) -> int:
    total = 0
    for p in path.rglob("*"):
        try:
            if p.is_file() and not p.is_symlink():
                total += p.stat().st_size
        except OSError:
            pass
    return total
