"""create_app(): settings -> database -> runtime -> middleware -> routes."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import FrameType
from typing import Any, Literal

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from app.accounts import NoUsersTableError, ensure_first_admin
from app.db import create_engine
from app.examples import router as examples_router
from app.i18n import translate
from app.middleware.auth import AuthMiddleware, token_authenticator
from app.middleware.body_limit import BodyLimitMiddleware
from app.middleware.cors import install_cors
from app.middleware.errors import ErrorEnvelope, UnhandledErrorMiddleware, install_error_handlers
from app.middleware.i18n import LocaleMiddleware
from app.middleware.ratelimit import install_login_limit, install_rate_limits
from app.routing import install_route_index
from app.runtime import Clock, Runtime, RuntimeSettings, configure_logging, discover, get_logger
from app.runtime._tracing import TraceMiddleware
from app.security import JwtCodec, passwords
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
        history_hours=settings.history_hours,
        node_processes=settings.node_processes,
        node_cancel_grace_seconds=settings.node_cancel_grace_seconds,
        stream_queue_size=settings.stream_queue_size,
        stream_heartbeat_seconds=settings.stream_heartbeat_seconds,
        stream_send_timeout_seconds=settings.stream_send_timeout_seconds,
        stream_max_connections_per_user=settings.stream_max_connections_per_user,
        stream_max_subscriptions=settings.stream_max_subscriptions,
        stream_auth_timeout_seconds=settings.stream_auth_timeout_seconds,
        stream_tombstone_seconds=settings.stream_tombstone_seconds,
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


def end_streams_on_exit_signal(runtime: Runtime) -> Callable[[], None]:
    """On SIGINT/SIGTERM, end the stream connections before anything else; returns the undo.

    uvicorn lets open responses finish before it runs the lifespan's shutdown, and an SSE
    response never finishes by itself: without this, every SIGTERM would wait out the graceful
    timeout. The server's own handler still runs (chained), so shutdown proceeds as usual.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    installed: dict[int, tuple[Any, Any]] = {}
    ending: set[asyncio.Task[None]] = set()

    def end_streams() -> None:
        task = loop.create_task(runtime.stream_hub.shutdown())
        ending.add(task)
        task.add_done_callback(ending.discard)

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous = signal.getsignal(sig)
        if not callable(previous):
            continue  # no Python handler to chain to: leave the default behaviour alone

        def chained(signum: int, frame: FrameType | None, previous: Any = previous) -> None:
            loop.call_soon_threadsafe(end_streams)
            previous(signum, frame)

        signal.signal(sig, chained)
        installed[sig] = (previous, chained)

    def undo() -> None:
        for sig, (previous, chained) in installed.items():
            if signal.getsignal(sig) is chained:
                signal.signal(sig, previous)

    return undo


def create_app(
    settings: Settings | None = None, *, role: Role = "dev", clock: Clock | None = None
) -> FastAPI:
    """The ASGI app. `role="dev"` also runs the worker and the cron scheduler in this process."""
    settings = settings or get_settings()
    use_settings(settings)
    configure_logging(settings.log_level, settings.resolved_log_format)
    # /ready reads the migration state on every probe; Alembic would log two lines each time.
    logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)
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
        undo_signals = end_streams_on_exit_signal(runtime)
        # What imports and set-up built lives as long as the process: keep it out of the
        # collector's full passes, whose pauses every open stream connection would feel
        # (bench/streams.py: the slowest of 1,000 clients, p99).
        gc.freeze()
        await _first_admin(runtime, settings)
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
            gc.unfreeze()  # another app may start in this process (tests): let all be collected
            undo_signals()
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
    app.include_router(examples_router)
    # After the steps' routes: an API request never walks past the Workbench's routes first.
    workbench = install_workbench(app, runtime, settings)
    install_error_handlers(app)
    if settings.rate_limit_enabled:
        install_rate_limits(runtime, settings.trusted_proxies)
        install_login_limit(
            app,
            runtime,
            max_failures=settings.login_max_failures,
            window_seconds=settings.login_failure_window_seconds,
        )

    # Added innermost first: the last one added is the outermost. Locale sits outside the
    # error middleware so that every envelope, a 500 included, is in the client's language.
    codec = JwtCodec.from_settings(settings)
    app.add_middleware(
        AuthMiddleware, codec=codec, runtime=runtime, cache_seconds=settings.auth_cache_seconds
    )
    # A WebSocket may also sign in with its first message: the same check.
    runtime.set_stream_authenticator(
        token_authenticator(codec=codec, runtime=runtime, cache_seconds=settings.auth_cache_seconds)
    )
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(UnhandledErrorMiddleware)
    install_cors(app, settings)
    app.add_middleware(LocaleMiddleware)
    app.add_middleware(TraceMiddleware)

    def openapi() -> dict[str, object]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            app.openapi_schema = document_errors(schema)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    install_route_index(app)
    return app


def document_errors(schema: dict[str, Any]) -> dict[str, Any]:
    """Say in the OpenAPI what every operation really answers on failure: the error envelope.

    FastAPI documents a 422 with its own body for validation; Stepwise answers 400 with the
    envelope, and any other error (401, 403, 404, 413, 429, 500, 503...) in the same shape.
    """
    components = schema.setdefault("components", {})
    components["securitySchemes"] = {
        "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    }
    envelope_schema = ErrorEnvelope.model_json_schema(ref_template="#/components/schemas/{model}")
    components.setdefault("schemas", {})["ErrorEnvelope"] = envelope_schema
    envelope = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}}
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            responses.pop("422", None)
            for status, response in responses.items():
                if status.isdigit() and int(status) >= 400 and "content" not in response:
                    response["content"] = envelope
            if operation.get("requestBody") or operation.get("parameters"):
                responses.setdefault(
                    "400", {"description": "Validation failed", "content": envelope}
                )
            responses.setdefault(
                "default",
                {"description": "Any other error, in the error envelope", "content": envelope},
            )
    for unused in ("HTTPValidationError", "ValidationError"):
        components["schemas"].pop(unused, None)
    return schema


async def _first_admin(runtime: Runtime, settings: Settings) -> None:
    """Create the admin of ADMIN_EMAIL/ADMIN_PASSWORD when no account has that email."""
    if settings.admin_email is None or settings.admin_password is None:
        return
    log = get_logger(component="app")
    try:
        await ensure_first_admin(
            runtime.engine,
            settings.admin_email,
            settings.admin_password.get_secret_value(),
            passwords(settings),
        )
    except NoUsersTableError as exc:
        log.warning("ADMIN_EMAIL is set but there are no accounts", reason=str(exc))
    except Exception as exc:  # a database not migrated yet must not stop the API from starting
        log.error("could not create the first admin", error=f"{type(exc).__name__}: {exc}")


def create_dev_app() -> FastAPI:
    """Factory for `python -m app dev`: API, worker and cron in one process."""
    return create_app(role="dev")


def create_api_app() -> FastAPI:
    """Factory for `python -m app api`: HTTP only; workers run elsewhere."""
    return create_app(role="api")
