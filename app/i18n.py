"""Translations: message keys to text in the client's language (en, vi, ja)."""

from __future__ import annotations

from typing import Any

DEFAULT_LOCALE = "en"
SUPPORTED_LOCALES = ("en",)

_MESSAGES: dict[str, str] = {
    "error.bad_request": "The request is not valid.",
    "error.validation_failed": "Validation failed.",
    "error.unauthorized": "Authentication is required.",
    "error.forbidden": "You are not allowed to do this.",
    "error.not_found": "Resource not found.",
    "error.method_not_allowed": "This method is not allowed here.",
    "error.conflict": "The resource already exists.",
    "error.payload_too_large": "The request body is too large.",
    "error.rate_limited": "Too many requests. Try again later.",
    "error.internal": "Something went wrong on our side.",
    "error.unavailable": "The service is not available right now.",
    "error.http": "The request failed.",
}


def translate(key: str, locale: str = DEFAULT_LOCALE, **params: Any) -> str:
    text = _MESSAGES.get(key, key)
    try:
        return text.format(**params) if params else text
    except (KeyError, IndexError, ValueError):
        return text


def negotiate(accept_language: str | None) -> str:
    return DEFAULT_LOCALE
