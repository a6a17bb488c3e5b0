"""API steps on FastAPI: routes with their models in OpenAPI, auth levels, the handler's reply."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import parse_qsl

from fastapi import Body, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from . import _json
from ._config import ApiStepConfig
from ._errors import AppError, Forbidden, Unauthorized

if TYPE_CHECKING:
    from ._runtime import Runtime
    from ._steps import Step

_BODY = "stepwise_body"
_QUERY = "stepwise_query"
_JSON_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
# Request bodies nested deeper than this are refused (400): deep enough for any real document,
# far from the parsers' and serializers' own limits (orjson writes at most 254 levels, so a
# deeper body could be read but not stored in state or an event: a 500).
MAX_JSON_DEPTH = 64


class ApiRequest:
    """What an API handler gets as `req`."""

    __slots__ = ("body", "headers", "method", "params", "path", "query", "raw", "user")

    def __init__(
        self,
        *,
        body: Any,
        query: Any,
        params: dict[str, str],
        headers: Headers | dict[str, str],
        user: Any,
        method: str,
        path: str,
        raw: Request | None = None,
    ) -> None:
        self.body = body
        self.query = query
        self.params = params
        self.headers = headers
        self.user = user
        self.method = method
        self.path = path
        self.raw = raw

    @property
    def client(self) -> str | None:
        if self.raw is not None and self.raw.client is not None:
            return self.raw.client.host
        return None

    def __getitem__(self, name: str) -> Any:
        if name in self.__slots__:
            return getattr(self, name)
        raise KeyError(name)


def role_of(user: Any) -> str | None:
    if user is None:
        return None
    if isinstance(user, dict):
        return user.get("role")
    return getattr(user, "role", None)


def authorize(level: str, user: Any) -> None:
    """`public`: anyone; `user`: a signed-in user (else 401); `admin`: role admin (else 403)."""
    if level == "public":
        return
    if user is None:
        raise Unauthorized()
    if level == "admin" and role_of(user) != "admin":
        raise Forbidden()


class ResponseShaper:
    """Turns a handler's return value into an HTTP response, checked against `responses`."""

    def __init__(self, step: Step) -> None:
        assert isinstance(step.config, ApiStepConfig)
        self.step = step
        self.adapters: dict[int, TypeAdapter[Any]] = {}
        for status, model in step.config.responses.items():
            if _is_schema(model):
                self.adapters[status] = TypeAdapter(model)

    def __call__(self, result: Any) -> Response:
        if isinstance(result, Response):
            return result
        if result is None:
            return Response(status_code=204)
        if not isinstance(result, dict) or not ({"status", "body"} & result.keys()):
            raise TypeError(
                f"step {self.step.name!r} returned {type(result).__name__}; an API handler "
                "returns {'status': int, 'body': ..., 'headers': {...}}"
            )
        status = int(result.get("status", 200))
        body = result.get("body")
        headers = result.get("headers") or {}
        adapter = self.adapters.get(status)
        if adapter is not None:
            try:
                content = adapter.dump_json(adapter.validate_python(_json.to_jsonable(body)))
            except ValidationError as exc:
                raise TypeError(
                    f"step {self.step.name!r} returned a {status} body that does not match its "
                    f"declared response model: {exc.errors()[:3]}"
                ) from None
        elif status == 204 or (body is None and status >= 300):
            return Response(
                status_code=status, headers={str(k): str(v) for k, v in headers.items()}
            )
        else:
            content = _json.dumps_bytes(body)
        return Response(
            content=content,
            status_code=status,
            media_type="application/json",
            headers={str(k): str(v) for k, v in headers.items()},
        )


def _is_schema(model: Any) -> bool:
    return (inspect.isclass(model) and issubclass(model, BaseModel)) or hasattr(model, "__origin__")


