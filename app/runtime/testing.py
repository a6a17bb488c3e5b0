"""Test helpers for step authors: call a handler with a real context, without HTTP.

    async with StepTester("CreateUser") as tester:
        result = await tester.call_api(body={"email": "a@b.co", "name": "Ann", "age": 30})
        assert result.status == 201
        assert tester.emitted[0]["topic"] == "user.created"
        assert await tester.state("users", result.body["id"]) is not None

The context is the real one on a throw-away SQLite database: state reads and writes,
`increment`/`update`, emits (checked against the subscribers' input models) behave as in
production. Nothing is delivered: `emitted` lists what the step published.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncEngine

from . import _json
from ._api import ApiRequest, ResponseShaper, authorize
from ._clock import Clock
from ._config import ApiStepConfig, EventStepConfig
from ._context import Event
from ._db import create_engine
from ._errors import AppError
from ._runtime import Runtime, RuntimeSettings
from ._schema import metadata as runtime_metadata
from ._steps import Registry, Step, StepHandler, discover, load_step_file, module_name_for
from ._tracing import new_trace_id
from ._unit import Unit

_defaults: dict[str, Any] = {"translator": None, "metadata": []}


def configure_step_tester(
    *, translator: Any = None, metadata: list[MetaData] | None = None
) -> None:
    """Project-wide defaults for every StepTester (call it from the tests' conftest.py): the
    app's translator, so `ctx.t` speaks the catalogues, and the feature tables to create."""
    if translator is not None:
        _defaults["translator"] = translator
    if metadata is not None:
        _defaults["metadata"] = list(metadata)


@dataclass
class ApiResult:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    error: AppError | None = None


class StepTester:
    """Runs one step's handler with a real `ctx` on a temporary database."""

    def __init__(
        self,
        step: str | Path,
        *,
        steps_dir: str | Path = "steps",
        metadata: list[MetaData] | None = None,
        engine: AsyncEngine | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._step_ref = step
        self._steps_dir = Path(steps_dir)
        self._metadata = [runtime_metadata, *_defaults["metadata"], *(metadata or [])]
        self._engine = engine
        self._own_engine = engine is None
        self._clock = clock
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.runtime: Runtime
        self.step: Step
        self.emitted: list[dict[str, Any]] = []

    async def __aenter__(self) -> StepTester:
        registry = discover(self._steps_dir)
        self.step = self._find(registry)
        if self._engine is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="stepwise-test-")
            self._engine = create_engine(
                f"sqlite:///{self._tmp.name}/test.db", sqlite_synchronous="NORMAL"
            )
            async with self._engine.begin() as conn:
                for md in dict.fromkeys(self._metadata):  # the same MetaData once
                    await conn.run_sync(md.create_all)
        settings = RuntimeSettings(record_runs=False)
        self.runtime = Runtime(
            registry,
            self._engine,
            settings=settings,
            clock=self._clock,
            translator=_defaults["translator"],
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.runtime.node is not None:  # JavaScript steps: their Node processes
            await self.runtime.node.stop()
        if self._own_engine and self._engine is not None:
            await self._engine.dispose()
        if self._tmp is not None:
            self._tmp.cleanup()

    def _find(self, registry: Registry) -> Step:
        ref = self._step_ref
        if isinstance(ref, str) and ref in registry.by_name:
            return registry.by_name[ref]
        path = Path(ref).resolve()
        for step in registry.steps:
            if step.file.resolve() == path:
                return step
        if path.exists():
            loaded, problems = load_step_file(path, module_name_for(self._steps_dir, path))
            if loaded is None:
                raise ValueError("; ".join(problems))
            return loaded
        raise LookupError(f"no step named or at {ref!r} under {self._steps_dir}")

    # -- calls ----------------------------------------------------------------------------------

    @property
    def _handler(self) -> StepHandler:
        if self.step.handler is None:
            raise TypeError(f"step {self.step.name!r} has no handler")
        return self.step.handler

    async def call_api(
        self,
        *,
        body: Any = None,
        query: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        user: Any = None,
        locale: str = "en",
    ) -> ApiResult:
        """Call an API step's handler (its body/query models applied, as over HTTP)."""
        config = self.step.config
        assert isinstance(config, ApiStepConfig), f"{self.step.name} is not an api step"
        try:
            authorize(config.auth, user)
            parsed_body = config.body.model_validate(body) if config.body is not None else body
            parsed_query = (
                config.query.model_validate(query or {})
                if config.query is not None
                else query or {}
            )
            req = ApiRequest(
                body=parsed_body,
                query=parsed_query,
                params=params or {},
                headers=headers or {},
                user=user,
                method=config.method,
                path=config.path,
            )
            result = await self._run(lambda ctx: self._handler.invoke(req, ctx), user, locale)
        except AppError as exc:
            return ApiResult(
                exc.status, {"code": exc.code, "details": exc.details}, exc.headers, exc
            )
        except ValidationError as exc:
            details = [
                {
                    "field": ".".join(str(p) for p in e["loc"]),
                    "message": e["msg"],
                    "type": e["type"],
                }
                for e in exc.errors()
            ]
            return ApiResult(400, {"code": "validation_failed", "details": details})
        response = ResponseShaper(self.step)(result)
        payload = _json.loads(bytes(response.body)) if response.body else None
        return ApiResult(response.status_code, payload, dict(response.headers))

    async def call_event(self, data: Any, *, topic: str | None = None, attempt: int = 1) -> Any:
        """Call an event step's handler with `data` (validated by its input model)."""
        config = self.step.config
        assert isinstance(config, EventStepConfig), f"{self.step.name} is not an event step"
        topic = topic or config.subscribes[0]
        value = config.input.model_validate(data) if config.input is not None else data
        event = Event(topic, value, new_trace_id(), new_trace_id(), attempt)
        return await self._run(lambda ctx: self._handler.invoke(event, ctx), None, "en", attempt)  # type: ignore[union-attr]

    async def call_cron(self) -> Any:
        return await self._run(lambda ctx: self._handler.invoke(None, ctx), None, "en")

    async def _run(self, call: Any, user: Any, locale: str, attempt: int = 1) -> Any:
        assert self._engine is not None
        unit = Unit(self._engine, self.runtime.clock.now)
        ctx = self.runtime.context(
            self.step, unit, trace_id=new_trace_id(), attempt=attempt, locale=locale, user=user
        )
        try:
            result = await call(ctx)
        except BaseException:
            await unit.rollback()
            raise
        self.emitted += [
            {
                "topic": e.topic,
                "data": _json.loads(e.data),
                "delay": e.delay,
                "message_group_id": e.message_group_id,
            }
            for e in unit.emits
        ]
        unit.emits = []  # recorded, not delivered
        await unit.commit()
        return result

    # -- inspection -----------------------------------------------------------------------------

    async def state(self, group: str, key: str | None = None) -> Any:
        """A value (or with no key, the whole group) as stored after the calls so far."""
        assert self._engine is not None
        unit = Unit(self._engine, self.runtime.clock.now)
        return await (unit.get_group(group) if key is None else unit.get(group, key))

    async def set_state(self, group: str, key: str, value: Any) -> None:
        assert self._engine is not None
        unit = Unit(self._engine, self.runtime.clock.now)
        unit.set(group, key, value)
        await unit.commit()


__all__ = ["ApiResult", "StepTester", "configure_step_tester"]
