"""The streams' endpoints: a WebSocket at `/streams`, Server-Sent Events at
`/streams/{stream}/{group_id}`.

Both read the signed-in user from `scope["user"]` (put there by the app's auth middleware); a
WebSocket may also sign in with its first message through the runtime's authenticator. The
protocol is documented in docs/streams.md.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request, WebSocket
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from . import _json
from ._errors import AppError, Forbidden, NotFound, Unauthorized, ValidationFailed
from ._stream_hub import Connection, ConnectionRefused, cancel_quietly, control
from ._streams import MAX_KEY_LENGTH

if TYPE_CHECKING:
    from ._runtime import Runtime

# Close codes (4000-4999 are the application's): the reason is the error frame's `code`.
CLOSE_UNAUTHORIZED = 4401
CLOSE_TOO_MANY = 4429
CLOSE_SLOW = 4008
CLOSE_GOING_AWAY = 1001
_CLOSE_CODES = {
    "unauthorized": CLOSE_UNAUTHORIZED,
    "too_many_connections": CLOSE_TOO_MANY,
    "slow_consumer": CLOSE_SLOW,
    "shutting_down": CLOSE_GOING_AWAY,
}
MAX_FRAME_CHARS = 64 * 1024
_ACTIONS = ("subscribe", "unsubscribe", "auth", "ping")
_SUBSCRIBE_FIELDS = {"stream", "group_id", "since"}


class _ProtocolError(Exception):
    def __init__(self, code: str, message: str, **where: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.where = {k: v for k, v in where.items() if v is not None}


def _text_frame(frame: dict[str, Any]) -> dict[str, Any]:
    return {"type": "websocket.send", "text": _json.dumps(frame)}


def _error(code: str, message: str, **where: Any) -> dict[str, Any]:
    return {"type": "error", "code": code, "error": message, **where}


def _string(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise _ProtocolError("malformed", f"{field}: required, a non-empty string")
    if len(value) > MAX_KEY_LENGTH:
        raise _ProtocolError("malformed", f"{field}: at most {MAX_KEY_LENGTH} characters")
    return value


def _version(value: Any, field: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _ProtocolError("malformed", f"{field}: a version number (an integer >= 0)")
    return value


# -- WebSocket ------------------------------------------------------------------------------------


class _WebSocketSession:
    """One WebSocket client: sign-in, then a reader (its requests) and a writer (its queue)."""

    def __init__(self, runtime: Runtime, websocket: WebSocket) -> None:
        self.runtime = runtime
        self.ws = websocket
        self.hub = runtime.stream_hub
        self.settings = runtime.settings
        self.user: Any = None
        self.conn: Connection | None = None

    async def run(self) -> None:
        await self.ws.accept()
        user = self.ws.scope.get("user")
        if user is None:
            user = await self._sign_in()
            if user is None:
                return
        self.user = user
        try:
            conn = self.hub.open(user, "ws")
        except ConnectionRefused as exc:
            await self._refuse(exc.code, exc.message)
            return
        self.conn = conn
        reader = asyncio.create_task(self._read(conn))
        writer = asyncio.create_task(self._write(conn))
        ended = asyncio.create_task(conn.ended.wait())
        try:
            await asyncio.wait({reader, writer, ended}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed = conn.closed
            client_left = reader.done() and not reader.cancelled()
            self.hub.close(conn)
            for task in (reader, writer, ended):
                await cancel_quietly(task)
            if closed is not None and not client_left:
                await self._goodbye(*closed)

    async def _send_now(self, frame: dict[str, Any]) -> None:
        await self.ws.send_text(_json.dumps(frame))

    async def _refuse(self, code: str, message: str) -> None:
        """An error frame, then the close (whose reason is the code): never a silent close."""
        try:
            async with asyncio.timeout(self.settings.stream_send_timeout_seconds):
                await self._send_now(_error(code, message))
                await self.ws.close(_CLOSE_CODES.get(code, 1008), code)
        except Exception:  # noqa: S110 - the client is gone or stuck: nothing left to tell it
            pass

    async def _goodbye(self, code: str, message: str) -> None:
        await self._refuse(code, message)

    async def _sign_in(self) -> Any:
        authenticate = self.runtime.stream_authenticator
        if authenticate is None:
            await self._refuse(
                "unauthorized",
                "sign in first: connect with a token (Authorization: Bearer, or ?token=)",
            )
            return None
        seconds = self.settings.stream_auth_timeout_seconds
        try:
            async with asyncio.timeout(seconds):
                message = await self.ws.receive()
        except TimeoutError:
            await self._refuse("unauthorized", f"no sign-in message within {seconds:g}s")
            return None
        if message["type"] == "websocket.disconnect":
            return None
        token = None
        try:
            frame = _json.loads(message.get("text") or "")
            if isinstance(frame, dict) and isinstance(frame.get("auth"), dict):
                token = frame["auth"].get("token")
        except ValueError:
            pass
        if not isinstance(token, str) or not token:
            await self._refuse(
                "unauthorized",
                'sign in first: the first message must be {"auth": {"token": "<access token>"}}',
            )
            return None
        try:
            user = await authenticate(token)
        except Exception as exc:
            self.hub.log.warning("stream sign-in failed", error=f"{type(exc).__name__}: {exc}")
            user = None
        if user is None:
            await self._refuse("unauthorized", "the token is not valid (expired or malformed)")
            return None
        await self._send_now({"type": "authenticated"})
        return user

    # -- the client's requests ------------------------------------------------------------------

    async def _read(self, conn: Connection) -> None:
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            try:
                await self._handle(conn, message.get("text"))
            except _ProtocolError as exc:
                conn.push(_text_frame(_error(exc.code, exc.message, **exc.where)))
            except Exception as exc:  # the database is down, say: this request fails, not the link
                self.hub.log.error(
                    "stream request failed",
                    user=conn.user_key,
                    error=f"{type(exc).__name__}: {exc}",
                )
                conn.push(
                    _text_frame(_error("unavailable", "this could not be done now; try again"))
                )

    async def _handle(self, conn: Connection, text: str | None) -> None:
        if text is None:
            raise _ProtocolError("malformed", "binary frames are not supported: send JSON text")
        if len(text) > MAX_FRAME_CHARS:
            raise _ProtocolError("malformed", f"frame too large (over {MAX_FRAME_CHARS} chars)")
        try:
            frame = _json.loads(text)
        except ValueError as exc:
            raise _ProtocolError("malformed", f"the frame is not JSON: {exc}") from None
        if not isinstance(frame, dict):
            raise _ProtocolError(
                "malformed", 'a frame is a JSON object such as {"subscribe": {...}}'
            )
        actions = [a for a in _ACTIONS if a in frame]
        extra = sorted(set(frame) - set(_ACTIONS))
        if len(actions) != 1 or extra:
            raise _ProtocolError(
                "malformed",
                "a frame holds exactly one of "
                + ", ".join(_ACTIONS)
                + f"; got {sorted(frame) or 'nothing'}",
            )
        action = actions[0]
        if action == "ping":
            conn.push(control("ws", "pong", {"data": frame["ping"]}))
        elif action == "auth":
            raise _ProtocolError("already_signed_in", "this connection is already signed in")
        elif action == "subscribe":
            await self._subscribe(conn, frame["subscribe"])
        else:
            self._unsubscribe(conn, frame["unsubscribe"])

    def _target(self, spec: Any, action: str) -> tuple[str, str]:
        if not isinstance(spec, dict):
            raise _ProtocolError(
                "malformed", f'{action} takes an object: {{"stream": ..., "group_id": ...}}'
            )
        stream = _string(spec.get("stream"), f"{action}.stream")
        group = _string(spec.get("group_id"), f"{action}.group_id")
        return stream, group

    async def _subscribe(self, conn: Connection, spec: Any) -> None:
        stream_name, group = self._target(spec, "subscribe")
        unknown = sorted(set(spec) - _SUBSCRIBE_FIELDS)
        if unknown:
            raise _ProtocolError("malformed", f"subscribe: unknown field(s) {unknown}")
        since = _version(spec.get("since"), "subscribe.since")
        where = {"stream": stream_name, "group_id": group}
        stream = self.runtime.streams.get(stream_name)
        if stream is None:
            raise _ProtocolError("unknown_stream", f"no stream named {stream_name!r}", **where)
        if (stream_name, group) in conn.subscriptions:
            raise _ProtocolError("already_subscribed", "already subscribed to this group", **where)
        limit = self.settings.stream_max_subscriptions
        if len(conn.subscriptions) >= limit:
            raise _ProtocolError(
                "too_many_subscriptions", f"at most {limit} subscriptions per connection", **where
            )
        if not await _authorized(self.runtime, stream_name, self.user, group):
            raise _ProtocolError(
                "forbidden", f"not allowed to follow {stream_name}/{group}", **where
            )
        await self.hub.subscribe(conn, stream_name, group, since)

    def _unsubscribe(self, conn: Connection, spec: Any) -> None:
        stream_name, group = self._target(spec, "unsubscribe")
        where = {"stream": stream_name, "group_id": group}
        sub = conn.subscriptions.get((stream_name, group))
        if sub is None:
            raise _ProtocolError("not_subscribed", "not subscribed to this group", **where)
        self.hub.unsubscribe(sub)
        conn.push(control("ws", "unsubscribed", where))

    # -- the writer -----------------------------------------------------------------------------

    async def _write(self, conn: Connection) -> None:
        """Send what the connection's queue holds. A send blocks while the client does not
        read; the hub's watchdog cuts off a writer blocked for too long."""
        send = self.ws.send
        loop = asyncio.get_running_loop()
        while conn.closed is None:
            if not conn.frames:
                await conn.wait()
                continue
            batch = conn.take()
            conn.sending_since = loop.time()
            for message in batch:
                await send(message)
            conn.last_sent = loop.time()
            conn.sending_since = 0.0


