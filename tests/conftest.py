"""Fixtures shared by the top-level tests."""

from __future__ import annotations

import pytest
from workbooks import CURRENT_HEADERS, CURRENT_ROWS, NEW_HEADERS, NEW_ROWS


@pytest.fixture
def clean_sheets() -> dict[str, list[list[object]]]:
    """A small, well-formed table in the reconstructed file's shape (title, blank, headers)."""
    return {
        "Current": [["CLMS products on WEkEO"], [], CURRENT_HEADERS, *[list(r) for r in CURRENT_ROWS]],
        "New": [["CLMS products available from CDSE"], [], NEW_HEADERS, *[list(r) for r in NEW_ROWS]],
    }
