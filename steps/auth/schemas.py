"""What the auth API takes and returns."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.accounts import EmailAddress
from app.fields import SingleLine

# Long enough to resist guessing, short enough that hashing it is no denial of service.
PASSWORD_MIN, PASSWORD_MAX = 8, 256


class Register(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: EmailAddress
    password: str = Field(min_length=PASSWORD_MIN, max_length=PASSWORD_MAX)
    name: SingleLine | None = Field(None, min_length=2, max_length=100)


class Login(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Not EmailAddress: a malformed email is a wrong credential (401), not a hint (400).
    email: str = Field(min_length=1, max_length=320)
    password: str = Field(min_length=1, max_length=PASSWORD_MAX)


class TokenOut(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - the token type, not a secret
    expires_in: int
