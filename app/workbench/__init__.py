"""The Workbench: the observability UI at `/workbench` and its JSON API under `/workbench/api/`."""

from __future__ import annotations

from fastapi import FastAPI

from app.runtime import Runtime
from app.settings import Settings

from .endpoints import build_router
from .otel import install_otel
from .service import Workbench

__all__ = ["Workbench", "install_otel", "install_workbench"]


def install_workbench(app: FastAPI, runtime: Runtime, settings: Settings) -> Workbench | None:
    """Mount the Workbench on `app` (nothing when WORKBENCH_ENABLED is false). The caller's
    lifespan calls `start()` and `stop()`."""
    if not settings.workbench_enabled:
        return None
    workbench = Workbench(runtime, settings)
    app.state.workbench = workbench
    app.include_router(build_router())
    return workbench
