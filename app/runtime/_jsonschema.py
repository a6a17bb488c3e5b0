"""JSON Schema to pydantic models: how JavaScript steps declare `body`, `query`, `input` and
`responses`, validated on the Python side exactly like a Python step's models.

A practical subset is supported (listed in `KEYWORDS`); any other keyword is refused at start-up
with its path, rather than silently not checked.
"""

from __future__ import annotations

import keyword
import re
from typing import Annotated, Any, ClassVar, Literal, Union, cast

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model, model_validator

from . import _json

TYPES = ("string", "integer", "number", "boolean", "object", "array", "null")
# Keywords that only document (kept by OpenAPI through pydantic's own schema where it can).
ANNOTATIONS = {
    "$schema",
    "$id",
    "$comment",
    "title",
    "description",
    "examples",
    "example",
    "deprecated",
    "readOnly",
    "writeOnly",
    "format",  # an annotation by default in JSON Schema 2019-09 and later
}
KEYWORDS = ANNOTATIONS | {
    "type",
    "nullable",  # OpenAPI 3.0
    "enum",
    "const",
    "default",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "minItems",
    "maxItems",
    "uniqueItems",
    "minLength",
    "maxLength",
    "pattern",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
}


class SchemaError(ValueError):
    """A schema this module cannot turn into a model; the message names where and why."""


class SchemaModel(BaseModel):
    """Base of the generated models: schema defaults count as given (so they reach the handler)
    and extra properties are kept (JSON Schema allows them unless `additionalProperties: false`).
    """

    model_config = ConfigDict(extra="allow", populate_by_name=False)
    schema_defaults: ClassVar[dict[str, Any]] = {}

    @model_validator(mode="before")
    @classmethod
    def _fill_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and cls.schema_defaults:
            missing = {k: v for k, v in cls.schema_defaults.items() if k not in data}
            if missing:
                return {**data, **missing}
        return data


class ClosedSchemaModel(SchemaModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=False)


class ShapingSchemaModel(SchemaModel):
    """For responses: like a Python response model, properties not declared are dropped."""

    model_config = ConfigDict(extra="ignore", populate_by_name=False)


def to_plain(value: Any) -> Any:
    """JSON data for a value that may hold generated models: exactly the properties given (and
    the defaults), not `null` for every optional property that was left out."""
    if isinstance(value, SchemaModel):
        return value.model_dump(mode="json", by_alias=True, exclude_unset=True)
    return _json.to_jsonable(value)


def model_from_schema(schema: Any, name: str, where: str) -> type[BaseModel]:
    """A pydantic model for an object schema; `where` prefixes error messages (`config.body`)."""
    if not isinstance(schema, dict):
        raise SchemaError(f"{where}: must be a JSON Schema object, got {type(schema).__name__}")
    kind = schema.get("type", "object" if "properties" in schema else None)
    if kind != "object":
        raise SchemaError(f'{where}: must be a JSON Schema with "type": "object"')
    return _object_model({**schema, "type": "object"}, _model_name(name), where, SchemaModel)


def response_type(schema: Any, name: str, where: str) -> Any:
    """The type a declared response body is validated and shaped with (undeclared properties
    of objects are dropped, as with a Python response model)."""
    if not isinstance(schema, dict):
        raise SchemaError(f"{where}: must be a JSON Schema object, got {type(schema).__name__}")
    return _annotation(schema, _model_name(name), where, ShapingSchemaModel)


