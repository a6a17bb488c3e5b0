"""JSON in and out of the database and the wire, with pydantic models and sets understood."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel


def _default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(value: Any) -> str:
    """Serialize to JSON text; raises TypeError naming the type that is not JSON."""
    return orjson.dumps(value, default=_default).decode()


def dumps_bytes(value: Any) -> bytes:
    return orjson.dumps(value, default=_default)


def loads(text: str | bytes) -> Any:
    return orjson.loads(text)


def to_jsonable(value: Any) -> Any:
    """Plain JSON types (dict/list/str/...) for a value that may hold models."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, dict | list | str | int | float | bool) or value is None:
        return value
    return orjson.loads(dumps_bytes(value))
