"""Fixtures shared by the top-level tests."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
from workbooks import CURRENT_HEADERS, CURRENT_ROWS, NEW_HEADERS, NEW_ROWS


@pytest.fixture
def clean_sheets() -> dict[str, list[list[object]]]:
    """A small, well-formed table in the reconstructed file's shape (title, blank, headers)."""
    return {
        "Current": [["CLMS products on WEkEO"], [], CURRENT_HEADERS, *[list(r) for r in CURRENT_ROWS]],
        "New": [["CLMS products available from CDSE"], [], NEW_HEADERS, *[list(r) for r in NEW_ROWS]],
    }


@pytest.fixture(scope="session", autouse=True)
def shared_cog_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One directory for the global COGs of every sandbox of the session (each takes ~1 s to make).

    The generator is deterministic, so sharing its files between tests changes no answer.
    """
    path = tmp_path_factory.mktemp("cog-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INTAKE_CLMS_SANDBOX_CACHE", str(path))
        yield path
