"""JavaScript and TypeScript steps: `*.step.js|ts` files, configs read by Node.js at start-up,
handlers run by a pool of Node processes speaking the JSON-lines protocol of `_bridge` over
stdio (docs/polyglot.md).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from . import _json
from ._bridge import BridgeProcess, HandlerError, _retrieve
from ._bridge import BridgeProcessError as NodeProcessError
from ._config import parse_step_config
from ._jsonschema import SchemaError, model_from_schema, response_type
from ._logging import get_logger
from ._steps import Step, _display, _format_validation

if TYPE_CHECKING:
    from ._steps import Registry

BRIDGE = Path(__file__).resolve().parent / "node" / "bridge.mjs"
PATTERNS = ("*.step.js", "*.step.ts")
CONFIG_TIMEOUT = 120.0  # seconds for the one start-up call reading every config


def _log() -> Any:
    # Not bound at import: the logging set-up (configure_logging) may come later.
    return get_logger(component="node")


class JavaScriptError(HandlerError):
    """A JavaScript or TypeScript handler threw; the message is the JS error and where it was."""


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
        return await proc.invoke(handler.file, input, ctx)

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
        proc = BridgeProcess(
            command,
            cancel_grace=self.cancel_grace,
            on_exit=self._on_exit,
            name="Node",
            error_type=JavaScriptError,
        )
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
