"""Hostile inputs: bodies over the limit however they are sent, JSON nested 100,000 deep, huge
strings and fields, unicode and control characters. Each is refused with an envelope (400/413)
or stored and given back intact; none is a 500.

tests/app/test_body_limit.py holds the declared and the chunked body over MAX_BODY_BYTES;
tests/test_no_input_gives_500.py and tests/reliability/test_api_fuzz.py throw random inputs.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.accounts import PASSWORD, assert_envelope, login, register, sign_up
from tests.conftest import make_settings, running_app
from tests.reliability.figures import count
from tests.runtime.conftest import step_app

LIMIT = 64 * 1024
JSON = {"Content-Type": "application/json"}

# A step without a body model (its body is any JSON) that keeps what it gets in state and
# gives back what state holds: what a body-less step can store, it must be able to return.
KEEPER = {
    "keep_step.py": """
        config = {"name": "Keep", "type": "api", "path": "/keep/{key}", "method": "PUT",
                  "auth": "public"}
        async def handler(req, ctx):
            await ctx.state.set("kept", req.params["key"], req.body)
            return {"status": 200, "body": await ctx.state.get("kept", req.params["key"])}
    """
}


def _refused(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    count("hostile inputs refused")
    return assert_envelope(response, status, code)


@pytest.fixture
async def small(db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The app with MAX_BODY_BYTES = 64 KiB."""
    async with running_app(make_settings(db_url, max_body_bytes=LIMIT)) as client:
        yield client


# -- size ----------------------------------------------------------------------------------------


async def test_a_body_longer_than_its_content_length_says_is_cut_at_the_limit(
    small: httpx.AsyncClient,
) -> None:
    """A client declaring 100 bytes and sending 200 KiB is counted, not believed."""
    body = b'{"email": "' + b"a" * (200 * 1024) + b'"}'
    response = await small.post(
        "/auth/register", content=body, headers={**JSON, "Content-Length": "100"}
    )
    _refused(response, 413, "payload_too_large")


@pytest.mark.parametrize("declared", ["abc", "-1", "1e9", " ", "99999999999999999999999"])
async def test_a_content_length_that_is_no_length_is_no_500(
    small: httpx.AsyncClient, declared: str
) -> None:
    response = await small.post(
        "/auth/login",
        content=b'{"email": "a@example.com", "password": "x"}',
        headers={**JSON, "Content-Length": declared},
    )
    assert response.status_code in (400, 401, 413), response.text
    _refused(response, response.status_code, response.json()["code"])


async def test_a_body_just_under_the_limit_is_read_and_validated(
    small: httpx.AsyncClient,
) -> None:
    body = json.dumps({"email": "a" * (LIMIT - 100), "password": "x"}).encode()
    assert len(body) < LIMIT
    response = await small.post("/auth/login", content=body, headers=JSON)
    _refused(response, 400, "validation_failed")


# -- depth ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000,
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 100_000,
        b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
        b'{"email": ' + b"[" * 5_000 + b"]" * 5_000 + b"}",
    ],
    ids=["unclosed arrays", "closed arrays", "unclosed objects", "closed objects", "in a field"],
)
async def test_json_nested_100000_deep_is_a_400_not_a_recursion_error(
    client: httpx.AsyncClient, body: bytes
) -> None:
    """The Python JSON parser raises RecursionError past ~1,000 levels; the answer is a 400
    naming the body, not a 500 (it used to be a 400 without the validation envelope)."""
    response = await client.post("/auth/register", content=body, headers=JSON)
    details = _refused(response, 400, "validation_failed")["details"]
    assert [d["field"] for d in details] == ["body"]  # type: ignore[index]
    assert details[0]["type"] in ("json_invalid", "json_too_deep")  # type: ignore[index]


@pytest.mark.parametrize(("depth", "status"), [(64, 200), (65, 400), (300, 400), (1_000, 400)])
async def test_a_body_less_step_takes_json_64_levels_deep_and_refuses_deeper(
    tmp_path: Path, db_url: str, depth: int, status: int
) -> None:
    """orjson reads 1,024 levels but writes only 254: a body 300 deep used to be read, then
    fail to be stored in state (a 500). Bodies deeper than 64 levels are refused up front."""
    body = b"[" * depth + b"]" * depth
    async with step_app(tmp_path, db_url, KEEPER) as client:
        response = await client.put("/keep/deep", content=body, headers=JSON)
    if status == 200:
        assert response.status_code == 200, response.text
        assert response.content == body
    else:
        details = _refused(response, 400, "validation_failed")["details"]
        assert details == [
            {
                "field": "body",
                "message": "The JSON is nested too deeply (at most 64 levels).",
                "type": "json_too_deep",
            }
        ]


