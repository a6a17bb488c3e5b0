"""O(1) dispatch of fixed paths, in front of FastAPI's router.

FastAPI finds a request's route by trying every route in order, each through a regular
expression and FastAPI's own bookkeeping: about a microsecond a route, so the twentieth route of
a project costs 20 us before its handler starts. Most API paths are fixed (`/health`,
`POST /orders`): for those, `RouteIndex` looks the route up in a dict keyed by (path, method) and
hands the request to it, exactly as the router would have. Everything else (paths with
parameters, included routers, redirects, 404 and 405) goes through the router unchanged.

The table is built by asking the routes themselves (`route.matches`) which one the router's scan
would pick first, so it can never disagree with the router: a key is only indexed when every
route before its winner is a kind whose match depends on nothing but the path and the method.
It is rebuilt whenever routes are added.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute, APIWebSocketRoute
from starlette.routing import Match, Mount, Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send

# The `matches` of these route kinds looks only at the scope's type, path and method.
_PLAIN_MATCHES = {
    kind.matches for kind in (Route, APIRoute, WebSocketRoute, APIWebSocketRoute, Mount)
}
# FastAPI keeps per-request routing state under this scope key (included routers, form limits):
# a route that sets it is left to the router.
_FASTAPI_SCOPE_KEY = "fastapi"


class RouteIndex:
    """Wraps a router's ASGI stack: fixed (path, method) pairs go straight to their route."""

    def __init__(self, router: Any, slow: ASGIApp) -> None:
        self.router = router
        self.slow = slow
        self.table: dict[tuple[str, str], Route] = {}
        self._built_for: tuple[int, int] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            routes = self.router.routes
            if self._built_for != _fingerprint(routes):
                self._build(routes)
            route = self.table.get((scope["path"], scope["method"]))
            if route is not None and "fastapi.telemetry" not in scope:
                match, child_scope = route.matches(scope)
                if match is Match.FULL and _FASTAPI_SCOPE_KEY not in child_scope:
                    scope.setdefault("router", self.router)
                    scope.update(child_scope)
                    await route.handle(scope, receive, send)
                    return
        await self.slow(scope, receive, send)

    def _build(self, routes: list[Any]) -> None:
        table: dict[tuple[str, str], Route] = {}
        if not self.router.form_limits:
            for position, route in enumerate(routes):
                if type(route).matches not in _PLAIN_MATCHES:
                    break  # an included router, a Host...: what follows is the router's
                if not isinstance(route, Route) or route.param_convertors:
                    continue
                for method in route.methods or ():
                    key = (route.path, method)
                    if key not in table and _first_full_match(routes[: position + 1], key) is route:
                        table[key] = route
        self.table = table
        self._built_for = _fingerprint(routes)


def _fingerprint(routes: list[Any]) -> tuple[int, int]:
    """Changes when routes are added (the only way an app's routes change after start-up)."""
    return len(routes), id(routes[-1]) if routes else 0


def _first_full_match(routes: list[Any], key: tuple[str, str]) -> Any:
    path, method = key
    probe: Scope = {"type": "http", "path": path, "root_path": "", "method": method}
    for route in routes:
        match, _ = route.matches(probe)
        if match is Match.FULL:
            return route
    return None


def install_route_index(app: FastAPI) -> RouteIndex:
    """Put the index in front of `app`'s router (call once the app is built)."""
    router = app.router
    index = RouteIndex(router, router.middleware_stack)
    router.middleware_stack = index
    return index