def _too_deep(raw: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether `raw` is JSON nested deeper than `limit` levels (invalid JSON is not: the
    parser says what is wrong with it)."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False  # cannot be deeper than the brackets it has: no parse needed
    try:
        value = _json.loads(raw)
    except ValueError:
        return False
    stack: list[tuple[Any, int]] = [(value, 1)] if isinstance(value, dict | list) else []
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def _refuse_deep_json(raw: bytes) -> None:
    if _too_deep(raw):
        raise RequestValidationError(
            [
                {
                    "type": "json_too_deep",
                    "loc": ("body",),
                    "msg": f"JSON nested deeper than {MAX_JSON_DEPTH} levels",
                    "ctx": {"max_depth": MAX_JSON_DEPTH},
                }
            ]
        )


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        return None
    try:
        return _json.loads(raw)
    except ValueError:
        raise RequestValidationError(
            [{"type": "json_invalid", "loc": ("body",), "msg": "JSON decode error", "input": {}}]
        ) from None


def _endpoint(runtime: Runtime, step: Step) -> Any:
    config = step.config
    assert isinstance(config, ApiStepConfig)
    shaper = ResponseShaper(step)

    async def endpoint(request: Request, **kwargs: Any) -> Response:
        body = kwargs.pop(_BODY, None)
        query = kwargs.pop(_QUERY, None)
        if config.body is None and config.method in _JSON_METHODS:
            body = await _json_body(request)
        user = request.scope.get("user")
        scope = request.scope
        if query is None:
            raw_query = scope.get("query_string", b"")
            query = dict(parse_qsl(raw_query.decode("latin-1"))) if raw_query else {}
        req = ApiRequest(
            body=body,
            query=query,
            params=scope.get("path_params", {}),
            headers=request.headers,
            user=user,
            method=scope["method"],
            path=scope["path"],
            raw=request,
        )
        result = await runtime.run_api(
            step,
            req,
            trace_id=scope.get("trace_id") or runtime.new_trace_id(),
            locale=scope.get("locale", "en"),
        )
        return shaper(result)

    params = [
        inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request)
    ]
    for name in config.path_params:
        params.append(
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[str, Path()]
            )
        )
    if config.body is not None:
        params.append(
            inspect.Parameter(
                _BODY, inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[config.body, Body()]
            )
        )
    if config.query is not None:
        params.append(
            inspect.Parameter(
                _QUERY, inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[config.query, Query()]
            )
        )
    endpoint.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    endpoint.__name__ = config.name
    endpoint.validates_nothing = config.body is None and config.query is None  # type: ignore[attr-defined]
    return endpoint


class _StepRoute(APIRoute):
    """A step's route: its auth level is checked before FastAPI reads and validates the body, so
    a client without the right to call it gets 401/403, never a description of its bad input;
    then a body nested deeper than MAX_JSON_DEPTH is refused, whatever the step's body model.

    A step that declares no `body` or `query` model has nothing for FastAPI to validate (its
    path parameters are strings): its route skips FastAPI's request handler (dependency
    solving, two exit stacks, a second exception wrapper: 30 us a request) and calls the
    endpoint directly. Errors still rise to the app's exception handlers, so the answers are the
    same; only the time differs.
    """

    def __init__(self, path: str, endpoint: Any, **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        self.level = self._auth_level()
        self._through_fastapi = self.app
        if getattr(endpoint, "validates_nothing", False):
            self.app = self._direct

    def get_route_handler(self) -> Any:
        handle = super().get_route_handler()  # called by APIRoute.__init__, before self.level
        level = self._auth_level()

        async def authorized(request: Request) -> Response:
            await _admit(level, request)
            return await handle(request)

        return authorized

    def _auth_level(self) -> str:
        return str((self.openapi_extra or {}).get("x-stepwise-auth", "user"))

    async def _direct(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("fastapi.telemetry") is not None:  # FastAPI's own spans want its handler
            await self._through_fastapi(scope, receive, send)
            return
        request = Request(scope, receive, send)
        await _admit(self.level, request)
        response = await self.endpoint(request)
        await response(scope, receive, send)


async def _admit(level: str, request: Request) -> None:
    """The auth level, then the JSON depth limit (the body is kept: FastAPI reads it from
    the request afterwards)."""
    authorize(level, request.scope.get("user"))
    if request.method in _JSON_METHODS:
        _refuse_deep_json(await request.body())


def mount_api_steps(app: FastAPI, runtime: Runtime) -> None:
    """Add one route per API step."""
    for step in runtime.registry.api_steps:
        config = step.config
        assert isinstance(config, ApiStepConfig)
        responses: dict[int | str, dict[str, Any]] = {}
        for status, model in config.responses.items():
            entry: dict[str, Any] = {"description": _reason(status)}
            if _is_schema(model):
                entry["model"] = model
            responses[status] = entry
        ok = sorted(s for s in config.responses if 200 <= s < 300)
        extra: dict[str, Any] = {"x-stepwise-step": config.name, "x-stepwise-auth": config.auth}
        if config.auth != "public":
            extra["security"] = [{"bearerAuth": []}]
        if config.emits:
            extra["x-stepwise-emits"] = sorted(config.emit_topics)
        app.router.add_api_route(
            config.path,
            _endpoint(runtime, step),
            methods=[config.method],
            name=config.name,
            summary=config.summary or config.name,
            description=config.description or "",
            tags=list(config.tags or config.flows) or None,  # type: ignore[arg-type]
            status_code=ok[0] if ok else 200,
            responses=responses,  # type: ignore[arg-type]
            response_class=Response,
            openapi_extra=extra,
            route_class_override=_StepRoute,
        )


def _reason(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return str(status)


__all__ = ["ApiRequest", "AppError", "authorize", "mount_api_steps"]
