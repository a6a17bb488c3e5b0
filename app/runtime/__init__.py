"""The Stepwise runtime: what a step author imports. Everything else in this package is private.

A step is a `*_step.py` file with `config` (a dict or a typed config) and `handler(input, ctx)`;
a stream is a `*_stream.py` file with `config` (a name and the pydantic schema of its items).
"""

from ._api import ApiRequest
from ._clock import Clock, ManualClock
from ._config import (
    ApiStepConfig,
    CronStepConfig,
    EmitSpec,
    EventStepConfig,
    NoopStepConfig,
    RetryPolicy,
    StepConfig,
)
from ._context import Context, Event, State
from ._errors import (
    AppError,
    Conflict,
    EmitError,
    Forbidden,
    NotFound,
    StepConfigError,
    Unauthorized,
    ValidationFailed,
)
from ._logging import add_log_sink, configure_logging, get_logger, remove_log_sink
from ._runtime import Runtime, RuntimeSettings
from ._steps import Registry, Step, discover
from ._stream_config import StreamConfig
from ._streams import StreamError

__all__ = [
    "ApiRequest",
    "ApiStepConfig",
    "AppError",
    "Clock",
    "Conflict",
    "Context",
    "CronStepConfig",
    "EmitError",
    "EmitSpec",
    "Event",
    "EventStepConfig",
    "Forbidden",
    "ManualClock",
    "NoopStepConfig",
    "NotFound",
    "Registry",
    "RetryPolicy",
    "Runtime",
    "RuntimeSettings",
    "State",
    "Step",
    "StepConfig",
    "StepConfigError",
    "StreamConfig",
    "StreamError",
    "Unauthorized",
    "ValidationFailed",
    "add_log_sink",
    "configure_logging",
    "discover",
    "get_logger",
    "remove_log_sink",
]
