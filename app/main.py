"""create_app(): settings -> database -> runtime -> middleware -> routes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from app.db import create_engine
from app.i18n import translate
from app.middleware.errors import UnhandledErrorMiddleware, install_error_handlers
from app.runtime import Clock, Runtime, RuntimeSettings, configure_logging, discover, get_logger
from app.runtime._tracing import TraceMiddleware
from app.settings import Settings, get_settings, use_settings
from app.workbench import install_otel, install_workbench

Role = Literal["dev", "api"]


def runtime_settings(settings: Settings) -> RuntimeSettings:
    return RuntimeSettings(
        worker_concurrency=settings.worker_concurrency,
        lease_seconds=settings.lease_seconds,
        lease_renew_seconds=settings.lease_renew_seconds,
        poll_seconds=settings.poll_seconds,
        sqlite_poll_seconds=settings.sqlite_poll_seconds,
        shutdown_grace_seconds=settings.shutdown_grace_seconds,
        record_runs=settings.record_runs,
    )


def build_runtime(settings: Settings, clock: Clock | None = None) -> Runtime:
    """The runtime of this project: its steps, its database, its translations."""
    return Runtime(
        discover(settings.steps_dir),
        create_engine(settings),
        settings=runtime_settings(settings),
        clock=clock,
        translator=translate,
    )


def create_app(
    settings: Settings | None = None, *, role: Role = "dev", clock: Clock | None = None
) -> FastAPI:
    """The ASGI app. `role="dev"` also runs the worker and the cron scheduler in this process."""
    settings = settings or get_settings()
    use_settings(settings)
    configure_logging(settings.log_level, settings.resolved_log_format)
    runtime = build_runtime(settings, clock)
    tracer_provider = install_otel(runtime, settings)
    log = get_logger(component="app")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for warning in runtime.registry.warnings():
            log.warning("step graph", problem=warning)
        if workbench is not None:
            await workbench.start()
        await runtime.start(worker=role == "dev")
        log.info(
            "stepwise started",
            role=role,
            env=settings.env,
            database=runtime.engine.dialect.name,
            steps=len(runtime.registry.steps),
        )
        try:
            yield
        finally:
            await runtime.stop()
            if workbench is not None:
                await workbench.stop()
            if tracer_provider is not None:
                tracer_provider.shutdown()
            await runtime.engine.dispose()

    app = FastAPI(
        title=settings.app_name,
        version=settings.app_version,
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.settings = settings
    app.state.runtime = runtime
    runtime.mount(app)
    # After the steps' routes: an API request never walks past the Workbench's routes first.
    workbench = install_workbench(app, runtime, settings)
    install_error_handlers(app)

    # Added innermost first: the last one added is the outermost.
    app.add_middleware(UnhandledErrorMiddleware)
    app.add_middleware(TraceMiddleware)

    def openapi() -> dict[str, object]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            }
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def create_dev_app() -> FastAPI:
    """Factory for `python -m app dev`: API, worker and cron in one process."""
    return create_app(role="dev")


def create_api_app() -> FastAPI:
    """Factory for `python -m app api`: HTTP only; workers run elsewhere."""
    return create_app(role="api")