async def test_wide_bodies_and_brackets_in_strings_are_not_mistaken_for_depth(
    tmp_path: Path, db_url: str
) -> None:
    wide = json.dumps({"items": [{"n": i, "tags": [[i]]} for i in range(5_000)]}).encode()
    brackets = json.dumps({"text": "[{" * 10_000, "more": ["[[[[" * 100]}).encode()
    async with step_app(tmp_path, db_url, KEEPER) as client:
        for key, body in (("wide", wide), ("brackets", brackets)):
            response = await client.put(f"/keep/{key}", content=body, headers=JSON)
            assert response.status_code == 200, response.text
            assert response.json() == json.loads(body)


# -- breadth and length --------------------------------------------------------------------------


async def test_a_body_of_60000_unknown_fields_gets_a_short_answer(
    client: httpx.AsyncClient,
) -> None:
    """Each unknown field is an error: the answer lists the first 50, not 60,000 (it was 5 MB
    for a 770 KB request)."""
    body = json.dumps({f"field{i}": 1 for i in range(60_000)}).encode()
    started = time.perf_counter()
    response = await client.post("/auth/register", content=body, headers=JSON)
    elapsed = time.perf_counter() - started
    details = _refused(response, 400, "validation_failed")["details"]
    assert len(details) == 50  # type: ignore[arg-type]
    assert len(response.content) < 16 * 1024
    assert elapsed < 10, elapsed  # generous: it is about not doing 60,000 translations


async def test_a_huge_field_name_is_not_echoed_back_whole(client: httpx.AsyncClient) -> None:
    body = json.dumps({"x" * 500_000: 1, "email": "a@example.com", "password": PASSWORD})
    response = await client.post("/auth/register", content=body.encode(), headers=JSON)
    details = _refused(response, 400, "validation_failed")["details"]
    assert len(details[0]["field"]) == 200  # type: ignore[index]
    assert len(response.content) < 2048


@pytest.mark.parametrize(
    ("path", "field", "auth"),
    [
        ("/auth/register", "email", False),
        ("/auth/register", "password", False),
        ("/auth/register", "name", False),
        ("/auth/login", "password", False),
        ("/users", "name", True),
        ("/users", "email", True),
    ],
)
async def test_a_string_of_900_kb_is_refused_without_being_echoed(
    client: httpx.AsyncClient, path: str, field: str, auth: bool
) -> None:
    headers = dict(JSON)
    if auth:
        _, signed_in = await sign_up(client, "long@example.com")
        headers.update(signed_in)
    body = {"email": "ok@example.com", "password": PASSWORD, "name": "Ok", "age": 30}
    if path == "/auth/login":
        body = {"email": "ok@example.com", "password": PASSWORD}
    elif path == "/auth/register":
        body.pop("age")
    else:
        body.pop("password")
    body[field] = "é" * 450_000  # 900 KB of UTF-8
    content = json.dumps(body, ensure_ascii=False).encode()
    response = await client.post(path, content=content, headers=headers)
    details = _refused(response, 400, "validation_failed")["details"]
    assert [d["field"] for d in details] == [field]  # type: ignore[index]
    assert len(response.content) < 2048


# -- unicode and control characters --------------------------------------------------------------

NAMES = {
    "emoji and a skin tone": "Zoë 👩🏽‍💻 🇻🇳",
    "right to left": "مرحبا بالعالم שלום",
    "combining marks": "e\u0301 a\u0308 Tiê\u0301ng Việt",  # decomposed: kept as sent
    "bidi override": "abc\u202edcba",
    "zero width joiner and non-joiner": "a\u200db\u200cc",
    "byte order mark": "\ufeffName",
    "astral plane": "\U0001d573\U0001d58a\U0001d591\U0001d591\U0001d594 \U00010348",
    "Japanese and Vietnamese": "山田太郎 Đặng Thị Mỹ",
}


