"""Templates for `python -m app new step`: a working step file and its test."""

from __future__ import annotations

_API = '''"""{pascal}: what this endpoint does, in one line."""

from pydantic import BaseModel, Field

from app.runtime import ApiRequest, Context


class {pascal}In(BaseModel):
    name: str = Field(min_length=1, max_length=100)


class {pascal}Out(BaseModel):
    id: str
    name: str


config = {{
    "name": "{pascal}",
    "type": "api",
    "path": "/{kebab}",
    "method": "POST",
    "body": {pascal}In,
    "responses": {{201: {pascal}Out}},
    "auth": "user",
    "emits": [],  # add topics here before ctx.emit(...) may publish them
    "flows": ["{feature}"],
}}


async def handler(req: ApiRequest, ctx: Context) -> dict[str, object]:
    number = await ctx.state.increment("{feature}", "{snake}_count")
    ctx.logger.info("{pascal} called", name=req.body.name, number=number)
    return {{"status": 201, "body": {{"id": str(number), "name": req.body.name}}}}
'''

_API_TEST = '''"""Tests of the {pascal} step, through its handler and a real context."""

from app.runtime.testing import StepTester

USER = {{"id": "user-1", "role": "user"}}


async def test_{snake}_answers_201_and_numbers_each_call() -> None:
    async with StepTester("{path}") as tester:
        first = await tester.call_api(body={{"name": "Ada"}}, user=USER)
        second = await tester.call_api(body={{"name": "Grace"}}, user=USER)
        assert first.status == 201
        assert first.body == {{"id": "1", "name": "Ada"}}
        assert second.body["id"] == "2"
        assert await tester.state("{feature}", "{snake}_count") == 2


async def test_{snake}_refuses_an_empty_name() -> None:
    async with StepTester("{path}") as tester:
        result = await tester.call_api(body={{"name": ""}}, user=USER)
        assert result.status == 400
        assert result.body["code"] == "validation_failed"


async def test_{snake}_needs_a_signed_in_user() -> None:
    async with StepTester("{path}") as tester:
        result = await tester.call_api(body={{"name": "Ada"}})
        assert result.status == 401
'''

_EVENT = '''"""{pascal}: what happens when `{feature}.{snake}` is published."""

from pydantic import BaseModel

from app.runtime import Context, Event


class {pascal}Input(BaseModel):
    id: str


config = {{
    "name": "{pascal}",
    "type": "event",
    "subscribes": ["{feature}.{snake}"],
    "input": {pascal}Input,
    "emits": [],
    "retry": {{"max_attempts": 3, "backoff": "exponential", "delay": 1.0, "timeout": 30}},
    "flows": ["{feature}"],
}}


async def handler(event: Event, ctx: Context) -> None:
    # Deliveries are at-least-once: make running twice harmless.
    if await ctx.state.get("{feature}", event.data.id) is not None:
        ctx.logger.info("already handled", id=event.data.id)
        return
    await ctx.state.set("{feature}", event.data.id, {{"handled_on_attempt": ctx.attempt}})
    ctx.logger.info("{pascal} handled", id=event.data.id)
'''

_EVENT_TEST = '''"""Tests of the {pascal} step, through its handler and a real context."""

import pytest
from pydantic import ValidationError

from app.runtime.testing import StepTester


async def test_{snake}_records_the_event_once() -> None:
    async with StepTester("{path}") as tester:
        await tester.call_event({{"id": "42"}})
        await tester.call_event({{"id": "42"}}, attempt=2)  # a redelivery changes nothing
        assert await tester.state("{feature}", "42") == {{"handled_on_attempt": 1}}


async def test_{snake}_refuses_data_without_an_id() -> None:
    async with StepTester("{path}") as tester:
        with pytest.raises(ValidationError):
            await tester.call_event({{"name": "no id"}})
'''

_CRON = '''"""{pascal}: a scheduled job."""

from app.runtime import Context

config = {{
    "name": "{pascal}",
    "type": "cron",
    "schedule": "*/5 * * * *",  # every five minutes
    "timezone": "UTC",
    "emits": [],
    "flows": ["{feature}"],
}}


async def handler(_: None, ctx: Context) -> None:
    runs = await ctx.state.increment("{feature}", "{snake}_runs")
    ctx.logger.info("{pascal} ran", runs=runs)
'''

_CRON_TEST = '''"""Tests of the {pascal} cron step."""

from app.runtime.testing import StepTester


async def test_{snake}_counts_its_runs() -> None:
    async with StepTester("{path}") as tester:
        await tester.call_cron()
        await tester.call_cron()
        assert await tester.state("{feature}", "{snake}_runs") == 2
'''

_TEMPLATES = {"api": (_API, _API_TEST), "event": (_EVENT, _EVENT_TEST), "cron": (_CRON, _CRON_TEST)}


def _values(pascal: str, snake: str, feature: str, path: str = "") -> dict[str, str]:
    return {
        "pascal": pascal,
        "snake": snake,
        "feature": feature,
        "kebab": snake.replace("_", "-")
        if snake == feature
        else f"{feature}/{snake}".replace("_", "-"),
        "path": path,
    }


def render_step(kind: str, pascal: str, snake: str, feature: str) -> str:
    return _TEMPLATES[kind][0].format(**_values(pascal, snake, feature))


def render_test(kind: str, pascal: str, snake: str, feature: str, path: str) -> str:
    return _TEMPLATES[kind][1].format(**_values(pascal, snake, feature, path))
