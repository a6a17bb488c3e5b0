"""Stream declarations: `*_stream.py` files, their `config`, validated at start-up like steps."""

from __future__ import annotations

import builtins
import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

# A stream is reached as `ctx.streams.<name>`: its name must be a Python identifier.
_STREAM_NAME = r"^[A-Za-z][A-Za-z0-9_]{0,99}$"


class StreamConfig(BaseModel):
    """What a `*_stream.py` file declares (as a dict, as in the article, or this model).

    `schema` is the pydantic model every item is validated against; `authorize`, when given,
    is called as `authorize(user, group_id)` (async or not) before a client may subscribe.
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, populate_by_name=True)

    name: Annotated[str, Field(pattern=_STREAM_NAME)]
    item_schema: builtins.type[BaseModel] = Field(
        validation_alias=AliasChoices("schema", "item_schema")
    )
    authorize: Callable[..., Any] | None = None
    description: str | None = None
    flows: list[str] = []

    @field_validator("authorize")
    @classmethod
    def _two_arguments(cls, value: Callable[..., Any] | None) -> Callable[..., Any] | None:
        if value is None:
            return value
        try:
            params = list(inspect.signature(value).parameters.values())
        except (TypeError, ValueError):
            return value
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if len(positional) < 2 and not any(p.kind == p.VAR_POSITIONAL for p in params):
            raise ValueError("must take two arguments (user, group_id)")
        return value


@dataclass(slots=True)
class StreamDef:
    """A declared stream and the file it came from."""

    config: StreamConfig
    file: Path
    module: str = ""

    @property
    def name(self) -> str:
        return self.config.name


def parse_stream_config(raw: Any) -> StreamConfig:
    if isinstance(raw, StreamConfig):
        return raw
    return StreamConfig.model_validate(raw)


def find_stream_files(steps_dir: Path) -> list[Path]:
    return sorted(
        p
        for p in steps_dir.rglob("*_stream.py")
        if not any(part.startswith((".", "__")) for part in p.relative_to(steps_dir).parts[:-1])
    )


def load_stream_file(
    file: Path, module_name: str, shown: str
) -> tuple[StreamDef | None, list[str]]:
    """Import one stream file; the problems name the file, the field and the reason."""
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        return None, [f"{shown}: cannot be imported: {type(exc).__name__}: {exc}"]
    raw = getattr(module, "config", None)
    if raw is None:
        return None, [
            f"{shown}: config: missing (a stream file defines `config` with a name and a schema)"
        ]
    if not isinstance(raw, dict | StreamConfig):
        return None, [f"{shown}: config: must be a dict or a StreamConfig"]
    try:
        config = parse_stream_config(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "config"
            if loc == "item_schema":
                loc = "schema"
            message = err["msg"]
            if err["type"] == "missing":
                message = "missing (required)"
            elif loc == "schema" and err["type"] == "is_subclass_of":
                message = "must be a pydantic model class (the shape of one item)"
            problems.append(f"{shown}: config.{loc}: {message}")
        return None, problems
    return StreamDef(config, file, module_name), []