async def test_unicode_names_are_stored_and_returned_intact(any_db_url: str) -> None:
    async with running_app(make_settings(any_db_url)) as client:
        me, headers = await sign_up(client, "unicode@example.com")
        for i, (kind, name) in enumerate(NAMES.items()):
            created = await client.post(
                "/users",
                json={"email": f"u{i}@example.com", "name": name, "age": 30},
                headers=headers,
            )
            assert created.status_code == 201, (kind, created.text)
            assert created.json()["name"] == name, kind
            read = await client.get(f"/users/{created.json()['id']}", headers=headers)
            assert read.json()["name"] == name, kind
            renamed = await client.patch(
                f"/users/{me['id']}", json={"name": name + "!"}, headers=headers
            )
            assert renamed.status_code == 200, (kind, renamed.text)
            assert (await client.get("/auth/me", headers=headers)).json()["name"] == name + "!"
            count("unicode inputs kept intact")


async def test_a_password_of_any_unicode_and_a_null_byte_signs_in(any_db_url: str) -> None:
    password = "pässwörd 🔑 \u0000 e\u0301 مرحبا"
    async with running_app(make_settings(any_db_url)) as client:
        await register(client, "nul@example.com", password=password)
        assert await login(client, "nul@example.com", password)
        composed = password.replace("e\u0301", "\u00e9")  # looks the same, is not the same
        response = await client.post(
            "/auth/login", json={"email": "nul@example.com", "password": composed}
        )
    _refused(response, 401, "invalid_credentials")


@pytest.mark.parametrize(
    "name",
    ["a\u0000b", "line\nbreak", "tab\there", "esc\u001b[31m", "del\u007f", "c1\u0085", "cr\r"],
    ids=["NUL", "LF", "TAB", "ESC", "DEL", "NEL", "CR"],
)
async def test_a_name_with_control_characters_is_a_400_on_every_database(
    any_db_url: str, name: str
) -> None:
    """Postgres text cannot hold NUL, and no name needs a control character: refused for both
    databases alike, on create and on update."""
    async with running_app(make_settings(any_db_url)) as client:
        user, headers = await sign_up(client, "control@example.com")
        created = await client.post(
            "/users", json={"email": "c@example.com", "name": name, "age": 30}, headers=headers
        )
        updated = await client.patch(f"/users/{user['id']}", json={"name": name}, headers=headers)
        registered = await client.post(
            "/auth/register", json={"email": "r@example.com", "password": PASSWORD, "name": name}
        )
    for response in (created, updated, registered):
        details = _refused(response, 400, "validation_failed")["details"]
        assert details[0]["type"] == "string_control_characters"  # type: ignore[index]


async def test_a_lone_surrogate_is_a_400(client: httpx.AsyncClient) -> None:
    _, headers = await sign_up(client, "surrogate@example.com")
    for body in (
        b'{"email": "s@example.com", "name": "ab\\ud800", "age": 30}',
        b'{"email": "s\\udfff@example.com", "name": "Ann", "age": 30}',
    ):
        response = await client.post("/users", content=body, headers={**headers, **JSON})
        details = _refused(response, 400, "validation_failed")["details"]
        assert details[0]["type"] in ("string_unicode", "email_invalid")  # type: ignore[index]


async def test_null_bytes_in_paths_and_queries_are_400_or_404(client: httpx.AsyncClient) -> None:
    _, headers = await sign_up(client, "nulpath@example.com")
    _refused(await client.get("/users/%00", headers=headers), 404, "not_found")
    _refused(await client.get("/users/a%00b", headers=headers), 404, "not_found")
    _refused(await client.get("/users?limit=%00", headers=headers), 400, "validation_failed")
    _refused(await client.get("/users?offset=1%002", headers=headers), 400, "validation_failed")


async def test_free_form_json_keeps_null_bytes_and_any_unicode_on_every_database(
    tmp_path: Path, any_db_url: str
) -> None:
    """Where text is free (a body-less step's JSON, kept in state), a NUL, a lone escape-worthy
    character or an emoji is stored and given back exactly: state is JSON text, so even
    Postgres' text, which refuses a NUL, keeps `\\u0000`."""
    value = {
        "nul": "a\u0000b",
        "controls": "\u0001\u001f\u007f\u0085",
        **NAMES,
        "key\u0000with nul": True,
    }
    async with step_app(tmp_path, any_db_url, KEEPER) as client:
        response = await client.put("/keep/text", json=value)
    assert response.status_code == 200, response.text
    assert response.json() == value
    count("unicode inputs kept intact")
