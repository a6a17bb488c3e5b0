"""Step configuration: the typed models a step's `config` dict is validated against at start-up."""

from __future__ import annotations

import builtins
import re
import zoneinfo
from collections.abc import Callable
from typing import Annotated, Any, Literal

from croniter import croniter
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
)

_NAME = r"^[A-Za-z][A-Za-z0-9_.-]{0,99}$"
_TOPIC = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$"
_PATH_PARAM = re.compile(r"{([^{}]+)}")

AuthLevel = Literal["public", "user", "admin"]
HttpMethod = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, populate_by_name=True)


class RetryPolicy(_Model):
    """How an event or cron delivery is retried: `max_attempts` tries, then a dead letter."""

    max_attempts: int = Field(
        3, ge=1, le=100, validation_alias=AliasChoices("max_attempts", "maxAttempts")
    )
    backoff: Literal["fixed", "exponential"] = "exponential"
    delay: float = Field(1.0, ge=0, le=86_400, description="seconds before the 2nd attempt")
    max_delay: float = Field(
        300.0, ge=0, le=86_400, validation_alias=AliasChoices("max_delay", "maxDelay")
    )
    timeout: float | None = Field(
        30.0, gt=0, le=86_400, description="seconds an attempt may run before it is cancelled"
    )
    jitter: bool = True

    def delay_before(self, attempt: int, rand: float) -> float:
        """Seconds to wait before attempt number `attempt + 1`, given a random in [0, 1)."""
        base = self.delay if self.backoff == "fixed" else self.delay * (2 ** (attempt - 1))
        base = min(base, self.max_delay)
        if self.jitter:
            # "Equal jitter": keep at least half of the delay so retries never bunch up at zero.
            return base / 2 + base / 2 * rand
        return base


class EmitSpec(_Model):
    topic: Annotated[str, Field(pattern=_TOPIC)]
    label: str | None = None
    conditional: bool = False


def _normalize_emits(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return [{"topic": item} if isinstance(item, str) else item for item in value]
    return value


class _StepBase(_Model):
    name: Annotated[str, Field(pattern=_NAME)]
    description: str | None = None
    flows: list[str] = []
    emits: list[EmitSpec] = []
    virtual_emits: list[EmitSpec] = Field(
        [], validation_alias=AliasChoices("virtual_emits", "virtualEmits")
    )

    _emits_list = field_validator("emits", "virtual_emits", mode="before")(
        lambda cls, v: _normalize_emits(v)
    )

    @property
    def emit_topics(self) -> set[str]:
        return {e.topic for e in self.emits}


class ApiStepConfig(_StepBase):
    type: Literal["api"]
    path: str
    method: HttpMethod
    body: builtins.type[BaseModel] | None = None
    query: builtins.type[BaseModel] | None = None
    responses: dict[int, Any] = {}
    auth: AuthLevel = "user"
    middleware: list[Callable[..., Any]] = []
    rate_limit: str | None = Field(
        None,
        validation_alias=AliasChoices("rate_limit", "rateLimit"),
        description='a limit such as "100/minute" applied per client',
    )
    tags: list[str] = []
    summary: str | None = None

    @field_validator("method", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must start with '/'")
        if "//" in value or any(c in value for c in " ?#"):
            raise ValueError("must be a plain path such as /users/{id}")
        for param in _PATH_PARAM.findall(value):
            if not param.isidentifier():
                raise ValueError(f"path parameter {{{param}}} must be a Python identifier")
        return value

    @field_validator("responses")
    @classmethod
    def _responses(cls, value: dict[int, Any]) -> dict[int, Any]:
        for status in value:
            if not 100 <= status <= 599:
                raise ValueError(f"{status} is not an HTTP status")
        return value

    @property
    def path_params(self) -> list[str]:
        return _PATH_PARAM.findall(self.path)

    @property
    def route_shape(self) -> str:
        """The path with its parameter names erased: two steps with the same shape collide."""
        return _PATH_PARAM.sub("{}", self.path)


class EventStepConfig(_StepBase):
    type: Literal["event"]
    subscribes: Annotated[list[Annotated[str, Field(pattern=_TOPIC)]], Field(min_length=1)]
    input: builtins.type[BaseModel] | None = None
    retry: RetryPolicy = RetryPolicy()
    concurrency: int | None = Field(
        None, ge=1, le=10_000, description="at most this many deliveries run at once, globally"
    )


class CronStepConfig(_StepBase):
    type: Literal["cron"]
    schedule: str = Field(validation_alias=AliasChoices("schedule", "cron"))
    timezone: str = "UTC"
    retry: RetryPolicy = RetryPolicy(max_attempts=1)

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        if len(value.split()) != 5:
            raise ValueError("must be a 5-field cron expression such as '0 0 * * *'")
        if not croniter.is_valid(value):
            raise ValueError(f"{value!r} is not a valid cron expression")
        return value

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value


class NoopStepConfig(_StepBase):
    type: Literal["noop"]
    subscribes: list[Annotated[str, Field(pattern=_TOPIC)]] = []


StepConfig = ApiStepConfig | EventStepConfig | CronStepConfig | NoopStepConfig


class _AnyStep(BaseModel):
    config: Annotated[StepConfig, Field(discriminator="type")]


STEP_TYPES = ("api", "event", "cron", "noop")


def parse_step_config(raw: Any) -> StepConfig:
    """Validate a step's `config` (a dict as in the article, or an already typed model)."""
    if isinstance(raw, ApiStepConfig | EventStepConfig | CronStepConfig | NoopStepConfig):
        return raw
    return _AnyStep.model_validate({"config": raw}).config
