"""The one error family of Stepwise: errors are values carrying their status and a message key."""

from __future__ import annotations

from typing import Any


class AppError(Exception):
    """An error a step (or the platform) raises on purpose; rendered as the error envelope.

    `message_key` is looked up in the translation catalogues at the edge; `params` fill its
    placeholders; `details` is a list of dicts (for validation errors, one per field).
    """

    status: int = 400
    code: str = "bad_request"
    message_key: str = "error.bad_request"

    def __init__(
        self,
        code: str | None = None,
        status: int | None = None,
        message_key: str | None = None,
        details: list[dict[str, Any]] | None = None,
        *,
        headers: dict[str, str] | None = None,
        **params: Any,
    ) -> None:
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        if message_key is not None:
            self.message_key = message_key
        elif code is not None and type(self).message_key == AppError.message_key:
            self.message_key = f"error.{code}"
        self.details = details or []
        self.headers = headers or {}
        self.params = params
        super().__init__(f"{self.code}: {self.message_key}")


class ValidationFailed(AppError):
    status = 400
    code = "validation_failed"
    message_key = "error.validation_failed"


class Unauthorized(AppError):
    status = 401
    code = "unauthorized"
    message_key = "error.unauthorized"


class Forbidden(AppError):
    status = 403
    code = "forbidden"
    message_key = "error.forbidden"


class NotFound(AppError):
    status = 404
    code = "not_found"
    message_key = "error.not_found"


class Conflict(AppError):
    status = 409
    code = "conflict"
    message_key = "error.conflict"


class StepConfigError(Exception):
    """Start-up refused: one or more step files are wrong. The message lists file, field, reason."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{len(problems)} problem(s) in the steps:\n{lines}")


class EmitError(Exception):
    """A step emitted something it may not: an undeclared topic or data its subscribers refuse."""


class StateConflictError(Exception):
    """A state write could not be applied (for example a value that is not JSON)."""
