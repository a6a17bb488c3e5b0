"""Translations: Accept-Language negotiation, complete catalogues, translated envelopes."""

from __future__ import annotations

import ast
import re
import shutil
import string
from pathlib import Path

import httpx
import pytest

from app.i18n import LOCALES_DIR, catalogs, negotiate, supported_locales, translate
from app.runtime import discover
from tests.accounts import assert_envelope, bearer, login, register
from tests.conftest import ROOT

LANGUAGES = ("en", "vi", "ja")
KEY = re.compile(r"^(error|validation|content)\.[a-z0-9_]+$")
# Pydantic error types a client commonly triggers; each has a message in every language.
VALIDATION_TYPES = [
    "missing",
    "extra_forbidden",
    "string_type",
    "string_too_short",
    "string_too_long",
    "string_pattern_mismatch",
    "int_type",
    "int_parsing",
    "int_from_float",
    "float_type",
    "float_parsing",
    "bool_type",
    "bool_parsing",
    "greater_than",
    "greater_than_equal",
    "less_than",
    "less_than_equal",
    "value_error",
    "email_invalid",
    "json_invalid",
    "literal_error",
    "enum",
    "model_attributes_type",
    "dict_type",
    "list_type",
    "too_short",
    "too_long",
    "uuid_parsing",
]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("vi-VN,vi;q=0.9", "vi"),
        ("ja-JP", "ja"),
        ("ja", "ja"),
        ("en-US,en;q=0.9", "en"),
        ("fr-FR,fr;q=0.9", "en"),
        ("fr;q=1, vi;q=0.5", "vi"),
        ("en;q=0.1, ja;q=0.8", "ja"),
        ("vi;q=0, ja;q=0.2", "ja"),
        ("VI-vn", "vi"),
        ("*", "en"),
        ("", "en"),
        (None, "en"),
        (";;;,,q=1,vi;q=abc", "en"),
        ("vi;q=2", "en"),
        ("zh-Hant-TW, ja;q=0.3", "ja"),
    ],
)
def test_accept_language_is_negotiated_by_quality(header: str | None, expected: str) -> None:
    assert negotiate(header) == expected


def test_a_huge_accept_language_header_is_cut_not_slow() -> None:
    assert negotiate("xx," * 100_000 + "vi") == "en"


def test_every_language_folder_is_a_supported_locale() -> None:
    assert set(supported_locales()) == set(LANGUAGES)
    assert supported_locales()[0] == "en"


def _keys_used_in_code() -> set[str]:
    """Every message key written in app/ and steps/: string constants that look like keys,
    `error.<code>` for each `AppError("code", ...)` that names no key of its own, and
    `validation.<type>` for each custom pydantic error type. Topics of the step graph
    (`content.submitted`) look like keys but are not."""
    topics = set(discover(ROOT / "steps").topics())
    keys: set[str] = set()
    for folder in ("app", "steps"):
        for path in (ROOT / folder).rglob("*.py"):
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    if KEY.match(node.value) and node.value not in topics:
                        keys.add(node.value)
                elif (
                    isinstance(node, ast.Call)
                    and getattr(node.func, "id", None) == "PydanticCustomError"
                    and isinstance(node.args[0], ast.Constant)
                ):
                    keys.add(f"validation.{node.args[0].value}")
                elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "AppError":
                    names_key = len(node.args) >= 3 or any(
                        k.arg == "message_key" for k in node.keywords
                    )
                    first = node.args[0] if node.args else None
                    if not names_key and isinstance(first, ast.Constant):
                        keys.add(f"error.{first.value}")
    return keys


def test_the_key_scan_finds_the_keys_of_the_platform_and_the_steps() -> None:
    keys = _keys_used_in_code()
    assert {"error.not_found", "error.invalid_token", "content.welcome"} <= keys
    assert {"error.email_taken", "error.rate_limited_retry"} <= keys
    assert {"validation.email_invalid", "validation.string_control_characters"} <= keys


@pytest.mark.parametrize("language", LANGUAGES)
def test_no_catalogue_misses_a_key_that_the_code_uses(language: str) -> None:
    catalog = catalogs()[language]
    required = _keys_used_in_code() | {f"validation.{t}" for t in VALIDATION_TYPES}
    missing = sorted(required - set(catalog))
    assert not missing, f"locales/{language} misses {missing}"


@pytest.mark.parametrize("language", ["vi", "ja"])
def test_translations_have_the_same_keys_and_placeholders_as_english(language: str) -> None:
    english, other = catalogs()["en"], catalogs()[language]
    assert set(other) == set(english)
    fields = string.Formatter()
    for key, text in english.items():
        want = {name for _, name, _, _ in fields.parse(text) if name}
        got = {name for _, name, _, _ in fields.parse(other[key]) if name}
        assert got == want, f"{language} {key}: placeholders {got} != {want}"
        if language != "en" and not key.startswith("validation."):
            assert other[key] != text, f"{language} {key} is not translated"


