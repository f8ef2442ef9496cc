"""Job state: one service's order or download of one product, persisted before it is acted on.

``jobs/<service>/<product key>.json``.  An order id is only ever read back by the
service that issued it (the service is part of the path), so switching services
mid-way can never poll one service with another's id.  The stages::

    ordering   an order POST is (or was) under way: its answer may be lost, so the next
               run asks the server for it before ordering again
    ordered    the server took the order; ``order_id`` names it
    failed     the server ended it (terminal status, bad payload): a rerun orders anew
    cancelled  the user cancelled it: a rerun orders anew
    expired    the server forgot it or its link died: a rerun orders anew

A file that cannot be read is treated as absent, with one warning, and reported as
``unreadable`` so the engine asks the server about a possible earlier order first.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from .fsutil import read_json, safe_name, write_json_atomic

log = logging.getLogger(__name__)

JOB_VERSION = 1
LIVE = ("ordering", "ordered")
SPENT = ("failed", "cancelled", "expired")


@dataclass(frozen=True)
class Job:
    service: str
    key: str
    stage: str
    order_id: str | None = None
    since: float = 0.0  # when the first order attempt began (for finding a lost order)
    updated: float = 0.0
    message: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # service-specific (e.g. when a link was issued)
    version: int = JOB_VERSION

    def moved(self, stage: str, now: float, **changes: Any) -> Job:
        return replace(self, stage=stage, updated=now, **changes)


class JobStore:
    def __init__(self, root: Path):
        self.root = root / "jobs"

    def path(self, service: str, key: str) -> Path:
        return self.root / safe_name(service) / f"{key}.json"

    def load(self, service: str, key: str) -> tuple[Job | None, bool]:
        """(job or None, unreadable): an unreadable file counts as absent, with one warning."""
        path = self.path(service, key)
        data, problem = read_json(path)
        if data is None and problem is None:
            return None, False
        try:
            if problem:
                raise ValueError(problem)
            if data.get("version") != JOB_VERSION or data.get("service") != service or data.get("key") != key:
                raise ValueError(f"version/service/key {data.get('version')!r}/{data.get('service')!r}/{data.get('key')!r} "
                                 f"do not match {JOB_VERSION}/{service}/{key}")
            return Job(**{k: v for k, v in data.items() if k in Job.__dataclass_fields__}), False
        except (ValueError, TypeError, AttributeError) as exc:
            log.warning("%s: the job state %s is unreadable (%s); treating it as absent", service, path, exc)
            return None, True

    def save(self, job: Job) -> Job:
        write_json_atomic(self.path(job.service, job.key), asdict(job))
        return job

    def remove(self, service: str, key: str) -> None:
        self.path(service, key).unlink(missing_ok=True)

    def all(self) -> list[Job]:
        out = []
        if not self.root.is_dir():
            return out
        for folder in sorted(self.root.iterdir()):
            for path in sorted(folder.glob("*.json")):
                job, _ = self.load(folder.name, path.stem)
                if job is not None:
                    out.append(job)
        return out
