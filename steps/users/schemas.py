"""What the users API takes and returns."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from app.accounts import EmailAddress
from app.fields import SingleLine


class CreateUser(BaseModel):
    """The article's CreateUser: email, a name of 2 to 100 characters, an adult's age."""

    model_config = ConfigDict(extra="forbid")

    email: EmailAddress
    name: SingleLine = Field(min_length=2, max_length=100)
    age: StrictInt = Field(ge=18, le=150)


class UpdateUser(BaseModel):
    """The fields to change (leave a field out to keep it; null is refused); `role` only by an
    admin."""

    model_config = ConfigDict(extra="forbid")

    email: EmailAddress = Field(None)  # type: ignore[assignment]
    name: SingleLine = Field(None, min_length=2, max_length=100)  # type: ignore[assignment]
    age: StrictInt = Field(None, ge=18, le=150)  # type: ignore[assignment]
    role: Literal["user", "admin"] = Field(None)  # type: ignore[assignment]


class ListUsersQuery(BaseModel):
    limit: int = Field(20, ge=1, le=100)
    offset: int = Field(0, ge=0, le=1_000_000)


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    email: str
    name: str | None
    age: int | None
    role: str
    created_at: datetime
    updated_at: datetime


class UserPage(BaseModel):
    items: list[UserOut]
    total: int
    limit: int
    offset: int
