"""Live tests run only when asked (``pytest -m live``): a default run never reaches the real services, even on a
machine that holds credentials."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "live" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="live test: run with `pytest -m live`")
    for item in items:
        if "live" in item.keywords:
            item.add_marker(skip)
