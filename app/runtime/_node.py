"""JavaScript and TypeScript steps: `*.step.js|ts` files, configs read by Node.js at start-up,
handlers run by a pool of Node processes speaking JSON lines over stdio (docs/polyglot.md).

Their `ctx` calls are executed here, on the real `ctx`, so they join the step's unit of work
exactly like a Python step's.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import itertools
import re
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from . import _json
from ._api import ApiRequest, role_of
from ._config import parse_step_config
from ._context import Event
from ._errors import AppError
from ._jsonschema import SchemaError, model_from_schema, response_type, to_plain
from ._logging import get_logger
from ._steps import Step, _display, _format_validation

if TYPE_CHECKING:
    from ._context import Context
    from ._steps import Registry

BRIDGE = Path(__file__).resolve().parent / "node" / "bridge.mjs"
PATTERNS = ("*.step.js", "*.step.ts")
CONFIG_TIMEOUT = 120.0  # seconds for the one start-up call reading every config
START_TIMEOUT = 30.0  # seconds for a pool process to load the steps and say `ready`
_LINE_LIMIT = 64 * 1024 * 1024  # the longest protocol line (one message) read from Node
_STDERR_TAIL = 20
_ERROR_CODE = re.compile(r"^[a-z][a-z0-9_.]{0,63}$")
_RESERVED_LOG_KEYS = {"event", "trace_id", "step", "level", "timestamp"}


def _log() -> Any:
    # Not bound at import: the logging set-up (configure_logging) may come later.
    return get_logger(component="node")


class JavaScriptError(Exception):
    """A JavaScript or TypeScript handler threw; the message is the JS error and where it was."""


class NodeProcessError(Exception):
    """The Node process running a step is gone (crashed, killed) or could not start."""


# -- discovery --------------------------------------------------------------------------------


def node_binary() -> str | None:
    return shutil.which("node")


def find_node_step_files(steps_dir: Path) -> list[Path]:
    files = set()
    for pattern in PATTERNS:
        for path in steps_dir.rglob(pattern):
            parts = path.relative_to(steps_dir).parts[:-1]
            if not any(p.startswith((".", "__")) or p == "node_modules" for p in parts):
                files.add(path)
    return sorted(files)


# What Node read, by the state of the files: a process that builds its app again (a test
# suite, a CLI command after start-up) asks Node once per version of the sources.
_configs_read: collections.OrderedDict[tuple[Any, ...], dict[str, Any]] = collections.OrderedDict()
_SOURCES = ("*.js", "*.mjs", "*.cjs", "*.ts", "*.mts", "*.json")


def _fingerprint(node: str, steps_dir: Path, files: list[Path]) -> tuple[Any, ...]:
    sources = {
        path
        for pattern in _SOURCES
        for path in steps_dir.rglob(pattern)
        if "node_modules" not in path.relative_to(steps_dir).parts
    }
    stamps = []
    for path in sorted(sources | set(files)):
        with contextlib.suppress(OSError):
            stat = path.stat()
            stamps.append((str(path), stat.st_mtime_ns, stat.st_size))
    return (node, tuple(map(str, files)), tuple(stamps))


def discover_node_steps(steps_dir: Path) -> tuple[list[Step], list[str]]:
    """The JS/TS steps under `steps_dir` and the problems of those that are wrong.

    Without Node.js on the PATH they are left out with a warning: a Python-only deployment of a
    project that has some JavaScript steps still starts.
    """
    files = find_node_step_files(steps_dir)
    if not files:
        return [], []
    node = node_binary()
    if node is None:
        _log().warning(
            "Node.js not found: JavaScript/TypeScript steps are not loaded",
            files=[_display(f) for f in files],
        )
        return [], []
    key = _fingerprint(node, steps_dir, files)
    entries = _configs_read.get(key)
    if entries is None:
        entries, problem = read_configs(node, files)
        if problem is not None:
            return [], [problem]
        _configs_read[key] = entries
        while len(_configs_read) > 64:
            _configs_read.popitem(last=False)
    steps: list[Step] = []
    problems: list[str] = []
    for file in files:
        step, errs = node_step(file, entries.get(str(file), {"error": "not read by Node.js"}))
        problems.extend(errs)
        if step is not None:
            steps.append(step)
    return steps, problems


def read_configs(node: str, files: list[Path]) -> tuple[dict[str, Any], str | None]:
    """One short Node call: every file's `config` (as JSON) and the kind of its `handler`."""
    try:
        done = subprocess.run(  # noqa: S603 - our bridge, our file list
            [node, "--enable-source-maps", str(BRIDGE), "configs", *map(str, files)],
            capture_output=True,
            timeout=CONFIG_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {}, f"{_display(files[0].parent)}: Node.js could not read the step configs: {exc}"
    lines = done.stdout.decode(errors="replace").strip().splitlines()
    try:
        answer = _json.loads(lines[-1])
        return dict(answer["steps"]), None
    except (IndexError, ValueError, KeyError, TypeError):
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-5:]
        return {}, (
            f"{_display(files[0].parent)}: Node.js could not read the step configs "
            f"(exit {done.returncode}): {' | '.join(tail) or 'no output'}"
        )