async def _authorized(runtime: Runtime, stream_name: str, user: Any, group: str) -> bool:
    """The stream's `authorize` hook; a hook that raises refuses (and is logged)."""
    try:
        return await runtime.streams[stream_name].authorize(user, group)
    except Exception as exc:
        runtime.stream_hub.log.error(
            "stream authorize hook failed",
            stream=stream_name,
            group_id=group,
            error=f"{type(exc).__name__}: {exc}",
        )
        return False


# -- Server-Sent Events ---------------------------------------------------------------------------


class _EventStream(Response):
    """The SSE response of one subscription: the group's items, then its changes, until the
    client leaves (or is cut off, or the server stops)."""

    media_type = "text/event-stream"

    def __init__(self, runtime: Runtime, conn: Connection) -> None:
        self.runtime = runtime
        self.conn = conn
        self.status_code = 200
        self.background = None
        self.body = b""
        self.raw_headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        conn = self.conn
        hub = self.runtime.stream_hub
        client_left = False
        tasks: list[asyncio.Task[Any]] = []
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            await send(
                {"type": "http.response.body", "body": b"retry: 3000\n\n", "more_body": True}
            )
            watcher = asyncio.create_task(_until_disconnect(receive))
            writer = asyncio.create_task(self._write(send))
            ended = asyncio.create_task(conn.ended.wait())
            tasks = [watcher, writer, ended]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            client_left = watcher.done() or (writer.done() and writer.exception() is not None)
        except OSError:
            client_left = True
        finally:
            closed = conn.closed
            hub.close(conn)
            for task in tasks:
                await cancel_quietly(task)
        if client_left:
            return
        goodbye = b""
        if closed is not None:
            goodbye = control("sse", "error", {"code": closed[0], "error": closed[1]})
        try:
            async with asyncio.timeout(self.runtime.settings.stream_send_timeout_seconds):
                await send({"type": "http.response.body", "body": goodbye, "more_body": False})
        except Exception:  # noqa: S110 - the client is gone or stuck: nothing left to tell it
            pass

    async def _write(self, send: Send) -> None:
        conn = self.conn
        loop = asyncio.get_running_loop()
        while conn.closed is None:
            if not conn.frames:
                await conn.wait()
                continue
            body = b"".join(conn.take())
            conn.sending_since = loop.time()
            await send({"type": "http.response.body", "body": body, "more_body": True})
            conn.last_sent = loop.time()
            conn.sending_since = 0.0


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _last_event_id(request: Request) -> int | None:
    raw = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    if raw is None or raw == "":
        return None
    try:
        return _version(raw.strip(), "Last-Event-ID")
    except _ProtocolError as exc:
        raise ValidationFailed(
            details=[
                {"field": "Last-Event-ID", "message": exc.message, "type": "int_parsing"},
            ]
        ) from None


