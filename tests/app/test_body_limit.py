"""MAX_BODY_BYTES: a larger body is a 413 envelope, declared or streamed."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.accounts import assert_envelope
from tests.conftest import make_settings, running_app

LIMIT = 4096


@pytest.mark.parametrize("language", ["en", "vi", "ja"])
async def test_a_declared_length_over_the_limit_is_refused_before_reading(
    db_url: str, language: str
) -> None:
    async with running_app(make_settings(db_url, max_body_bytes=LIMIT)) as client:
        response = await client.post(
            "/auth/register",
            content=b'{"email": "' + b"a" * LIMIT + b'"}',
            headers={"Content-Type": "application/json", "Accept-Language": language},
        )
    body = assert_envelope(response, 413, "payload_too_large")
    assert (
        body["error"]
        == {
            "en": "The request body is too large.",
            "vi": "Nội dung yêu cầu quá lớn.",
            "ja": "リクエストの本文が大きすぎます。",
        }[language]
    )


async def test_a_streamed_body_is_counted_and_cut_at_the_limit(db_url: str) -> None:
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b'{"email": "'
        for _ in range(64):
            sent += 1024
            yield b"a" * 1024
        yield b'"}'

    async with running_app(make_settings(db_url, max_body_bytes=LIMIT)) as client:
        response = await client.post(
            "/auth/register", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert "content-length" not in response.request.headers
        small = await client.post("/auth/register", json={"email": "a" * 100})
    assert_envelope(response, 413, "payload_too_large")
    assert_envelope(small, 400, "validation_failed")  # under the limit: read and validated
