"""Dependencies point one way: steps -> app -> app.runtime. The app finds steps by discovery."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT


def _imports(folder: Path) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in folder.rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
        found[str(path.relative_to(ROOT))] = names
    return found


def test_the_app_never_imports_a_feature() -> None:
    offenders = {
        path: sorted(n for n in names if n == "steps" or n.startswith("steps."))
        for path, names in _imports(ROOT / "app").items()
    }
    assert not {p: n for p, n in offenders.items() if n}


def test_the_runtime_imports_nothing_of_the_app_around_it() -> None:
    offenders = {
        path: sorted(
            n
            for n in names
            if (n.startswith("app.") and not n.startswith("app.runtime")) or n == "steps"
        )
        for path, names in _imports(ROOT / "app" / "runtime").items()
    }
    assert not {p: n for p, n in offenders.items() if n}
