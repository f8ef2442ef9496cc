"""The shared ``sandbox`` fixture: a real sandbox server on loopback, one per test.

Products are tiny and the clock runs 60x fast, so an order queues for a tenth
of a real second (``QUEUE_DELAY`` sandbox seconds); tests that need more time
to pass jump the clock with ``sandbox.clock.advance(seconds)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import requests

from intake_clms.sandbox import Sandbox

SPEED = 60.0  # sandbox seconds per real second
QUEUE_DELAY = 6.0  # sandbox seconds: 0.1 s real


@pytest.fixture
def sandbox_factory(tmp_path: Path) -> Iterator[Callable[..., Sandbox]]:
    """Start sandboxes with custom settings (``sandbox_factory(hda_quota=2)``); all stop at teardown."""
    started: list[Sandbox] = []

    def make(**kwargs: Any) -> Sandbox:
        settings: dict[str, Any] = {
            "data_dir": tmp_path / f"sandbox-data-{len(started)}",
            "size": "tiny",
            "speed": SPEED,
            "queue_delay": QUEUE_DELAY,
            "seed": 0,
        }
        settings.update(kwargs)
        sb = Sandbox(**settings).start()
        started.append(sb)
        return sb

    yield make
    for sb in started:
        sb.stop()


@pytest.fixture
def sandbox(sandbox_factory: Callable[..., Sandbox]) -> Sandbox:
    """A started sandbox with the default test settings."""
    return sandbox_factory()


@pytest.fixture
def http() -> Iterator[requests.Session]:
    """A plain requests session, closed after the test."""
    with requests.Session() as session:
        yield session


@pytest.fixture
def hda_ready_download() -> Callable[[Sandbox], tuple[requests.Session, str]]:
    """A function giving (logged-in session, download URL) of a finished HDA order on a sandbox."""

    def make(sb: Sandbox) -> tuple[requests.Session, str]:
        creds = sb.credentials["hda"]
        r = requests.post(sb.urls["identity"], json={"username": creds["username"], "password": creds["password"]}, timeout=10)
        r.raise_for_status()
        s = requests.Session()
        s.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
        api = sb.urls["hda"]
        dataset = "EO:JRC:DAT:CLMS"
        for term in s.get(f"{api}/datasets/{dataset}", timeout=10).json()["terms"]:
            s.put(f"{api}/termsaccepted/{term}", json={"accepted": True}, timeout=10).raise_for_status()
        spec = next(d for d in sb.ctx.store.datasets() if d.dataset_id == dataset and sb.ctx.store.items(d.key, limit=1))
        query = {"dataset_id": dataset, "datasetIdentifier": spec.dataset_identifier or spec.key, "itemsPerPage": 1}
        feature = s.post(f"{api}/dataaccess/search", json=query, timeout=10).json()["features"][0]
        order = {"dataset_id": dataset, "product_id": feature["id"], "location": feature["properties"]["location"]}
        r = s.post(f"{api}/dataaccess/download", json=order, timeout=10)
        r.raise_for_status()
        sb.clock.advance(sb.ctx.queue_delay + 1)
        return s, f"{api}/dataaccess/download/{r.json()['download_id']}"

    return make
