"""The users feature's logic: create, list, read, change and delete accounts.

Services take a session and never commit: the step's unit of work commits when the handler
succeeds (together with its state writes and emits), or rolls everything back.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts import forget_principal
from app.fields import parse_uuid
from app.runtime import Conflict, Forbidden, NotFound
from app.security import Principal
from steps.users.models import User
from steps.users.schemas import CreateUser, UpdateUser


def email_taken() -> Conflict:
    return Conflict("email_taken", message_key="error.email_taken")


def user_not_found() -> NotFound:
    return NotFound(message_key="error.user_not_found")


async def email_exists(session: AsyncSession, email: str) -> bool:
    found = await session.scalar(select(User.id).where(User.email == email))
    return found is not None


async def add_user(session: AsyncSession, user: User) -> User:
    """Insert, turning a race on the unique email (two requests at once) into a 409."""
    if await email_exists(session, user.email):
        raise email_taken()
    session.add(user)
    try:
        await session.flush()
    except IntegrityError:
        raise email_taken() from None
    return user


async def create_user(session: AsyncSession, data: CreateUser) -> User:
    return await add_user(session, User(email=data.email, name=data.name, age=data.age))


async def list_users(session: AsyncSession, limit: int, offset: int) -> tuple[list[User], int]:
    total = await session.scalar(select(func.count()).select_from(User)) or 0
    rows = await session.scalars(
        select(User).order_by(User.created_at, User.id).limit(limit).offset(offset)
    )
    return list(rows), total


async def get_user(session: AsyncSession, user_id: Any) -> User:
    """The user, or 404 (an id that is not a UUID cannot exist either)."""
    parsed = parse_uuid(user_id)
    user = await session.get(User, parsed) if parsed is not None else None
    if user is None:
        raise user_not_found()
    return user


def check_may_change(actor: Principal, user_id: Any) -> None:
    """Users change their own account; admins change anyone's. A user asking about someone
    else's id gets 403 before any lookup, so ids cannot be probed."""
    if actor.is_admin:
        return
    if parse_uuid(user_id) != parse_uuid(actor.id):
        raise Forbidden(message_key="error.not_your_account")


async def update_user(
    session: AsyncSession, actor: Principal, user_id: Any, changes: UpdateUser
) -> User:
    check_may_change(actor, user_id)
    fields = changes.model_dump(exclude_unset=True)
    if "role" in fields and not actor.is_admin:
        raise Forbidden(message_key="error.role_change_forbidden")
    user = await get_user(session, user_id)
    new_email = fields.get("email")
    if new_email is not None and new_email != user.email and await email_exists(session, new_email):
        raise email_taken()
    for name, value in fields.items():
        setattr(user, name, value)
    try:
        await session.flush()
    except IntegrityError:
        raise email_taken() from None
    forget_principal(user.id)
    return user


async def delete_user(session: AsyncSession, user_id: Any) -> None:
    user = await get_user(session, user_id)
    await session.delete(user)
    await session.flush()
    forget_principal(user.id)
