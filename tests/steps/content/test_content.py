"""GET /content: the welcome in the client's language (the article's GetLocalizedContent)."""

from __future__ import annotations

import httpx
import pytest

from tests.accounts import assert_envelope, sign_up


@pytest.mark.parametrize(
    ("accept_language", "message", "lang"),
    [
        ("en", "Welcome", "en"),
        ("vi", "Chào mừng", "vi"),
        ("ja", "ようこそ", "ja"),
        ("vi-VN,vi;q=0.9", "Chào mừng", "vi"),
        ("ja-JP,ja;q=0.9,en;q=0.8", "ようこそ", "ja"),
        ("fr-FR,en;q=0.5,vi;q=0.7", "Chào mừng", "vi"),
        ("ko-KR", "Welcome", "en"),
        (None, "Welcome", "en"),
    ],
)
async def test_the_welcome_is_in_the_clients_language(
    client: httpx.AsyncClient, accept_language: str | None, message: str, lang: str
) -> None:
    _, headers = await sign_up(client, "reader@example.com")
    if accept_language is not None:
        headers["Accept-Language"] = accept_language
    response = await client.get("/content", headers=headers)
    assert response.status_code == 200
    assert response.json() == {"message": message, "lang": lang}
    assert response.headers["content-language"] == lang


async def test_content_needs_a_signed_in_user(client: httpx.AsyncClient) -> None:
    response = await client.get("/content", headers={"Accept-Language": "ja"})
    assert assert_envelope(response, 401, "unauthorized")["error"] == "認証が必要です。"
