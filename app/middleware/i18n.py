"""The client's language (pure ASGI): `Accept-Language` -> `scope["locale"]`, `Content-Language`."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.i18n import negotiate


class LocaleMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        accept = None
        for name, value in scope["headers"]:
            if name == b"accept-language":
                accept = value.decode("latin-1")
                break
        locale = negotiate(accept)
        scope["locale"] = locale
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = (b"content-language", locale.encode())

        async def send_with_language(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        await self.app(scope, receive, send_with_language)
