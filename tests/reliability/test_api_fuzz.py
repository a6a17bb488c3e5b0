"""Schemathesis over /openapi.json, in process: every documented operation, called with each
generated case anonymously, as a user and as an admin. No answer is a 5xx; every answer has a
documented status, content type and body (the checks of schemathesis); every error is the
envelope with the request's trace id.

Bounded and reproducible: a fixed seed, derandomized generation, a few examples per operation
(the whole run takes well under two minutes). Operations added later are fuzzed as they come.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from schemathesis.config import SchemathesisConfig
from schemathesis.core.transport import Response
from schemathesis.python import asgi
from schemathesis.schemas import BaseSchema

from app.main import create_app
from app.runtime import Clock
from tests.accounts import ADMIN_EMAIL, ADMIN_PASSWORD, PASSWORD, admin_settings
from tests.reliability.figures import count

MAX_EXAMPLES = 10  # per operation and generation phase; each case is sent three times

CONFIG = SchemathesisConfig.from_dict(
    {
        "seed": 20_261_125,
        # A slow machine (CI on Postgres) must not turn Hypothesis' health checks into failures.
        "suppress-health-check": ["all"],
        "generation": {
            "mode": "all",  # valid inputs, and inputs the schema forbids
            "max-examples": MAX_EXAMPLES,
            "deterministic": True,
            "database": "none",
        },
        "phases": {"stateful": {"enabled": False}},
        # A valid body may still be refused for a good reason (409 taken, 404 unknown id, 401
        # without a token): only "no 5xx" and the documented shapes are asserted.
        "checks": {"positive_data_acceptance": {"enabled": False}},
    }
)


class SkippingClock(Clock):
    """Real time plus the windows skipped so far. The app runs on schemathesis' event loop
    thread: skipping only moves `now()` and wakes nothing there (a ManualClock would)."""

    def __init__(self) -> None:
        super().__init__()
        self.skipped = 0.0

    def now(self) -> float:
        return time.time() + self.skipped


@dataclass
class FuzzTarget:
    schema: BaseSchema
    clock: SkippingClock
    credentials: dict[str, dict[str, str]]


def _token(client: Any, email: str, password: str) -> str:
    response = client.post("/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


@pytest.fixture
def fuzz_target(db_url: str) -> Iterator[FuzzTarget]:
    """The app on its own database, its lifespan run by schemathesis' ASGI client."""
    clock = SkippingClock()
    app = create_app(admin_settings(db_url), clock=clock)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=CONFIG)
    try:
        with asgi.get_client(app) as client:
            registered = client.post(
                "/auth/register", json={"email": "fuzz@example.com", "password": PASSWORD}
            )
            assert registered.status_code == 201, registered.text
            credentials = {
                "anonymous": {},
                "user": {"Authorization": f"Bearer {_token(client, 'fuzz@example.com', PASSWORD)}"},
                "admin": {"Authorization": f"Bearer {_token(client, ADMIN_EMAIL, ADMIN_PASSWORD)}"},
            }
        yield FuzzTarget(schema, clock, credentials)
    finally:
        asgi.shutdown_lifespans()


@pytest.fixture
def fuzz_schema(fuzz_target: FuzzTarget, request: pytest.FixtureRequest) -> BaseSchema:
    # schemathesis 4 renames the test node through `_nodeid`, which pytest 9 no longer has.
    request.node._nodeid = request.node.nodeid
    return fuzz_target.schema


def error_is_the_envelope(ctx: Any, response: Response, case: Any) -> bool | None:
    """Every answer carries X-Trace-Id; every error is `{error, code, details, trace_id}` with
    that trace id (the schema allows more: this is the project's own contract)."""
    trace_ids = response.headers.get("x-trace-id") or []
    assert len(trace_ids) == 1, f"X-Trace-Id: {trace_ids}"
    if response.status_code < 400:
        return None
    body = response.json()
    assert isinstance(body, dict), body
    assert set(body) == {"error", "code", "details", "trace_id"}, body
    assert isinstance(body["error"], str) and body["error"], body
    assert isinstance(body["code"], str) and body["code"], body
    assert isinstance(body["details"], list), body
    assert body["trace_id"] == trace_ids[0], body
    return None


schema = schemathesis.pytest.from_fixture("fuzz_schema")


@schema.parametrize()
def test_no_generated_request_gives_a_5xx_or_an_undocumented_answer(
    case: Any, fuzz_target: FuzzTarget
) -> None:
    count("fuzz: cases generated")
    for who, headers in fuzz_target.credentials.items():
        fuzz_target.clock.skipped += 61  # a fresh rate-limit window: cases reach their handlers
        response = case.call(headers=headers, timeout=30)
        count("fuzz: requests sent")
        count(f"fuzz: {who} answers {response.status_code // 100}xx")
        case.validate_response(response, headers=headers, additional_checks=[error_is_the_envelope])
