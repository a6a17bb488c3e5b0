"""The layout of DESIGN.md holds: steps -> app -> app.runtime, and no import cycles."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_imports(path: Path) -> set[str]:
    """Modules imported when the file is imported (TYPE_CHECKING blocks and imports inside
    functions do not run at import time, so they cannot make a cycle)."""
    tree = ast.parse(path.read_text())
    package = (
        module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else module_name(path)
    )
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join([*anchor, base]) if base else ".".join(anchor)
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.If | ast.Try | ast.With):
                for field in ("body", "orelse", "finalbody", "handlers"):
                    for child in getattr(node, field, []):
                        visit(
                            [child] if isinstance(child, ast.stmt) else getattr(child, "body", [])
                        )

    visit(tree.body)
    return found


def all_imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


def python_files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def test_the_runtime_imports_nothing_from_the_app_or_the_features() -> None:
    offenders = []
    for path in python_files("app/runtime"):
        for name in all_imports(path):
            if name == "steps" or name.startswith("steps."):
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
            if name.startswith("app.") and not name.startswith("app.runtime"):
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert offenders == []


def test_the_app_never_imports_a_feature() -> None:
    offenders = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in python_files("app")
        for name in all_imports(path)
        if name == "steps" or name.startswith("steps.")
    ]
    assert offenders == []


def test_there_are_no_import_cycles() -> None:
    files = python_files("app") + python_files("steps")
    modules = {module_name(p): p for p in files}
    graph = {
        name: {imp for imp in runtime_imports(path) if imp in modules and imp != name}
        for name, path in modules.items()
    }
    assert "app.runtime" in graph["app.main"]  # the scan sees real edges
    # a package's __init__ importing its own submodules is how re-exports work, not a cycle
    for name in graph:
        graph[name] = {m for m in graph[name] if not (name and m.startswith(name + "."))}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                dfs(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            dfs(node)
    assert cycles == []
