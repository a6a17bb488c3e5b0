"""The auth feature's logic: sign up and check credentials."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts import normalize_email
from app.runtime import Unauthorized
from app.security import AccessToken, Passwords, token_codec
from steps.auth.schemas import Register
from steps.users.models import User
from steps.users.service import add_user


def invalid_credentials() -> Unauthorized:
    """One answer for an unknown email and a wrong password, so neither can be told apart."""
    return Unauthorized("invalid_credentials", message_key="error.invalid_credentials")


async def register(session: AsyncSession, data: Register, passwords: Passwords) -> User:
    password_hash = await passwords.hash(data.password)
    user = User(email=data.email, name=data.name, password_hash=password_hash, role="user")
    return await add_user(session, user)


def account_of(email: str) -> str:
    """The account a login names, for counting its failures: the normalized email, or the
    text as typed (trimmed, lower-cased) when it is not an email at all."""
    try:
        return normalize_email(email)
    except ValueError:
        return email.strip().lower()


async def check_credentials(
    session: AsyncSession, email: str, password: str, passwords: Passwords
) -> tuple[User, str | None]:
    """(the user, a new hash to store when argon2's parameters changed), or 401.

    An unknown email (or an account without a password) still costs one argon2 verification,
    against a dummy hash, so the time taken does not tell whether the account exists.
    """
    try:
        email = normalize_email(email)
    except ValueError:
        email = ""
    user = await session.scalar(select(User).where(User.email == email)) if email else None
    valid, new_hash = await passwords.verify(password, user.password_hash if user else None)
    if user is None or not valid:
        raise invalid_credentials()
    return user, new_hash


async def store_new_hash(session: AsyncSession, user: User, new_hash: str) -> None:
    await session.execute(update(User).where(User.id == user.id).values(password_hash=new_hash))


def issue_token(user: User) -> AccessToken:
    return token_codec().issue(str(user.id), user.role)
