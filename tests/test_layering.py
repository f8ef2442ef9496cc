"""The direction data flows in, checked on the import statements: source -> engine -> service -> store -> assemble.

Assembly reads files and returns Datasets; it imports no service, no store and no engine
(architecture.md).  What a read error in a stored file means is the store's business, handed
down as the ``on_damage`` hook (:mod:`intake_clms.assemble.damage`); the store imports nothing
above it.  Imports inside functions count as much as those at the top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import intake_clms

PACKAGE = Path(intake_clms.__file__).parent


def _imports(folder: str) -> list[tuple[str, int, str]]:
    """(file, line, the intake_clms subpackage imported) of every import in ``intake_clms/<folder>``."""
    found = []
    for path in sorted((PACKAGE / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level == 0 and (node.module or "").startswith("intake_clms."):
                    target = node.module.split(".")[1]
                elif node.level == 2 and node.module:  # from ..store.products import ...
                    target = node.module.split(".")[0]
                elif node.level == 2:  # from .. import store
                    target = ",".join(a.name for a in node.names)
                else:
                    continue
            elif isinstance(node, ast.Import):
                target = ",".join(a.name.split(".")[1] for a in node.names if a.name.startswith("intake_clms."))
                if not target:
                    continue
            else:
                continue
            found.append((path.relative_to(PACKAGE).as_posix(), node.lineno, target))
    return found


def test_assembly_imports_no_store_engine_or_service() -> None:
    """Issue 18, left over: ``assemble/raster.py`` imported ``store.products.damaged_on_read`` (assembly reaching
    back into the store) to record a damaged tile."""
    above = {"store", "engine", "services", "source", "catalogs", "cli", "net"}
    bad = [(f, line, t) for f, line, t in _imports("assemble") if set(t.split(",")) & above]
    assert bad == []


def test_the_store_imports_nothing_above_it() -> None:
    above = {"engine", "services", "source", "catalogs", "cli", "assemble"}
    bad = [(f, line, t) for f, line, t in _imports("store") if set(t.split(",")) & above]
    assert bad == []
