"""Field types for step schemas that every database can store."""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Any

from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

# C0 controls (NUL included: Postgres text cannot hold it), DEL and the C1 controls.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _single_line(value: str) -> str:
    if _CONTROL.search(value):
        raise PydanticCustomError(
            "string_control_characters", "must not contain control characters or line breaks"
        )
    return value


SingleLine = Annotated[str, AfterValidator(_single_line)]
"""Text on one line without control characters (names, titles): error type
`string_control_characters`."""


def parse_uuid(value: Any) -> uuid.UUID | None:
    """The UUID of an id given as text (a path parameter, a token's `sub`), or None when it
    cannot be one: callers answer 404, never 500, for an id that is not a UUID."""
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None
