"""Steps: discovery of `*_step.py` files (and `*.step.js|ts`, see `_node`; `*_stream.py`
declarations), their handlers, and the registry that wires topics."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import importlib
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pydantic import ValidationError

from ._config import (
    ApiStepConfig,
    CronStepConfig,
    EventStepConfig,
    NoopStepConfig,
    StepConfig,
    parse_step_config,
)
from ._errors import StepConfigError
from ._stream_config import StreamDef, find_stream_files, load_stream_file


class StepHandler(Protocol):
    """How the engine calls a step, whatever language it is written in."""

    language: str

    async def invoke(self, input: Any, ctx: Any) -> Any: ...


@dataclass(slots=True)
class PythonHandler:
    """A Python `handler(input, ctx)`: `async def` runs on the loop, `def` in a thread."""

    fn: Callable[..., Any]
    language: str = "python"
    is_async: bool = field(init=False)

    def __post_init__(self) -> None:
        self.is_async = inspect.iscoroutinefunction(self.fn)

    async def invoke(self, input: Any, ctx: Any) -> Any:
        if self.is_async:
            return await self.fn(input, ctx)
        loop = asyncio.get_running_loop()
        sync_ctx = ctx.for_thread(loop)
        call = functools.partial(contextvars.copy_context().run, self.fn, input, sync_ctx)
        return await loop.run_in_executor(None, call)


@dataclass(slots=True)
class Step:
    config: StepConfig
    handler: StepHandler | None
    file: Path
    module: str = ""

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def type(self) -> str:
        return self.config.type


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _format_validation(file: str, exc: ValidationError) -> list[str]:
    problems = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        # Drop the wrapper ("config") and the union tag pydantic adds ("api", "event", ...).
        if loc and loc[0] == "config":
            loc = loc[1:]
        if loc and loc[0] in ("api", "event", "cron", "noop"):
            loc = loc[1:]
        where = ".".join(loc) or "config"
        message = err["msg"]
        if err["type"] == "union_tag_invalid":
            where = "type"
            message = (
                f"unknown step type {err.get('input', {}).get('type')!r}: "
                "expected one of 'api', 'event', 'cron', 'noop'"
            )
        elif err["type"] == "union_tag_not_found":
            where = "type"
            message = "missing: every step needs a type ('api', 'event', 'cron' or 'noop')"
        elif err["type"] == "missing":
            message = "missing (required)"
        problems.append(f"{file}: config.{where}: {message}")
    return problems


def load_step_file(file: Path, module_name: str) -> tuple[Step | None, list[str]]:
    shown = _display(file)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        return None, [f"{shown}: cannot be imported: {type(exc).__name__}: {exc}"]
    raw = getattr(module, "config", None)
    if raw is None:
        return None, [f"{shown}: config: missing (a step file defines `config` and `handler`)"]
    try:
        config = parse_step_config(raw)
    except ValidationError as exc:
        return None, _format_validation(shown, exc)
    fn = getattr(module, "handler", None)
    if config.type == "noop":
        return Step(config, PythonHandler(fn) if callable(fn) else None, file, module_name), []
    if fn is None:
        return None, [f"{shown}: handler: missing (define `async def handler(input, ctx)`)"]
    if not callable(fn):
        return None, [f"{shown}: handler: must be a function, got {type(fn).__name__}"]
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        params = []
    if len(params) < 2 and not any(p.kind == p.VAR_POSITIONAL for p in params):
        return None, [f"{shown}: handler: must take two arguments (input, ctx)"]
    return Step(config, PythonHandler(fn), file, module_name), []


def find_step_files(steps_dir: Path) -> list[Path]:
    return sorted(
        p
        for p in steps_dir.rglob("*_step.py")
        if not any(part.startswith((".", "__")) for part in p.relative_to(steps_dir).parts[:-1])
    )


def module_name_for(steps_dir: Path, file: Path) -> str:
    rel = file.resolve().relative_to(steps_dir.resolve()).with_suffix("")
    return ".".join((steps_dir.resolve().name, *rel.parts))


def discover(steps_dir: Path, extra: list[Step] | None = None) -> Registry:
    """Import every step under `steps_dir` and validate the whole set; raise StepConfigError."""
    steps_dir = steps_dir.resolve()
    if not steps_dir.is_dir():
        raise StepConfigError([f"{steps_dir}: the steps folder does not exist"])
    parent = str(steps_dir.parent)
    if parent not in sys.path:
        sys.path.insert(0, parent)
    steps: list[Step] = list(extra or [])
    problems: list[str] = []
    for file in find_step_files(steps_dir):
        step, errs = load_step_file(file, module_name_for(steps_dir, file))
        problems.extend(errs)
        if step is not None:
            steps.append(step)
    streams: list[StreamDef] = []
    for file in find_stream_files(steps_dir):
        stream, errs = load_stream_file(file, module_name_for(steps_dir, file), _display(file))
        problems.extend(errs)
        if stream is not None:
            streams.append(stream)
    # JavaScript/TypeScript steps: imported here, not at the top (that module imports this one).
    from ._node import discover_node_steps

    node_steps, node_problems = discover_node_steps(steps_dir)
    steps.extend(node_steps)
    problems.extend(node_problems)
    registry = Registry(steps, streams)
    problems.extend(registry.problems())
    if problems:
        raise StepConfigError(problems)
    return registry


class Registry:
    """Every step, by name, by topic and by route; and the declared streams."""

    def __init__(self, steps: list[Step], streams: list[StreamDef] | None = None) -> None:
        self.steps = steps
        self.streams: list[StreamDef] = list(streams or [])
        self.by_name: dict[str, Step] = {}
        self.subscribers: dict[str, list[Step]] = {}
        for step in steps:
            self.by_name.setdefault(step.name, step)
            if isinstance(step.config, EventStepConfig):
                for topic in step.config.subscribes:
                    self.subscribers.setdefault(topic, []).append(step)

    def problems(self) -> list[str]:
        problems: list[str] = []
        seen: dict[str, Step] = {}
        routes: dict[tuple[str, str], Step] = {}
        for step in self.steps:
            shown = _display(step.file)
            if step.name in seen:
                problems.append(
                    f"{shown}: config.name: duplicate step name {step.name!r} "
                    f"(also in {_display(seen[step.name].file)})"
                )
            seen.setdefault(step.name, step)
            if isinstance(step.config, ApiStepConfig):
                key = (step.config.method, step.config.route_shape)
                if key in routes:
                    problems.append(
                        f"{shown}: config.path: duplicate route {step.config.method} "
                        f"{step.config.path} (also in {_display(routes[key].file)})"
                    )
                routes.setdefault(key, step)
        streams: dict[str, StreamDef] = {}
        for stream in self.streams:
            if stream.name in streams:
                problems.append(
                    f"{_display(stream.file)}: config.name: duplicate stream name "
                    f"{stream.name!r} (also in {_display(streams[stream.name].file)})"
                )
            streams.setdefault(stream.name, stream)
        return problems

    def get(self, name: str) -> Step:
        return self.by_name[name]

    def of_type(self, kind: str) -> list[Step]:
        return [s for s in self.steps if s.type == kind]

    @property
    def api_steps(self) -> list[Step]:
        return self.of_type("api")

    @property
    def event_steps(self) -> list[Step]:
        return self.of_type("event")

    @property
    def cron_steps(self) -> list[Step]:
        return self.of_type("cron")

    @property
    def queued_steps(self) -> list[Step]:
        """Steps whose work goes through the delivery queue (events and cron firings)."""
        return [s for s in self.steps if isinstance(s.config, EventStepConfig | CronStepConfig)]

    def topics(self) -> dict[str, dict[str, list[str]]]:
        """topic -> {"emitted_by": [...], "subscribed_by": [...]}"""
        result: dict[str, dict[str, list[str]]] = {}
        for step in self.steps:
            for spec in [*step.config.emits, *step.config.virtual_emits]:
                result.setdefault(spec.topic, {"emitted_by": [], "subscribed_by": []})[
                    "emitted_by"
                ].append(step.name)
            subscribes = (
                step.config.subscribes
                if isinstance(step.config, EventStepConfig | NoopStepConfig)
                else []
            )
            for topic in subscribes:
                result.setdefault(topic, {"emitted_by": [], "subscribed_by": []})[
                    "subscribed_by"
                ].append(step.name)
        return result

    def warnings(self) -> list[str]:
        warnings = []
        for topic, ends in sorted(self.topics().items()):
            if not ends["subscribed_by"]:
                warnings.append(
                    f"topic {topic!r} is emitted by {', '.join(ends['emitted_by'])} "
                    "but no step subscribes to it"
                )
            if not ends["emitted_by"]:
                warnings.append(
                    f"topic {topic!r} is subscribed to by {', '.join(ends['subscribed_by'])} "
                    "but no step emits it"
                )
        return warnings
