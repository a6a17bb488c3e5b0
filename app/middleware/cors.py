"""CORS from the settings, with a refused preflight answered in the error envelope."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.types import Message, Receive, Scope, Send

from app.middleware.errors import envelope
from app.settings import Settings

# Response headers a browser script may read.
EXPOSED_HEADERS = [
    "X-Trace-Id",
    "Content-Language",
    "Retry-After",
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
]


class EnvelopeCORSMiddleware(CORSMiddleware):
    """Starlette's CORS middleware; its plain-text 400 for a refused preflight becomes the
    envelope (code `cors_rejected`), like every other error.

    A request without `Origin` (servers, curl, same-origin pages) only needs `Vary: Origin` on
    its answer: that is added here from the raw headers, without Starlette's per-request header
    objects, which cost more than the rest of the middleware stack together.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not any(n == b"origin" for n, _ in scope["headers"]):
            await self.app(scope, receive, _vary_on_origin(send))
            return
        if scope["type"] == "http" and scope["method"] == "OPTIONS":
            headers = Headers(scope=scope)
            if "origin" in headers and "access-control-request-method" in headers:
                response = self.preflight_response(request_headers=headers)
                if response.status_code >= 400:
                    response = envelope(scope, 400, "cors_rejected", "error.cors_rejected")
                await response(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def _vary_on_origin(send: Send) -> Send:
    """`send`, adding `Origin` to the answer's `Vary` header (as Starlette does)."""

    async def send_varying(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", ()))
            varies = [v for n, v in headers if n.lower() == b"vary"]
            if varies:
                headers = [(n, v) for n, v in headers if n.lower() != b"vary"]
            headers.append((b"vary", b", ".join([*varies, b"Origin"])))
            message["headers"] = headers
        await send(message)

    return send_varying


def install_cors(app: FastAPI, settings: Settings) -> None:
    app.add_middleware(
        EnvelopeCORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_methods=settings.cors_methods,
        allow_headers=settings.cors_headers,
        allow_credentials=settings.cors_allow_credentials,
        expose_headers=EXPOSED_HEADERS,
        max_age=settings.cors_max_age,
    )
