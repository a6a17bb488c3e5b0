"""The one logging set-up: structlog, JSON in production, readable in development, with sinks."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, MutableMapping
from typing import Any

import structlog

LogSink = Callable[[dict[str, Any]], None]
_sinks: list[LogSink] = []


def add_log_sink(sink: LogSink) -> None:
    """Receive every log record (a dict with timestamp, level, event, trace_id, step, fields)."""
    if sink not in _sinks:
        _sinks.append(sink)


def remove_log_sink(sink: LogSink) -> None:
    if sink in _sinks:
        _sinks.remove(sink)


def _to_sinks(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> Any:
    if _sinks:
        record = dict(event_dict)
        for sink in list(_sinks):
            # A broken sink must never break the logging call.
            with contextlib.suppress(Exception):
                sink(record)
    return event_dict


def configure_logging(level: str = "INFO", fmt: str = "console") -> None:
    """Configure structlog (and route the standard library's records through the same output)."""
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _to_sinks,
    ]
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
        shared.insert(3, structlog.processors.format_exc_info)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(
        level=numeric, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s", force=True
    )


def get_logger(**bound: Any) -> Any:
    return structlog.get_logger().bind(**bound)
