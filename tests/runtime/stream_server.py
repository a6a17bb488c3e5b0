"""The app as a server process for the multi-process streams tests: settings from the
environment, the test auth (HeaderUser) and the test token authenticator."""

from __future__ import annotations

import os

from fastapi import FastAPI

from app.main import create_app
from app.settings import Settings
from tests.runtime.conftest import HeaderUser, authenticate_test_token


def create() -> FastAPI:
    role = os.environ.get("STEPWISE_ROLE", "dev")
    app = create_app(Settings(), role=role)  # type: ignore[arg-type]
    app.add_middleware(HeaderUser)
    app.state.runtime.set_stream_authenticator(authenticate_test_token)
    return app
