"""The error envelope: every error the app produces, as `{error, code, details, trace_id}`."""

from __future__ import annotations

import itertools
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.i18n import translate
from app.middleware.outage import outage_of, outage_response
from app.runtime import AppError, get_logger
from app.runtime._json import dumps_bytes

_HTTP_CODES = {
    400: ("bad_request", "error.bad_request"),
    401: ("unauthorized", "error.unauthorized"),
    403: ("forbidden", "error.forbidden"),
    404: ("not_found", "error.not_found"),
    405: ("method_not_allowed", "error.method_not_allowed"),
    409: ("conflict", "error.conflict"),
    413: ("payload_too_large", "error.payload_too_large"),
    429: ("rate_limited", "error.rate_limited"),
    503: ("unavailable", "error.unavailable"),
}

log = get_logger(component="errors")


class ErrorEnvelope(BaseModel):
    """The body of every error response (for OpenAPI: steps list it under `responses`)."""

    error: str
    code: str
    details: list[dict[str, Any]] = []
    trace_id: str | None = None


def envelope(
    scope: Scope,
    status: int,
    code: str,
    message_key: str,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
    **params: Any,
) -> Response:
    locale = scope.get("locale", "en")
    body = {
        "error": translate(message_key, locale, **params),
        "code": code,
        "details": details or [],
        "trace_id": scope.get("trace_id"),
    }
    return Response(
        dumps_bytes(body), status_code=status, media_type="application/json", headers=headers
    )


# A body of many bad fields must not get an answer many times its size (a 1 MB object of 60,000
# unknown keys answered 5 MB of details), nor echo a huge field name back.
MAX_DETAILS = 50
MAX_FIELD_CHARS = 200


def validation_details(errors: Any, locale: str) -> list[dict[str, Any]]:
    """One entry per failing field (the first MAX_DETAILS): where it is, what is wrong, the
    pydantic error type."""
    details = []
    for err in itertools.islice(errors, MAX_DETAILS):
        loc = [str(p)[:MAX_FIELD_CHARS] for p in err.get("loc", ())]
        if err.get("type") == "json_invalid":
            loc = []  # FastAPI puts the character offset in `loc`: the field is the body
        elif loc and loc[0] == "body" and len(loc) > 1:
            loc = loc[1:]
        elif loc and loc[0] in ("query", "path", "header"):
            loc = loc[1:] or loc
        key = f"validation.{err.get('type')}"
        text = translate(key, locale, **_ctx(err))
        details.append(
            {
                "field": ".".join(loc)[:MAX_FIELD_CHARS] or "body",
                "message": text if text != key else err.get("msg", "invalid"),
                "type": err.get("type"),
            }
        )
    return details


def _ctx(err: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in (err.get("ctx") or {}).items() if isinstance(v, str | int | float)}


async def _app_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AppError)
    if exc.status == 401:
        return _unauthorized(request.scope, exc)
    return envelope(
        request.scope, exc.status, exc.code, exc.message_key, exc.details, exc.headers, **exc.params
    )


def _unauthorized(scope: Scope, exc: AppError) -> Response:
    """A 401 says how to authenticate; when the request carried a token that the auth middleware
    refused (`scope["auth_error"]`), it says that token is the problem (RFC 6750)."""
    reason = scope.get("auth_error")
    if reason and exc.code == "unauthorized":
        return envelope(
            scope,
            401,
            "invalid_token",
            "error.invalid_token",
            [{"reason": reason}],
            {**exc.headers, "WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    headers = {"WWW-Authenticate": "Bearer", **exc.headers}
    return envelope(scope, 401, exc.code, exc.message_key, exc.details, headers, **exc.params)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    locale = request.scope.get("locale", "en")
    return envelope(
        request.scope,
        400,
        "validation_failed",
        "error.validation_failed",
        validation_details(exc.errors(), locale),
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and isinstance(exc.__cause__, ValueError | RecursionError):
        # FastAPI's "error parsing the body": bytes that are not UTF-8, or JSON nested deeper
        # than the parser's recursion limit (`[[[[...`): malformed JSON, for the client.
        locale = request.scope.get("locale", "en")
        error = {"type": "json_invalid", "loc": ("body",), "msg": "JSON decode error"}
        return envelope(
            request.scope,
            400,
            "validation_failed",
            "error.validation_failed",
            validation_details([error], locale),
        )
    code, key = _HTTP_CODES.get(exc.status_code, ("http_error", "error.http"))
    if exc.status_code >= 500 and exc.status_code not in _HTTP_CODES:
        code, key = "internal", "error.internal"
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(_allowed_methods(request))
    return envelope(request.scope, exc.status_code, code, key, headers=headers)


def _allowed_methods(request: Request) -> list[str]:
    """Every method the requested path answers (RFC 9110: a 405 lists them in `Allow`).

    Starlette names only those of the first route whose path matched, so a 405 on `/users`
    would say `POST` while `GET /users` exists too.
    """
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        route_methods = getattr(route, "methods", None)
        if match is not Match.NONE and route_methods:
            methods |= route_methods
    return sorted(methods)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)


class UnhandledErrorMiddleware:
    """Pure ASGI, inside the trace middleware: an exception nobody handled becomes a 500 envelope
    that leaks nothing, and is logged with its trace id; the database being down or full is a
    503/507 envelope with Retry-After instead (app/middleware/outage.py)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            outage = outage_of(exc)
            if outage is not None:
                # The database's trouble, not a bug: the client is told to come back later.
                log.warning(
                    "database unavailable" if outage.status == 503 else "database storage full",
                    path=scope.get("path"),
                    method=scope.get("method"),
                    trace_id=scope.get("trace_id"),
                    error=f"{type(exc).__name__}: {exc}",
                )
                if started:
                    raise
                await outage_response(scope, outage)(scope, receive, send)
                return
            log.exception(
                "unhandled error",
                path=scope.get("path"),
                method=scope.get("method"),
                trace_id=scope.get("trace_id"),
                error=f"{type(exc).__name__}: {exc}",
            )
            if started:
                raise
            response = envelope(scope, 500, "internal", "error.internal")
            await response(scope, receive, send)