def test_the_po_sources_are_read_when_no_compiled_catalogue_exists(tmp_path: Path) -> None:
    copy = tmp_path / "locales"
    shutil.copytree(LOCALES_DIR, copy, ignore=shutil.ignore_patterns("*.mo"))
    assert not list(copy.rglob("*.mo"))
    assert catalogs(copy) == catalogs(LOCALES_DIR)


def test_a_compiled_catalogue_older_than_its_source_is_not_used(tmp_path: Path) -> None:
    copy = tmp_path / "locales"
    shutil.copytree(LOCALES_DIR, copy)
    po = copy / "vi" / "LC_MESSAGES" / "messages.po"
    po.write_text(po.read_text().replace('msgstr "Chào mừng"', 'msgstr "Xin chào"'))
    assert catalogs(copy)["vi"]["content.welcome"] == "Xin chào"


def test_translate_fills_placeholders_and_falls_back_to_english_then_the_key() -> None:
    assert translate("error.rate_limited_retry", "ja", retry_after=7) == (
        "リクエストが多すぎます。7秒後に再度お試しください。"
    )
    assert translate("content.welcome", "xx") == "Welcome"
    assert translate("no.such.key", "vi") == "no.such.key"
    assert translate("error.rate_limited_retry", "en") == (
        "Too many requests. Try again in {retry_after} seconds."
    )


# -- through HTTP ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("language", "message"),
    [
        ("en", "Resource not found."),
        ("vi-VN,vi;q=0.9", "Không tìm thấy tài nguyên."),
        ("ja", "リソースが見つかりません。"),
        ("de", "Resource not found."),
    ],
)
async def test_the_error_envelope_speaks_the_clients_language(
    client: httpx.AsyncClient, language: str, message: str
) -> None:
    response = await client.get("/no/such/page", headers={"Accept-Language": language})
    body = assert_envelope(response, 404, "not_found")
    assert body["error"] == message
    assert response.headers["content-language"] == negotiate(language)


@pytest.mark.parametrize(
    ("language", "top", "name", "age", "email"),
    [
        (
            "en",
            "Validation failed.",
            "Must be at least 2 characters long.",
            "Must be greater than or equal to 18.",
            "Must be a valid email address.",
        ),
        (
            "vi",
            "Dữ liệu không hợp lệ.",
            "Phải có ít nhất 2 ký tự.",
            "Phải lớn hơn hoặc bằng 18.",
            "Phải là một địa chỉ email hợp lệ.",
        ),
        (
            "ja",
            "入力内容に誤りがあります。",
            "2文字以上で入力してください。",
            "18以上の値を入力してください。",
            "有効なメールアドレスを入力してください。",
        ),
    ],
)
async def test_an_invalid_create_user_reads_in_the_clients_language(
    client: httpx.AsyncClient, language: str, top: str, name: str, age: str, email: str
) -> None:
    await register(client, "i18n@example.com")
    headers = bearer(await login(client, "i18n@example.com"), **{"Accept-Language": language})
    response = await client.post(
        "/users", json={"email": "not-an-email", "name": "A", "age": 17}, headers=headers
    )
    body = assert_envelope(response, 400, "validation_failed")
    assert body["error"] == top
    by_field = {d["field"]: d for d in body["details"]}
    assert by_field["name"]["message"] == name
    assert by_field["age"]["message"] == age
    assert by_field["email"]["message"] == email
    assert by_field["email"]["type"] == "email_invalid"


@pytest.mark.parametrize(
    ("language", "missing", "json"),
    [
        ("en", "This field is required.", "The body is not valid JSON."),
        ("vi", "Trường này là bắt buộc.", "Nội dung không phải là JSON hợp lệ."),
        ("ja", "この項目は必須です。", "本文が有効なJSONではありません。"),
    ],
)
async def test_missing_fields_and_malformed_json_are_translated(
    client: httpx.AsyncClient, language: str, missing: str, json: str
) -> None:
    headers = {"Accept-Language": language}
    response = await client.post("/auth/register", json={}, headers=headers)
    details = assert_envelope(response, 400, "validation_failed")["details"]
    assert {d["field"] for d in details} == {"email", "password"}
    assert {d["message"] for d in details} == {missing}

    headers["Content-Type"] = "application/json"
    response = await client.post("/auth/register", content=b'{"email": ', headers=headers)
    details = assert_envelope(response, 400, "validation_failed")["details"]
    assert details == [{"field": "body", "message": json, "type": "json_invalid"}]