def node_step(file: Path, entry: dict[str, Any]) -> tuple[Step | None, list[str]]:
    """A Step from what Node read in `file`, or the problems (as for Python steps)."""
    shown = _display(file)
    if "error" in entry:
        return None, [f"{shown}: cannot be loaded: {entry['error']}"]
    raw = entry.get("config")
    if raw is None:
        return None, [f"{shown}: config: missing (a step file exports `config` and `handler`)"]
    if not isinstance(raw, dict):
        return None, [f"{shown}: config: must be an object"]
    problems = [
        f"{shown}: config.{where}: {what} cannot be given from JavaScript"
        for where, what in _unsupported({k: v for k, v in raw.items() if k != "middleware"})
    ]
    if "middleware" in raw:
        problems.append(
            f"{shown}: config.middleware: not supported in JavaScript steps "
            "(the app's middleware still wraps them; call shared code from the handler)"
        )
    if problems:
        return None, problems
    try:
        config = parse_step_config(_with_models(raw))
    except SchemaError as exc:
        return None, [f"{shown}: {exc}"]
    except ValidationError as exc:
        return None, _format_validation(shown, exc)
    kind = entry.get("handler")
    if kind != "function":
        if config.type != "noop":
            if kind in (None, "undefined"):
                return None, [
                    f"{shown}: handler: missing "
                    "(export `const handler = async (input, ctx) => ...`)"
                ]
            return None, [f"{shown}: handler: must be a function, got {kind}"]
        return Step(config, None, file, str(file)), []
    language = "typescript" if file.suffix == ".ts" else "javascript"
    return Step(config, NodeHandler(file, language), file, str(file)), []


