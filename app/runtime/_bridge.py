"""The JSON-lines protocol between the runtime and a process running steps of another language
(docs/polyglot.md): invocations matched by id, the handler's ctx calls executed here on the
real `ctx` (so they join the step's unit of work), log records, cancellation and crashes.

Nothing here is specific to JavaScript: `_node` runs Node.js with it; another language's bridge
plugs in with its own command line.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import itertools
import re
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import _json
from ._api import ApiRequest, role_of
from ._context import Event
from ._errors import AppError
from ._jsonschema import to_plain
from ._logging import get_logger

if TYPE_CHECKING:
    from ._context import Context

START_TIMEOUT = 30.0  # seconds for a process to load the steps and say `ready`
_LINE_LIMIT = 64 * 1024 * 1024  # the longest protocol line (one message) read from a bridge
_STDERR_TAIL = 20
_ERROR_CODE = re.compile(r"^[a-z][a-z0-9_.]{0,63}$")
_RESERVED_LOG_KEYS = {"event", "trace_id", "step", "level", "timestamp"}


def _log() -> Any:
    # Not bound at import: the logging set-up (configure_logging) may come later.
    return get_logger(component="bridge")


class HandlerError(Exception):
    """A handler in a bridge process threw; the message is its error and where it was."""


class BridgeProcessError(Exception):
    """The process running a step is gone (crashed, killed) or could not start."""


# -- what crosses the wire --------------------------------------------------------------------


def wire_input(input: Any) -> Any:
    """What the handler in the bridge gets as its first argument (JSON)."""
    if isinstance(input, ApiRequest):
        return {
            "body": to_plain(input.body),
            "query": to_plain(input.query),
            "params": dict(input.params),
            "headers": dict(input.headers.items()),
            "user": wire_user(input.user),
            "method": input.method,
            "path": input.path,
        }
    if isinstance(input, Event):
        return {
            "topic": input.topic,
            "data": to_plain(input.data),
            "id": input.id,
            "traceId": input.trace_id,
            "attempt": input.attempt,
        }
    return to_plain(input)


_SECRET = re.compile(r"password|hash|secret|token", re.IGNORECASE)


def wire_user(user: Any) -> Any:
    """The signed-in user as JSON: a dict without secrets, or an object's public identity."""
    if user is None:
        return None
    if isinstance(user, dict):
        return {k: v for k, v in user.items() if not _SECRET.search(str(k))}
    found = {k: getattr(user, k) for k in ("id", "email", "name") if hasattr(user, k)}
    found["role"] = role_of(user)
    return {k: v if isinstance(v, str | int | float | bool) else str(v) for k, v in found.items()}


def handler_error(error: Any, error_type: type[Exception]) -> Exception:
    """The Python exception for an `error` message: an `AppError` when the error carries a 4xx
    `status` and a `code` (answered with the error envelope), else `error_type` naming it."""
    if not isinstance(error, dict):
        return error_type(str(error))
    status, code = error.get("status"), error.get("code")
    if (
        isinstance(status, int)
        and not isinstance(status, bool)
        and 400 <= status < 500
        and isinstance(code, str)
        and _ERROR_CODE.match(code)
    ):
        details = error.get("details")
        if not (isinstance(details, list) and all(isinstance(d, dict) for d in details)):
            details = None
        return AppError(code, status, details=details)
    text = f"{error.get('name') or 'Error'}: {error.get('message', '')}"
    if error.get("where"):
        text += f" (at {error['where']})"
    return error_type(text)


# -- ctx calls: what a handler may ask of its ctx ---------------------------------------------


class _Mismatch(Exception):
    def __init__(self, current: Any) -> None:
        self.current = current


