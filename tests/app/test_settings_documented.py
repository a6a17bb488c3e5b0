"""Every setting is explained in .env.example and docs/configuration.md, and the example loads."""

from __future__ import annotations

import re

import pytest

from app.settings import Settings
from tests.conftest import ROOT

SETTINGS = [name.upper() for name in Settings.model_fields]


@pytest.mark.parametrize("document", [".env.example", "docs/configuration.md"])
def test_every_setting_is_documented(document: str) -> None:
    text = (ROOT / document).read_text()
    missing = [name for name in SETTINGS if not re.search(rf"\b{name}\b", text)]
    assert not missing, f"{document} does not mention {missing}"


def test_the_example_environment_file_is_valid() -> None:
    settings = Settings(_env_file=ROOT / ".env.example")  # type: ignore[call-arg]
    assert settings.jwt_algorithm == "HS256"
    assert settings.cors_methods == ["GET", "POST", "PUT", "PATCH", "DELETE"]