def _unsupported(value: Any, where: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        if set(value) == {"$unsupported"}:
            yield where or "config", str(value["$unsupported"])
            return
        for key, item in value.items():
            yield from _unsupported(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _unsupported(item, f"{where}.{index}")


def _with_models(raw: dict[str, Any]) -> dict[str, Any]:
    """The config with its JSON Schemas (`body`, `query`, `input`, `responses`) as models."""
    config = dict(raw)
    name = str(config.get("name", "Step"))
    for key, suffix in (("body", "Body"), ("query", "Query"), ("input", "Input")):
        if isinstance(config.get(key), dict):
            config[key] = model_from_schema(config[key], f"{name}{suffix}", f"config.{key}")
    responses = config.get("responses")
    if isinstance(responses, dict):
        config["responses"] = {
            status: response_type(schema, f"{name}Response{status}", f"config.responses.{status}")
            if isinstance(schema, dict)
            else schema
            for status, schema in responses.items()
        }
    return config


# -- the handler ------------------------------------------------------------------------------


@dataclass(slots=True)
class NodeHandler:
    """A JS/TS `handler(input, ctx)`, run by the runtime's Node pool."""

    file: Path
    language: str = "javascript"

    async def invoke(self, input: Any, ctx: Any) -> Any:
        pool: NodePool | None = getattr(getattr(ctx, "_runtime", None), "node", None)
        if pool is None:
            raise NodeProcessError("this runtime has no Node.js pool for JavaScript steps")
        return await pool.invoke(self, input, ctx)


def wire_input(input: Any) -> Any:
    """What the JS handler gets as its first argument."""
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


def error_from_js(error: Any) -> Exception:
    """The Python exception for an error a JS handler threw."""
    if not isinstance(error, dict):
        return JavaScriptError(str(error))
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
    return JavaScriptError(text)


# -- ctx calls: what a JS handler may ask of its ctx ------------------------------------------


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


# -- processes --------------------------------------------------------------------------------


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
    """One child process speaking the JSON-lines protocol (for Node: `node bridge.mjs serve`),
    with many invocations in flight, matched by id. Nothing here is specific to JavaScript but
    the command line: another language's bridge plugs in the same way (docs/polyglot.md).
    """

    def __init__(
        self,
        command: list[str],
        *,
        cancel_grace: float,
        on_exit: Callable[[BridgeProcess], None],
    ) -> None:
        self.command = command
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
            # Node in order, rather than killing Node under running handlers.
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

    async def invoke(self, handler: NodeHandler, input: Any, ctx: Any) -> Any:
        loop = asyncio.get_running_loop()
        inv = _Invocation(next(self._ids), ctx, loop.create_future())
        message = {
            "type": "invoke",
            "id": inv.id,
            "step": ctx.step,
            "file": str(handler.file),
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
        """Tell Node to abort the call; a process that does not answer in time is killed."""
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
                "Node process did not answer a cancel in time; killing it",
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
            raise NodeProcessError(f"the Node process {self.pid} is not running")
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
                    _log().warning("not a protocol line from Node", pid=self.pid, line=line[:200])
                    continue
                self._dispatch(message)
        except Exception as exc:  # a line over the limit, a broken pipe
            _log().error("reading from the Node process failed", pid=self.pid, error=str(exc))
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
                    inv.future.set_exception(error_from_js(message.get("error")))
        elif kind == "cancelled":
            self._acked(message.get("id"))
        elif kind == "ready":
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(None)
        else:
            _log().warning("unknown message from Node", pid=self.pid, type=kind)

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
        with contextlib.suppress(NodeProcessError, ConnectionError, RuntimeError):
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
            _log().warning("node stderr", pid=self.pid, line=text)

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
        error = NodeProcessError(f"the Node process {self.pid} ended ({how}){tail}")
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(error)
        for inv in list(self.pending.values()):
            if not inv.future.done():
                inv.future.set_exception(error)
        if not self._closing:
            _log().warning("Node process ended", pid=self.pid, how=how, in_flight=len(self.pending))
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


class NodePool:
    """`size` Node processes for the JS/TS steps of one runtime, restarted when they die."""

    def __init__(self, files: list[Path], *, size: int = 1, cancel_grace: float = 2.0) -> None:
        self.files = files
        self.size = max(1, size)
        self.cancel_grace = cancel_grace
        self.node = node_binary()
        self._slots: list[BridgeProcess | None] = [None] * self.size
        self._starting: list[asyncio.Task[BridgeProcess] | None] = [None] * self.size
        self._stopping = False
        self.restarts = 0

    @classmethod
    def for_registry(
        cls, registry: Registry, *, size: int = 1, cancel_grace: float = 2.0
    ) -> NodePool | None:
        """A pool when the registry holds JS/TS steps (None otherwise: no Node is started)."""
        files = sorted({s.file for s in registry.steps if isinstance(s.handler, NodeHandler)})
        return cls(files, size=size, cancel_grace=cancel_grace) if files else None

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._slots if p is not None and p.usable and p.pid is not None]

    def open(self) -> None:
        """Accept calls and start the processes in the background: the first call does not
        wait for Node to boot (if it comes sooner, it waits for the same start)."""
        self._stopping = False
        for index in range(self.size):
            asyncio.get_running_loop().create_task(self._warm(index)).add_done_callback(_retrieve)

    async def start(self) -> None:
        """Start every process now (rather than on the first call)."""
        self.open()
        await asyncio.gather(*(self._slot(i) for i in range(self.size)))
        _log().info("Node pool started", processes=self.pids, steps=len(self.files))

    async def invoke(self, handler: NodeHandler, input: Any, ctx: Any) -> Any:
        if self._stopping:
            raise NodeProcessError("the Node pool is stopped")
        proc = await self._pick()
        return await proc.invoke(handler, input, ctx)

    async def _pick(self) -> BridgeProcess:
        """The least busy live process that is not suspected of being stuck."""
        while True:
            procs = [
                proc if proc is not None and proc.usable else await self._slot(index)
                for index, proc in enumerate(self._slots)
            ]
            healthy = [p for p in procs if not p.suspect]
            if healthy:
                return min(healthy, key=lambda p: p.load)
            # Every process owes an answer to a cancel: wait until one answers or is replaced.
            waits = [asyncio.create_task(p.calm.wait()) for p in procs]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in waits:
                    task.cancel()

    async def _slot(self, index: int) -> BridgeProcess:
        """The live process of slot `index`, started (again) when there is none.

        The start runs as a task of its own: a caller that is cancelled (its step timed out)
        does not kill the process it was waiting for.
        """
        proc = self._slots[index]
        if proc is not None and proc.usable:
            return proc
        starting = self._starting[index]
        if starting is None:
            starting = asyncio.get_running_loop().create_task(self._start_slot(index))
            self._starting[index] = starting
            starting.add_done_callback(lambda t: self._started(index, t))
        try:
            return await asyncio.shield(starting)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if starting.cancelled() and (task is None or not task.cancelling()):
                raise NodeProcessError("the Node pool is stopped") from None
            raise

    async def _start_slot(self, index: int) -> BridgeProcess:
        if self._stopping:
            raise NodeProcessError("the Node pool is stopped")
        if self.node is None:
            raise NodeProcessError("Node.js is not installed (no `node` on the PATH)")
        if self._slots[index] is not None:
            self.restarts += 1
        command = [self.node, "--enable-source-maps", str(BRIDGE), "serve", *map(str, self.files)]
        proc = BridgeProcess(command, cancel_grace=self.cancel_grace, on_exit=self._on_exit)
        await proc.start()
        self._slots[index] = proc
        return proc

    def _started(self, index: int, task: asyncio.Task[BridgeProcess]) -> None:
        self._starting[index] = None
        _retrieve(task)  # the callers awaiting it get the exception too

    def _on_exit(self, proc: BridgeProcess) -> None:
        if self._stopping or proc not in self._slots:
            return
        index = self._slots.index(proc)
        loop = asyncio.get_running_loop()
        # Warm the slot again at once, unless it keeps dying on start (then: on the next call).
        if loop.time() - proc.started_at > 1.0:
            loop.create_task(self._warm(index)).add_done_callback(_retrieve)

    async def _warm(self, index: int) -> None:
        """Start slot `index` ahead of the calls; a failure is logged, the next call retries."""
        try:
            proc = await self._slot(index)
            _log().info("Node process ready", pid=proc.pid, restarts=self.restarts)
        except NodeProcessError:
            pass  # stopping
        except Exception as exc:
            _log().error("starting a Node process failed; the next call retries", error=str(exc))

    async def stop(self) -> None:
        self._stopping = True
        starting = [t for t in self._starting if t is not None]
        for task in starting:
            task.cancel()  # a process still booting is killed, not waited for
        if starting:
            await asyncio.wait(starting)
        procs = [p for p in self._slots if p is not None]
        await asyncio.gather(*(p.close() for p in procs), return_exceptions=True)
        self._slots = [None] * self.size


__all__ = [
    "JavaScriptError",
    "NodeHandler",
    "NodePool",
    "NodeProcessError",
    "discover_node_steps",
    "find_node_step_files",
]
