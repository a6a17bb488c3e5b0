"""Trace ids: from `X-Trace-Id` or W3C `traceparent` when valid, else new; on every response."""

from __future__ import annotations

import os
import re
import time

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_TRACE_ID = re.compile(r"^[0-9A-Za-z_-]{8,64}$")
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")


def time_ordered_hex() -> str:
    """32 hex digits: the time in ms, then 80 random bits."""
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"


def new_trace_id() -> str:
    """32 hex digits: a valid W3C trace-id."""
    return time_ordered_hex()


def trace_id_from_headers(x_trace_id: str | None, traceparent: str | None) -> str:
    if x_trace_id and _TRACE_ID.match(x_trace_id):
        return x_trace_id
    if traceparent:
        match = _TRACEPARENT.match(traceparent.strip().lower())
        if match and match.group(1) != "0" * 32:
            return match.group(1)
    return new_trace_id()


class TraceMiddleware:
    """Pure ASGI: puts `trace_id` on the scope and the logging context, echoes `X-Trace-Id`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        x_trace = traceparent = None
        for name, value in scope["headers"]:
            if name == b"x-trace-id":
                x_trace = value.decode("latin-1")
            elif name == b"traceparent":
                traceparent = value.decode("latin-1")
        trace_id = trace_id_from_headers(x_trace, traceparent)
        scope["trace_id"] = trace_id
        structlog.contextvars.bind_contextvars(trace_id=trace_id)
        header = (b"x-trace-id", trace_id.encode())

        async def send_with_trace(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_trace)
        finally:
            structlog.contextvars.unbind_contextvars("trace_id")
