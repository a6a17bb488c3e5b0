"""Who may use the Workbench: anyone outside production, admins (and a metrics token) in it."""

from __future__ import annotations

import hmac

from fastapi import Request

from app.runtime import AppError, Forbidden, Unauthorized
from app.runtime._api import role_of

# Mutations must carry this header: a cross-site form or image cannot set it, and a
# cross-origin fetch that sets it needs a CORS preflight the app does not grant.
MUTATION_HEADER = "x-stepwise-workbench"


def check_admin(request: Request) -> None:
    """Public outside production; in production a signed-in admin (401 / 403 envelopes)."""
    if not request.app.state.settings.is_production:
        return
    user = request.scope.get("user")
    if user is None:
        raise Unauthorized()
    if role_of(user) != "admin":
        raise Forbidden()


def require_reader(request: Request) -> None:
    check_admin(request)


def require_writer(request: Request) -> None:
    check_admin(request)
    if request.headers.get(MUTATION_HEADER) != "1":
        raise AppError(
            "workbench_header_missing",
            403,
            "error.forbidden",
            [{"field": MUTATION_HEADER, "message": f"send the header {MUTATION_HEADER}: 1"}],
        )


def require_metrics_reader(request: Request) -> None:
    """`/metrics`: like the Workbench, or `Authorization: Bearer <METRICS_TOKEN>` when set."""
    token = request.app.state.settings.metrics_token
    if token is not None:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode(), token.get_secret_value().encode()
        ):
            return
    check_admin(request)