def json_equal(a: Any, b: Any) -> bool:
    """Equality of JSON values, as JavaScript sees them: 1 == 1.0, but true != 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and bool(a == b)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON Merge Patch: objects merge key by key, `null` deletes, the rest replaces."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


async def _compare_and_set(ctx: Context, group: str, key: str, expected: Any, value: Any) -> Any:
    def swap(current: Any) -> Any:
        if not json_equal(current, expected):
            raise _Mismatch(current)
        return value

    try:
        return {"ok": True, "value": await ctx.state.update(group, key, swap)}
    except _Mismatch as miss:
        return {"ok": False, "value": miss.current}


async def _stream_call(ctx: Context, method: str, name: str, *args: Any) -> Any:
    stream = getattr(ctx.streams, name)
    result = getattr(stream, method)(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


_CALLS: dict[str, tuple[int, Callable[..., Any]]] = {
    "emit": (1, lambda ctx, event: ctx.emit(event)),
    "state.get": (2, lambda ctx, g, k: ctx.state.get(g, k)),
    "state.set": (3, lambda ctx, g, k, v: ctx.state.set(g, k, v)),
    "state.delete": (2, lambda ctx, g, k: ctx.state.delete(g, k)),
    "state.getGroup": (1, lambda ctx, g: ctx.state.get_group(g)),
    "state.clear": (1, lambda ctx, g: ctx.state.clear(g)),
    "state.increment": (3, lambda ctx, g, k, by: ctx.state.increment(g, k, by)),
    "state.merge": (3, lambda ctx, g, k, p: ctx.state.update(g, k, lambda c: merge_patch(c, p))),
    "state.compareAndSet": (4, _compare_and_set),
    "streams.get": (3, lambda ctx, *a: _stream_call(ctx, "get", *a)),
    "streams.set": (4, lambda ctx, *a: _stream_call(ctx, "set", *a)),
    "streams.delete": (3, lambda ctx, *a: _stream_call(ctx, "delete", *a)),
    "streams.getGroup": (2, lambda ctx, *a: _stream_call(ctx, "get_group", *a)),
    "streams.send": (3, lambda ctx, *a: _stream_call(ctx, "send", *a)),
    "t": (2, lambda ctx, key, params: _sync(ctx.t(key, **(params or {})))),
}


async def _sync(value: Any) -> Any:
    return value


async def call_ctx(ctx: Context, method: str, args: list[Any]) -> Any:
    """Run one ctx call of a JS handler on its real `ctx`."""
    try:
        arity, fn = _CALLS[method]
    except KeyError:
        raise TypeError(f"unknown ctx call {method!r}") from None
    if len(args) != arity:
        raise TypeError(f"{method} takes {arity} argument(s), got {len(args)}")
    return await fn(ctx, *args)


# -- the process ------------------------------------------------------------------------------


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Mark a background task's exception as seen (it is logged or re-raised elsewhere)."""
    if not task.cancelled():
        task.exception()


@dataclass(eq=False)
class _Invocation:
    id: int
    ctx: Any
    future: asyncio.Future[Any]
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    calls: set[asyncio.Task[None]] = field(default_factory=set)