def _model_name(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return cleaned if cleaned[:1].isalpha() else f"Schema_{cleaned}"


def _check_keywords(schema: dict[str, Any], where: str) -> None:
    unknown = sorted(set(schema) - KEYWORDS)
    if unknown:
        raise SchemaError(
            f"{where}: JSON Schema keyword {unknown[0]!r} is not supported "
            "(see docs/polyglot.md for the supported subset)"
        )


def _object_model(
    schema: dict[str, Any], name: str, where: str, open_base: type[SchemaModel]
) -> type[BaseModel]:
    _check_keywords(schema, where)
    properties = schema.get("properties", {})
    if not isinstance(properties, dict):
        raise SchemaError(f"{where}.properties: must be an object")
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise SchemaError(f"{where}.required: must be a list of property names")
    extra = schema.get("additionalProperties", True)
    if not isinstance(extra, bool):
        raise SchemaError(
            f"{where}.additionalProperties: only true or false is supported beside `properties`"
        )
    fields: dict[str, Any] = {}
    defaults: dict[str, Any] = {}
    taken: set[str] = set()
    for index, (prop, sub) in enumerate(properties.items()):
        sub_where = f"{where}.properties.{prop}"
        if not isinstance(sub, dict):
            raise SchemaError(f"{sub_where}: must be a JSON Schema object")
        annotation = _annotation(sub, f"{name}_{prop}", sub_where, open_base)
        description = sub.get("description")
        if prop in required:
            info = Field(..., alias=prop, description=description)
        elif "default" in sub:
            info = Field(sub["default"], alias=prop, description=description)
            defaults[prop] = sub["default"]
        else:
            info = Field(None, alias=prop, description=description)
        attr = _attribute_name(prop, index, taken)
        taken.add(attr)
        fields[attr] = (annotation, info)
    base = open_base if extra else ClosedSchemaModel
    model = cast(
        type[SchemaModel],
        create_model(name, __base__=base, __doc__=schema.get("description"), **fields),
    )
    model.schema_defaults = defaults
    return model


def _attribute_name(prop: str, index: int, taken: set[str]) -> str:
    """A safe Python attribute for a property (the property itself is the alias)."""
    ok = (
        prop.isidentifier()
        and not keyword.iskeyword(prop)
        and not prop.startswith(("_", "model_"))
        and not hasattr(BaseModel, prop)
        and prop not in taken
        and prop != "schema_defaults"
    )
    return prop if ok else f"field_{index}"


def _annotation(schema: dict[str, Any], name: str, where: str, open_base: type[SchemaModel]) -> Any:
    _check_keywords(schema, where)
    if "const" in schema:
        return _literal([schema["const"]], where)
    if "enum" in schema:
        values = schema["enum"]
        if not isinstance(values, list) or not values:
            raise SchemaError(f"{where}.enum: must be a non-empty list")
        return _literal(values, where)
    kinds = schema.get("type")
    if kinds is None:
        kinds = ["object"] if "properties" in schema else []
    if isinstance(kinds, str):
        kinds = [kinds]
    if not isinstance(kinds, list) or any(k not in TYPES for k in kinds):
        raise SchemaError(f"{where}.type: must be one of {', '.join(TYPES)} (or a list of them)")
    nullable = bool(schema.get("nullable")) or "null" in kinds
    kinds = [k for k in kinds if k != "null"]
    if not kinds:
        return None if nullable and schema.get("type") else Any
    options = [_one_type(kind, schema, name, where, open_base) for kind in kinds]
    annotation: Any = options[0] if len(options) == 1 else Union[tuple(options)]  # noqa: UP007
    return annotation | None if nullable else annotation


def _literal(values: list[Any], where: str) -> Any:
    for value in values:
        if value is not None and not isinstance(value, str | int | float | bool):
            raise SchemaError(
                f"{where}: enum and const values must be strings, numbers or booleans"
            )
    return Literal[tuple(values)]


def _one_type(
    kind: str, schema: dict[str, Any], name: str, where: str, open_base: type[SchemaModel]
) -> Any:
    if kind == "string":
        return Annotated[
            str,
            Field(
                min_length=schema.get("minLength"),
                max_length=schema.get("maxLength"),
                pattern=schema.get("pattern"),
            ),
        ]
    if kind in ("integer", "number"):
        number: type = int if kind == "integer" else float
        return Annotated[
            number,
            Field(
                ge=schema.get("minimum"),
                le=schema.get("maximum"),
                gt=schema.get("exclusiveMinimum"),
                lt=schema.get("exclusiveMaximum"),
                multiple_of=schema.get("multipleOf"),
            ),
        ]
    if kind == "boolean":
        return bool
    if kind == "array":
        items = schema.get("items", {})
        if not isinstance(items, dict):
            raise SchemaError(f"{where}.items: must be one JSON Schema object (no tuples)")
        item = _annotation(items, f"{name}_item", f"{where}.items", open_base) if items else Any
        size = Field(min_length=schema.get("minItems"), max_length=schema.get("maxItems"))
        if schema.get("uniqueItems"):
            return Annotated[list[item], size, AfterValidator(_unique)]  # type: ignore[valid-type]
        return Annotated[list[item], size]  # type: ignore[valid-type]
    # object
    if "properties" in schema or schema.get("additionalProperties") in (None, False):
        return _object_model(schema, name, where, open_base)
    values = schema["additionalProperties"]
    if values is True:
        return dict[str, Any]
    if isinstance(values, dict):
        value_type = _annotation(
            values, f"{name}_value", f"{where}.additionalProperties", open_base
        )
        return dict[str, value_type]  # type: ignore[valid-type]
    raise SchemaError(f"{where}.additionalProperties: must be true, false or a schema")


def _unique(items: list[Any]) -> list[Any]:
    seen = set()
    for item in items:
        key = _json.dumps(to_plain(item))
        if key in seen:
            raise ValueError("items must be unique")
        seen.add(key)
    return items
