"""Property: whatever body, query and headers reach whatever endpoint, the answer is never a 500
and every error is the envelope.

Two properties per route: well-formed requests (bodies that pass validation, real tokens), so
that the handlers and services run with many values; and anything at all (random JSON, bytes,
headers, tokens), so that the edges hold.
"""

from __future__ import annotations

import json
import string
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.runtime import ApiStepConfig, ManualClock, discover
from tests.accounts import admin_settings, bearer, login, sign_in_admin, sign_up
from tests.conftest import ROOT, running_app

HEADERS = [
    "authorization",
    "accept-language",
    "content-type",
    "x-forwarded-for",
    "x-trace-id",
    "traceparent",
    "origin",
    "x-anything",
]
FIELDS = ["email", "password", "name", "age", "role", "limit", "offset", "id"]
PRINTABLE = st.text(alphabet=string.printable.strip() + " ", max_size=60)
LANGUAGES = st.sampled_from(["en", "vi-VN,vi;q=0.9", "ja", "fr;q=0.5, *;q=0.1"])

# -- well-formed values -------------------------------------------------------------------------

emails = (
    st.sampled_from(
        ["new@example.com", "fuzz@example.com", "Other@Example.COM", "root@example.com"]
    )
    | st.emails()
)
names = st.sampled_from(["Ann", "Bob Lee", "Đặng Thị Mỹ", "山田太郎"]) | st.text(
    min_size=2, max_size=100
).filter(lambda s: len(s.strip()) >= 2)
ages = st.integers(min_value=18, max_value=150)
WELL_FORMED = {
    "/auth/register": st.fixed_dictionaries(
        {"email": emails, "password": st.text(min_size=8, max_size=64)},
        optional={"name": names},
    ),
    "/auth/login": st.fixed_dictionaries(
        {
            "email": emails,
            "password": st.sampled_from(["correct horse battery", "admin-password-123"])
            | st.text(min_size=1, max_size=64),
        }
    ),
    "/users": st.fixed_dictionaries({"email": emails, "name": names, "age": ages}),
    "/users/{id}": st.fixed_dictionaries(
        {},
        optional={
            "email": emails,
            "name": names,
            "age": ages,
            "role": st.sampled_from(["user", "admin"]),
        },
    ),
    "/orders": st.fixed_dictionaries(
        {
            "items": st.lists(
                st.fixed_dictionaries(
                    {
                        "sku": st.sampled_from(["BOOK-1", "MUG-1", "TSHIRT-M", "NOPE-1"]),
                        "quantity": st.integers(min_value=1, max_value=100),
                    }
                ),
                min_size=1,
                max_size=5,
            )
        },
        optional={
            "card_number": st.sampled_from(
                ["4242 4242 4242 4242", "4000000000000002", "5555555555554444"]
            )
        },
    ),
}
WELL_FORMED_QUERY = st.fixed_dictionaries(
    {}, optional={"limit": st.integers(1, 100), "offset": st.integers(0, 1_000_000)}
)

# -- anything -----------------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=12,
)
ANY_BODY = st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=80),
    st.text(max_size=80).map(str.encode),
)
ANY_QUERY = st.dictionaries(st.sampled_from(["limit", "offset", "x"]), PRINTABLE, max_size=3)


def _routes() -> list[tuple[str, str]]:
    """Every API step's (method, path), found the way the app finds them."""
    routes = []
    for step in discover(ROOT / "steps").api_steps:
        assert isinstance(step.config, ApiStepConfig)
        routes.append((step.config.method, step.config.path))
    return sorted(routes)


ROUTES = _routes()


@dataclass
class Fuzz:
    client: httpx.AsyncClient
    clock: ManualClock
    tokens: dict[str, str]
    ids: list[str]


@pytest.fixture
async def fuzz(db_url: str) -> AsyncIterator[Fuzz]:
    clock = ManualClock()
    async with running_app(admin_settings(db_url), clock=clock) as client:
        _user, user_headers = await sign_up(client, "fuzz@example.com")
        other, _ = await sign_up(client, "other@example.com")
        admin = await sign_in_admin(client)
        tokens = {
            "user": user_headers["Authorization"],
            "admin": admin["Authorization"],
            "other": bearer(await login(client, "other@example.com"))["Authorization"],
        }
        yield Fuzz(client, clock, tokens, [other["id"], str(uuid.uuid4())])


def _path(draw: st.DrawFn, fuzz: Fuzz, route: str, ids: st.SearchStrategy[str]) -> str:
    if "{id}" not in route:
        return route
    return route.replace("{id}", quote(draw(ids), safe=""))


@st.composite
def well_formed(draw: st.DrawFn, fuzz: Fuzz, method: str, route: str) -> dict[str, Any]:
    credential = draw(st.sampled_from(["user", "admin", "other"]))
    body = WELL_FORMED.get(route)
    return {
        "method": method,
        "url": _path(draw, fuzz, route, st.sampled_from(fuzz.ids)),
        "params": draw(WELL_FORMED_QUERY) if method == "GET" else {},
        "headers": {
            "authorization": fuzz.tokens[credential],
            "accept-language": draw(LANGUAGES),
            "content-type": "application/json",
        },
        "content": json.dumps(draw(body)).encode() if body is not None else None,
    }


@st.composite
def anything(draw: st.DrawFn, fuzz: Fuzz, method: str, route: str) -> dict[str, Any]:
    headers = draw(st.dictionaries(st.sampled_from(HEADERS), PRINTABLE, max_size=4))
    credential = draw(st.sampled_from([None, "user", "admin", "other"]))
    if credential is not None:
        headers["authorization"] = fuzz.tokens[credential]
    if draw(st.booleans()):
        headers["content-type"] = "application/json"
    ids = st.sampled_from(fuzz.ids) | st.text(min_size=1, max_size=40)
    return {
        "method": method,
        "url": _path(draw, fuzz, route, ids),
        "params": draw(ANY_QUERY),
        "headers": headers,
        "content": draw(ANY_BODY) if method != "GET" else None,
    }


async def _check(fuzz: Fuzz, request: dict[str, Any]) -> None:
    fuzz.clock.advance(61)  # a fresh rate-limit window: the examples reach their handlers
    response = await fuzz.client.request(**request)
    assert response.status_code < 500, (request, response.status_code, response.text)
    assert "x-trace-id" in response.headers
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error", "code", "details", "trace_id"}, (request, body)
        assert isinstance(body["error"], str) and body["error"]
        assert isinstance(body["code"], str) and body["code"]
        assert isinstance(body["details"], list)
        assert body["trace_id"] == response.headers["x-trace-id"]


PROPERTY = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.mark.parametrize(("method", "route"), ROUTES)
@PROPERTY
@given(data=st.data())
async def test_well_formed_requests_never_give_a_500(
    fuzz: Fuzz, method: str, route: str, data: st.DataObject
) -> None:
    await _check(fuzz, data.draw(well_formed(fuzz, method, route)))


@pytest.mark.parametrize(("method", "route"), ROUTES)
@PROPERTY
@given(data=st.data())
async def test_any_request_gives_no_500_and_every_error_is_the_envelope(
    fuzz: Fuzz, method: str, route: str, data: st.DataObject
) -> None:
    await _check(fuzz, data.draw(anything(fuzz, method, route)))
