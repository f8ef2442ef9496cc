"""The README's shell blocks that tests run exactly as written (tagged ``<!-- readme-test: TAG -->``)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_block(tag: str) -> str:
    """The fenced block right after ``<!-- readme-test: TAG -->`` in README.md."""
    m = re.search(rf"<!-- readme-test: {tag} -->\s*```\w*\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert m, f"README.md has no block tagged {tag}"
    return m.group(1)