class BridgeProcess:
    """One child process speaking the JSON-lines protocol (Node: `node bridge.mjs serve`),
    with many invocations in flight, matched by id. Nothing here is specific to JavaScript but
    the command line: another language's bridge plugs in the same way (docs/polyglot.md).
    """

    def __init__(
        self,
        command: list[str],
        *,
        cancel_grace: float,
        on_exit: Callable[[BridgeProcess], None],
        name: str = "bridge",
        error_type: type[Exception] = HandlerError,
    ) -> None:
        self.command = command
        self.name = name
        self.error_type = error_type
        self.cancel_grace = cancel_grace
        self.on_exit = on_exit
        self.proc: asyncio.subprocess.Process | None = None
        self.pid: int | None = None
        self.alive = False
        self.dying = False  # killed, not reaped yet: takes no new call
        self.started_at = 0.0
        self.pending: dict[int, _Invocation] = {}
        self._ids = itertools.count(1)
        self._ready: asyncio.Future[None] | None = None
        self._cancels: dict[int, asyncio.TimerHandle] = {}
        self._stderr: collections.deque[str] = collections.deque(maxlen=_STDERR_TAIL)
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self.exited: asyncio.Event = asyncio.Event()
        # Set while no cancel is waiting for its answer: a process that may be stuck takes no
        # new call until it answers or is replaced.
        self.calm: asyncio.Event = asyncio.Event()
        self.calm.set()

    @property
    def load(self) -> int:
        return len(self.pending)

    @property
    def suspect(self) -> bool:
        return bool(self._cancels)

    @property
    def usable(self) -> bool:
        return self.alive and not self.dying

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.proc = await asyncio.create_subprocess_exec(
            *self.command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=_LINE_LIMIT,
            # Its own process group: a Ctrl-C in the terminal stops the runtime, which stops
            # the bridge in order, rather than killing it under running handlers.
            start_new_session=True,
        )
        self.pid = self.proc.pid
        self.alive = True
        self.started_at = loop.time()
        self._ready = loop.create_future()
        self._ready.add_done_callback(_retrieve)
        self._tasks = [
            asyncio.create_task(self._read_stderr(), name=f"node-{self.pid}-stderr"),
            asyncio.create_task(self._read_protocol(), name=f"node-{self.pid}-protocol"),
        ]
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), START_TIMEOUT)
        except BaseException:
            self.kill()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(self.exited.wait(), 5)
            raise

    # -- invocations ------------------------------------------------------------------------

    async def invoke(self, file: Path, input: Any, ctx: Any) -> Any:
        """Run the handler of step file `file` with `input`; its ctx calls run on `ctx`."""
        loop = asyncio.get_running_loop()
        inv = _Invocation(next(self._ids), ctx, loop.create_future())
        message = {
            "type": "invoke",
            "id": inv.id,
            "step": ctx.step,
            "file": str(file),
            "input": wire_input(input),
            "ctx": {
                "traceId": ctx.trace_id,
                "attempt": ctx.attempt,
                "step": ctx.step,
                "locale": ctx.locale,
                "user": wire_user(ctx.user),
            },
        }
        data = _json.dumps_bytes(message) + b"\n"
        self.pending[inv.id] = inv
        cancelled = False
        try:
            await self._write(data)
            return await inv.future
        except asyncio.CancelledError:
            cancelled = True
            self._cancel(inv)
            raise
        finally:
            del self.pending[inv.id]
            if inv.calls:
                # Nothing may touch the unit once the invocation is over: ctx calls still
                # running (the process died under them) finish first, or are cancelled with it.
                if cancelled:
                    for task in inv.calls:
                        task.cancel()
                await asyncio.wait(inv.calls)

    def _cancel(self, inv: _Invocation) -> None:
        """Tell the bridge to abort the call; a process that does not answer in time is killed."""
        if not self.alive:
            return
        with contextlib.suppress(Exception):
            self._write_nowait(_json.dumps_bytes({"type": "cancel", "id": inv.id}) + b"\n")
        loop = asyncio.get_running_loop()
        self._cancels[inv.id] = loop.call_later(self.cancel_grace, self._unresponsive, inv.id)
        self.calm.clear()

    def _unresponsive(self, invocation: int) -> None:
        self._cancels.pop(invocation, None)
        if self.alive:
            _log().warning(
                f"{self.name} process did not answer a cancel in time; killing it",
                pid=self.pid,
                grace=self.cancel_grace,
                in_flight=len(self.pending),
            )
            self.kill()

    # -- the protocol -------------------------------------------------------------------------

    async def _write(self, data: bytes) -> None:
        self._write_nowait(data)
        assert self.proc is not None and self.proc.stdin is not None
        await self.proc.stdin.drain()

    def _write_nowait(self, data: bytes) -> None:
        if not self.alive or self.proc is None or self.proc.stdin is None:
            raise BridgeProcessError(f"the {self.name} process {self.pid} is not running")
        self.proc.stdin.write(data)

    async def _read_protocol(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        stdout = self.proc.stdout
        try:
            while True:
                line = await stdout.readline()
                if not line:
                    break
                try:
                    message = _json.loads(line)
                except ValueError:
                    _log().warning("not a protocol line", pid=self.pid, line=line[:200])
                    continue
                self._dispatch(message)
        except Exception as exc:  # a line over the limit, a broken pipe
            _log().error("reading from the bridge process failed", pid=self.pid, error=str(exc))
            self.kill()
        finally:
            await self._after_exit()

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "call":
            self._on_call(message)
        elif kind == "log":
            self._on_log(message)
        elif kind in ("result", "error"):
            self._acked(message.get("id"))
            inv = self.pending.get(message.get("id"))  # type: ignore[arg-type]
            if inv is not None and not inv.future.done():
                if kind == "result":
                    inv.future.set_result(message.get("value"))
                else:
                    inv.future.set_exception(handler_error(message.get("error"), self.error_type))
        elif kind == "cancelled":
            self._acked(message.get("id"))
        elif kind == "ready":
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(None)
        else:
            _log().warning("unknown message from the bridge", pid=self.pid, type=kind)

    def _acked(self, invocation: Any) -> None:
        timer = self._cancels.pop(invocation, None)
        if timer is not None:
            timer.cancel()
            if not self._cancels:
                self.calm.set()

    def _on_call(self, message: dict[str, Any]) -> None:
        inv = self.pending.get(message.get("invoke"))  # type: ignore[arg-type]
        if inv is None or inv.future.done():
            error = {"name": "InvocationOver", "message": "this step invocation is over"}
            self._reply({"type": "reply", "id": message.get("id"), "ok": False, "error": error})
            return
        task = asyncio.create_task(self._run_call(inv, message))
        inv.calls.add(task)
        task.add_done_callback(inv.calls.discard)

    async def _run_call(self, inv: _Invocation, message: dict[str, Any]) -> None:
        call_id = message.get("id")
        try:
            # One at a time and in order, as the handler sent them: they share the step's unit.
            async with inv.lock:
                value = await call_ctx(inv.ctx, str(message.get("method")), message.get("args", []))
            reply = {"type": "reply", "id": call_id, "ok": True, "value": to_plain(value)}
            self._reply(reply)
        except asyncio.CancelledError:
            error = {"name": "InvocationOver", "message": "this step invocation is over"}
            self._reply({"type": "reply", "id": call_id, "ok": False, "error": error})
            raise
        except Exception as exc:
            error = {"name": type(exc).__name__, "message": str(exc)}
            self._reply({"type": "reply", "id": call_id, "ok": False, "error": error})

    def _reply(self, reply: dict[str, Any]) -> None:
        try:
            data = _json.dumps_bytes(reply) + b"\n"
        except TypeError as exc:
            error = {"name": "TypeError", "message": f"the result is not JSON: {exc}"}
            data = _json.dumps_bytes({**reply, "ok": False, "value": None, "error": error}) + b"\n"
        with contextlib.suppress(BridgeProcessError, ConnectionError, RuntimeError):
            self._write_nowait(data)

    def _on_log(self, message: dict[str, Any]) -> None:
        inv = self.pending.get(message.get("invoke"))  # type: ignore[arg-type]
        logger = inv.ctx.logger if inv is not None else _log().bind(pid=self.pid)
        level = {"warn": "warning"}.get(str(message.get("level")), str(message.get("level")))
        if level not in ("debug", "info", "warning", "error"):
            level = "info"
        fields = message.get("fields")
        if not isinstance(fields, dict):
            fields = {"value": fields}
        fields = {(f"{k}_" if k in _RESERVED_LOG_KEYS else str(k)): v for k, v in fields.items()}
        getattr(logger, level)(str(message.get("message", "")), **fields)

    async def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        while True:
            line = await self.proc.stderr.readline()
            if not line:
                return
            text = line.decode(errors="replace").rstrip()
            self._stderr.append(text)
            _log().warning("bridge stderr", bridge=self.name, pid=self.pid, line=text)

    # -- the end ------------------------------------------------------------------------------

    async def _after_exit(self) -> None:
        self.alive = False
        assert self.proc is not None
        try:
            code = await asyncio.wait_for(self.proc.wait(), 5)
        except TimeoutError:
            self.kill()
            code = await self.proc.wait()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._tasks[0]), 1)
        for timer in self._cancels.values():
            timer.cancel()
        self._cancels.clear()
        self.calm.set()
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        tail = f": {self._stderr[-1]}" if self._stderr and code != 0 else ""
        error = BridgeProcessError(f"the {self.name} process {self.pid} ended ({how}){tail}")
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(error)
        for inv in list(self.pending.values()):
            if not inv.future.done():
                inv.future.set_exception(error)
        if not self._closing:
            _log().warning(
                f"{self.name} process ended", pid=self.pid, how=how, in_flight=len(self.pending)
            )
        self.exited.set()
        self.on_exit(self)

    def kill(self) -> None:
        self.dying = True
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()

    async def close(self, wait: float = 5.0) -> None:
        """Close stdin (the bridge exits at once); kill it if it has not gone in `wait` s."""
        self._closing = True
        if self.proc is None:
            return
        if self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.exited.wait(), wait)
        except TimeoutError:
            self.kill()
            await self.exited.wait()


__all__ = [
    "BridgeProcess",
    "BridgeProcessError",
    "HandlerError",
    "call_ctx",
    "handler_error",
    "json_equal",
    "merge_patch",
    "wire_input",
    "wire_user",
]
