"""When the JavaScript/TypeScript tests can run: Node.js on the PATH and esbuild installed."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.support import ROOT


def node_missing() -> str | None:
    """Why JavaScript steps cannot run on this machine, or None when they can."""
    if shutil.which("node") is None:
        return "Node.js is not installed (no `node` on the PATH): JavaScript step tests skipped"
    if not (ROOT / "node_modules" / "esbuild").is_dir():
        return "esbuild is not installed: run `make setup` (npm ci); TypeScript step tests skipped"
    return None


# Under STEPWISE_REQUIRE_NODE=1 (CI on a machine with Node) the tests run, and fail, rather than
# skip when the set-up is broken.
needs_node = pytest.mark.skipif(
    node_missing() is not None and os.environ.get("STEPWISE_REQUIRE_NODE") != "1",
    reason=node_missing() or "",
)
