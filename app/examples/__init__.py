"""Example pages served by the app (static HTML and JavaScript, nothing from a CDN)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from fastapi import APIRouter
from starlette.responses import HTMLResponse

router = APIRouter(include_in_schema=False)
_HERE = Path(__file__).parent


@cache
def _page(name: str) -> str:
    return (_HERE / name).read_text(encoding="utf-8")


@router.get("/examples/chat")
async def chat_page() -> HTMLResponse:
    """Follow a room of the `chat` stream live (WebSocket), and post to it."""
    return HTMLResponse(
        _page("chat.html"),
        headers={
            "Cache-Control": "no-cache",
            "Content-Security-Policy": (
                "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                "connect-src 'self' ws: wss:"
            ),
        },
    )