def mount_streams(app: FastAPI, runtime: Runtime) -> None:
    """`/streams` (WebSocket) and `GET /streams/{stream}/{group_id}` (SSE)."""

    async def stream_socket(websocket: WebSocket) -> None:
        await _WebSocketSession(runtime, websocket).run()

    async def stream_events(request: Request, stream: str, group_id: str) -> Response:
        user = request.scope.get("user")
        if user is None:
            raise Unauthorized()
        if stream not in runtime.streams:
            raise NotFound(details=[{"field": "stream", "message": f"no stream named {stream!r}"}])
        if len(group_id) > MAX_KEY_LENGTH:
            raise ValidationFailed(
                details=[{"field": "group_id", "message": f"at most {MAX_KEY_LENGTH} characters"}]
            )
        since = _last_event_id(request)
        if not await _authorized(runtime, stream, user, group_id):
            raise Forbidden()
        try:
            conn = runtime.stream_hub.open(user, "sse")
        except ConnectionRefused as exc:
            status, key = (
                (429, "error.rate_limited")
                if exc.code == "too_many_connections"
                else (503, "error.unavailable")
            )
            raise AppError(exc.code, status, key, [{"message": exc.message}]) from None
        try:
            await runtime.stream_hub.subscribe(conn, stream, group_id, since)
        except BaseException:
            runtime.stream_hub.close(conn)
            raise
        return _EventStream(runtime, conn)

    app.add_api_websocket_route("/streams", stream_socket, name="streams")
    app.add_api_route(
        "/streams/{stream}/{group_id}",
        stream_events,
        methods=["GET"],
        name="stream_events",
        summary="Follow a stream group (Server-Sent Events)",
        description=(
            "The group's items, then every change, as Server-Sent Events whose `id` is the "
            "group's version: reconnecting with `Last-Event-ID` (or `?last_event_id=`) resumes "
            "after it. The same feed as the WebSocket at `/streams`; see docs/streams.md."
        ),
        tags=["streams"],
        response_class=Response,
        responses={
            200: {"description": "An event stream", "content": {"text/event-stream": {}}},
            401: {"description": "Not signed in"},
            403: {"description": "The stream's authorize hook refused"},
            404: {"description": "No such stream"},
            429: {"description": "Too many stream connections for this user"},
        },
        openapi_extra={"security": [{"bearerAuth": []}]},
    )
