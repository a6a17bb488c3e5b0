"""The platform's view of the `users` table: principals for the auth middleware, admin accounts.

The table itself belongs to the users feature (`steps/users/models.py`); the platform finds it by
name in the shared MetaData once the steps are discovered, so `app/` never imports a feature.
What the platform relies on: `users(id UUID, email, role, password_hash)`, with Python-side
defaults for every other non-null column.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from typing import Annotated, Literal

from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator
from pydantic_core import PydanticCustomError
from sqlalchemy import Table, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.db import Base
from app.runtime import get_logger
from app.security import Passwords, Principal

log = get_logger(component="accounts")

MAX_EMAIL_CHARS = 254


class NoUsersTableError(RuntimeError):
    """No feature defines a `users` table (steps/users/models.py), so there are no accounts."""


def normalize_email(value: str) -> str:
    """The stored form of an email address: checked, trimmed and lower-cased (emails are unique
    without regard to case)."""
    value = value.strip()
    if len(value) > MAX_EMAIL_CHARS:
        raise ValueError("too long")
    try:
        checked = validate_email(value, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from None
    return checked.normalized.lower()


def _email(value: str) -> str:
    try:
        return normalize_email(value)
    except ValueError as exc:
        raise PydanticCustomError(
            "email_invalid", "value is not a valid email address: {reason}", {"reason": str(exc)}
        ) from None


EmailAddress = Annotated[str, AfterValidator(_email)]
"""A pydantic field type: a valid email address, normalized (error type `email_invalid`)."""


def users_table() -> Table:
    table = Base.metadata.tables.get("users")
    if table is None:
        raise NoUsersTableError(
            "no `users` table is defined: the users feature (steps/users/models.py) is missing"
        )
    return table


# -- principals, for the auth middleware ---------------------------------------------------------


class PrincipalCache:
    """What this process last read about a user id, for a few seconds (a bounded LRU).

    User ids are random UUIDs, so one cache serves every app of a process without mixing them.
    A change made in this process (`forget`) is seen at once; one made by another process, after
    at most the cache's lifetime.
    """

    def __init__(self, max_entries: int = 10_000) -> None:
        self._entries: OrderedDict[str, tuple[float, Principal | None]] = OrderedDict()
        self._max = max_entries

    def get(self, user_id: str, now: float) -> tuple[bool, Principal | None]:
        entry = self._entries.get(user_id)
        if entry is None or entry[0] <= now:
            return False, None
        self._entries.move_to_end(user_id)
        return True, entry[1]

    def put(self, user_id: str, principal: Principal | None, expires_at: float) -> None:
        self._entries[user_id] = (expires_at, principal)
        self._entries.move_to_end(user_id)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def forget(self, user_id: str) -> None:
        self._entries.pop(user_id, None)


principal_cache = PrincipalCache()


def forget_principal(user_id: str | uuid.UUID) -> None:
    """Drop what this process cached about a user (call it after changing or deleting one)."""
    principal_cache.forget(str(user_id))


async def read_principal(conn: AsyncConnection, user_id: uuid.UUID) -> Principal | None:
    table = users_table()
    row = (
        await conn.execute(
            select(table.c.id, table.c.email, table.c.role).where(table.c.id == user_id)
        )
    ).first()
    if row is None:
        return None
    return Principal(id=str(row.id), email=row.email, role=row.role)


# -- admin accounts ------------------------------------------------------------------------------

AdminOutcome = Literal["created", "promoted", "exists", "not_admin"]


async def ensure_first_admin(
    engine: AsyncEngine, email: str, password: str, hasher: Passwords
) -> AdminOutcome:
    """Create the admin account of the settings when no account has its email.

    An existing account is never changed, even when it is not an admin: otherwise whoever
    registered that address first would be promoted. `python -m app create-admin` does that,
    on purpose, for an operator.
    """
    email = normalize_email(email)
    table = users_table()
    async with engine.connect() as conn:
        existing = (
            await conn.execute(select(table.c.role).where(table.c.email == email))
        ).scalar_one_or_none()
    if existing is not None:
        if existing != "admin":
            log.warning("ADMIN_EMAIL belongs to an account that is not an admin; left unchanged")
            return "not_admin"
        return "exists"
    password_hash = await hasher.hash(password)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                insert(table).values(email=email, password_hash=password_hash, role="admin")
            )
    except IntegrityError:
        return "exists"  # another process created it at the same moment
    log.info("first admin created", email=email)
    return "created"


async def make_admin(
    engine: AsyncEngine, email: str, password: str, hasher: Passwords
) -> AdminOutcome:
    """Make `email` an admin with this password: create the account, or promote it and reset its
    password (an operator's command: `python -m app create-admin`)."""
    email = normalize_email(email)
    table = users_table()
    password_hash = await hasher.hash(password)
    async with engine.begin() as conn:
        user_id = (
            await conn.execute(select(table.c.id).where(table.c.email == email))
        ).scalar_one_or_none()
        if user_id is None:
            await conn.execute(
                insert(table).values(email=email, password_hash=password_hash, role="admin")
            )
            return "created"
        await conn.execute(
            update(table)
            .where(table.c.id == user_id)
            .values(role="admin", password_hash=password_hash)
        )
    forget_principal(user_id)
    return "promoted"
