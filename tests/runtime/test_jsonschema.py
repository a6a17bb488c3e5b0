"""JSON Schema to pydantic models: what JavaScript steps' body/query/input/responses become."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from app.runtime._jsonschema import SchemaError, model_from_schema, response_type, to_plain

MESSAGE = {
    "type": "object",
    "properties": {
        "text": {"type": "string", "minLength": 1, "maxLength": 10},
        "room": {"type": "string", "default": "general"},
        "priority": {"type": ["integer", "null"], "minimum": 0, "maximum": 5},
        "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
        "first-name": {"type": "string"},
        "json": {"type": "boolean"},
        "meta": {
            "type": "object",
            "properties": {"kind": {"enum": ["a", "b"]}},
            "required": ["kind"],
            "additionalProperties": False,
        },
        "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
    },
    "required": ["text"],
}


def errors(model: Any, data: Any) -> list[tuple[str, str]]:
    with pytest.raises(ValidationError) as info:
        model.model_validate(data)
    return [(".".join(map(str, e["loc"])), e["type"]) for e in info.value.errors()]


def test_the_handler_gets_exactly_what_was_sent_plus_defaults() -> None:
    model = model_from_schema(MESSAGE, "Message", "config.body")
    value = model.model_validate(
        {"text": "hi", "first-name": "Ann", "json": True, "extra": [1], "meta": {"kind": "a"}}
    )
    # no null for every property left out; defaults filled; unknown properties kept
    assert to_plain(value) == {
        "text": "hi",
        "room": "general",
        "first-name": "Ann",
        "json": True,
        "meta": {"kind": "a"},
        "extra": [1],
    }


def test_each_failing_field_is_named() -> None:
    model = model_from_schema(MESSAGE, "Message", "config.body")
    assert errors(model, {}) == [("text", "missing")]
    assert errors(model, {"text": ""}) == [("text", "string_too_short")]
    assert errors(model, {"text": "hi", "priority": 9}) == [("priority", "less_than_equal")]
    assert errors(model, {"text": "hi", "tags": ["a", "a"]}) == [("tags", "value_error")]
    assert errors(model, {"text": "hi", "meta": {"kind": "c", "x": 1}}) == [
        ("meta.kind", "literal_error"),
        ("meta.x", "extra_forbidden"),
    ]
    assert errors(model, {"text": "hi", "counts": {"a": "x"}}) == [("counts.a", "int_parsing")]
    assert model.model_validate({"text": "hi", "priority": None}).model_dump()  # nullable


def test_the_openapi_schema_keeps_the_property_names() -> None:
    schema = model_from_schema(MESSAGE, "Message", "config.body").model_json_schema()
    assert {"text", "first-name", "json", "room"} <= set(schema["properties"])
    assert schema["required"] == ["text"]


def test_a_response_schema_drops_undeclared_properties() -> None:
    shape = response_type(
        {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]},
        "Reply",
        "config.responses.200",
    )
    adapter: TypeAdapter[Any] = TypeAdapter(shape)
    shaped = adapter.dump_python(adapter.validate_python({"id": "1", "password_hash": "x"}))
    assert shaped == {"id": "1"}


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ({"type": "string"}, 'config.body: must be a JSON Schema with "type": "object"'),
        (
            {"type": "object", "properties": {"a": {"anyOf": []}}},
            "config.body.properties.a: JSON Schema keyword 'anyOf' is not supported",
        ),
        (
            {"type": "object", "properties": {"a": {"type": "date"}}},
            "config.body.properties.a.type: must be one of string, integer",
        ),
        ({"type": "object", "required": "a"}, "config.body.required: must be a list"),
        (
            {"type": "object", "properties": {"a": {"type": "array", "items": [{}]}}},
            "config.body.properties.a.items: must be one JSON Schema object",
        ),
    ],
)
def test_an_unsupported_schema_is_refused_with_its_path(
    schema: dict[str, Any], message: str
) -> None:
    with pytest.raises(SchemaError) as info:
        model_from_schema(schema, "Body", "config.body")
    assert message in str(info.value)
