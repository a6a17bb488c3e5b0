"""Passwords (argon2id through pwdlib) and access tokens (PyJWT with the algorithm pinned)."""

from __future__ import annotations

import asyncio
import functools
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import jwt
from cryptography.hazmat.primitives import serialization
from pwdlib import PasswordHash
from pwdlib.exceptions import UnknownHashError
from pwdlib.hashers.argon2 import Argon2Hasher

from app.settings import Settings, get_settings

Role = Literal["user", "admin"]
ROLES: tuple[Role, ...] = ("user", "admin")

# A bearer token longer than this is refused before any parsing.
MAX_TOKEN_CHARS = 8192


@dataclass(frozen=True, slots=True)
class Principal:
    """The signed-in user, as the auth middleware puts it on the scope (`req.user`)."""

    id: str
    email: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


# -- passwords -----------------------------------------------------------------------------------


class Passwords:
    """argon2id hashing. Hashing and verifying run in a worker thread: each takes ~0.1 s of CPU
    and 64 MiB by default, and must not stall the event loop."""

    def __init__(self, *, time_cost: int, memory_cost: int, parallelism: int) -> None:
        hasher = Argon2Hasher(time_cost=time_cost, memory_cost=memory_cost, parallelism=parallelism)
        self._hash = PasswordHash((hasher,))
        self._dummy: str | None = None

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hash.hash, password)

    async def verify(self, password: str, stored: str | None) -> tuple[bool, str | None]:
        """(valid, new hash to store or None). With no stored hash (unknown account), a dummy
        hash is verified instead, so that the answer takes as long as for a real account."""
        if stored is None:
            await asyncio.to_thread(self._hash.verify, password, await self._dummy_hash())
            return False, None
        try:
            return await asyncio.to_thread(self._hash.verify_and_update, password, stored)
        except UnknownHashError:
            await asyncio.to_thread(self._hash.verify, password, await self._dummy_hash())
            return False, None

    async def _dummy_hash(self) -> str:
        if self._dummy is None:
            self._dummy = await self.hash(secrets.token_urlsafe(16))
        return self._dummy


@functools.lru_cache(maxsize=8)
def _passwords(time_cost: int, memory_cost: int, parallelism: int) -> Passwords:
    return Passwords(time_cost=time_cost, memory_cost=memory_cost, parallelism=parallelism)


def passwords(settings: Settings | None = None) -> Passwords:
    """The password hasher configured by the settings (the running app's by default)."""
    s = settings or get_settings()
    return _passwords(
        s.password_hash_time_cost, s.password_hash_memory_kib, s.password_hash_parallelism
    )


# -- tokens --------------------------------------------------------------------------------------


class TokenError(Exception):
    """A bearer token was refused. `reason` is "expired" or "invalid" (safe to show)."""

    def __init__(self, reason: Literal["expired", "invalid"]) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class AccessToken:
    token: str
    expires_in: int


class JwtCodec:
    """Issues and checks access tokens: `sub` (user id), `role`, `iat`, `exp`, `iss` (and `aud`
    when configured). Only the one configured algorithm is accepted, so `alg=none` or a token
    signed with another algorithm or key is refused."""

    def __init__(
        self,
        *,
        algorithm: str,
        signing_key: Any,
        verifying_key: Any,
        ttl_seconds: int,
        issuer: str,
        audience: str | None = None,
        leeway_seconds: int = 0,
    ) -> None:
        self.algorithm = algorithm
        self._signing_key = signing_key
        self._verifying_key = verifying_key
        self.ttl_seconds = ttl_seconds
        self.issuer = issuer
        self.audience = audience
        self.leeway_seconds = leeway_seconds

    @classmethod
    def from_settings(cls, settings: Settings) -> JwtCodec:
        signing: Any
        verifying: Any
        if settings.jwt_algorithm.startswith("HS"):
            signing = verifying = settings.jwt_secret.get_secret_value()
        else:
            private_pem = _pem(settings.jwt_private_key, settings.jwt_private_key_file)
            if private_pem is None:
                raise ValueError(f"JWT_ALGORITHM={settings.jwt_algorithm} needs JWT_PRIVATE_KEY")
            signing = serialization.load_pem_private_key(private_pem, password=None)
            public_pem = _pem(settings.jwt_public_key, settings.jwt_public_key_file)
            verifying = (
                serialization.load_pem_public_key(public_pem)
                if public_pem
                else signing.public_key()  # type: ignore[union-attr]
            )
        return cls(
            algorithm=settings.jwt_algorithm,
            signing_key=signing,
            verifying_key=verifying,
            ttl_seconds=settings.jwt_expire_minutes * 60,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            leeway_seconds=settings.jwt_leeway_seconds,
        )

    def issue(self, subject: str, role: str, *, now: float | None = None) -> AccessToken:
        issued_at = int(now if now is not None else time.time())
        claims: dict[str, Any] = {
            "sub": subject,
            "role": role,
            "iat": issued_at,
            "exp": issued_at + self.ttl_seconds,
            "iss": self.issuer,
        }
        if self.audience:
            claims["aud"] = self.audience
        token = jwt.encode(claims, self._signing_key, algorithm=self.algorithm)
        return AccessToken(token=token, expires_in=self.ttl_seconds)

    def decode(self, token: str) -> dict[str, Any]:
        """The verified claims, or TokenError."""
        if not token or len(token) > MAX_TOKEN_CHARS:
            raise TokenError("invalid")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._verifying_key,
                algorithms=[self.algorithm],
                issuer=self.issuer,
                audience=self.audience,
                leeway=self.leeway_seconds,
                options={"require": ["exp", "iat", "sub", "iss"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenError("expired") from None
        except (jwt.InvalidTokenError, ValueError, TypeError):
            raise TokenError("invalid") from None
        if not isinstance(claims.get("sub"), str) or claims.get("role") not in ROLES:
            raise TokenError("invalid")
        return claims


def _pem(value: Any, file: Path | None) -> bytes | None:
    if value is not None:
        text = value.get_secret_value() if hasattr(value, "get_secret_value") else str(value)
        return text.encode()
    if file is not None:
        return file.read_bytes()
    return None


def token_codec(settings: Settings | None = None) -> JwtCodec:
    """The token codec configured by the settings (the running app's by default)."""
    s = settings or get_settings()
    key = (
        s.jwt_algorithm,
        s.jwt_secret.get_secret_value(),
        s.jwt_private_key.get_secret_value() if s.jwt_private_key else None,
        s.jwt_private_key_file,
        s.jwt_public_key,
        s.jwt_public_key_file,
        s.jwt_expire_minutes,
        s.jwt_issuer,
        s.jwt_audience,
        s.jwt_leeway_seconds,
    )
    return _codec_for(key, s)


# Settings objects are not hashable: codecs are cached by the values they are built from.
_codecs: dict[tuple[Any, ...], JwtCodec] = {}


def _codec_for(key: tuple[Any, ...], settings: Settings) -> JwtCodec:
    codec = _codecs.get(key)
    if codec is None:
        if len(_codecs) > 16:
            _codecs.clear()
        codec = _codecs[key] = JwtCodec.from_settings(settings)
    return codec
