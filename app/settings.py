"""The one settings object, read from the environment and `.env` (see `.env.example`)."""

from __future__ import annotations

import ipaddress
from importlib import metadata
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEV_JWT_SECRET = "dev-only-secret-change-me-0123456789abcdef"  # noqa: S105 - refused in production

JwtAlgorithm = Literal["HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384"]


def _version() -> str:
    try:
        return metadata.version("stepwise")
    except metadata.PackageNotFoundError:
        return "0.0.0"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # -- the application ---------------------------------------------------------------------
    env: Literal["development", "test", "production"] = "development"
    app_name: str = "Stepwise"
    app_version: str = Field(default_factory=_version)
    host: str = "127.0.0.1"
    port: int = Field(3000, ge=1, le=65535)
    steps_dir: Path = Path("steps")
    log_level: str = "INFO"
    log_format: Literal["auto", "json", "console"] = "auto"

    # -- the database --------------------------------------------------------------------------
    database_url: str = "sqlite:///var/stepwise.db"
    db_pool_size: int = Field(10, ge=1, le=200)
    sqlite_synchronous: Literal["NORMAL", "FULL"] = "NORMAL"

    # -- the worker ----------------------------------------------------------------------------
    worker_concurrency: int = Field(32, ge=1, le=10_000)
    lease_seconds: float = Field(15.0, gt=0)
    lease_renew_seconds: float = Field(5.0, gt=0)
    poll_seconds: float = Field(5.0, gt=0)
    sqlite_poll_seconds: float = Field(1.0, gt=0)
    shutdown_grace_seconds: float = Field(10.0, ge=0)
    record_runs: bool = True
    history_hours: float = Field(72.0, gt=0)

    # -- JavaScript/TypeScript steps -------------------------------------------------------------
    node_processes: int = Field(1, ge=1, le=64)
    node_cancel_grace_seconds: float = Field(2.0, gt=0)

    # -- streams -------------------------------------------------------------------------------
    stream_queue_size: int = Field(1000, ge=1, le=1_000_000)
    stream_heartbeat_seconds: float = Field(15.0, gt=0)
    stream_send_timeout_seconds: float = Field(10.0, gt=0)
    stream_max_connections_per_user: int = Field(20, ge=1, le=100_000)
    stream_max_subscriptions: int = Field(100, ge=1, le=100_000)
    stream_auth_timeout_seconds: float = Field(10.0, gt=0)
    stream_tombstone_seconds: float = Field(86_400.0, gt=0)

    # -- observability -------------------------------------------------------------------------
    # The Workbench (/workbench and /workbench/api/...), its in-memory log buffer and metrics.
    workbench_enabled: bool = True
    workbench_log_buffer: int = Field(10_000, ge=100, le=1_000_000)
    workbench_metrics_window: int = Field(300, ge=10, le=7 * 86_400)
    # Lets a scraper read /metrics with `Authorization: Bearer <token>` (admins always can).
    metrics_token: SecretStr | None = None
    # OpenTelemetry: step runs are exported as spans when an OTLP endpoint is set
    # (needs the `otlp` extra: `uv sync --extra otlp`).
    otel_exporter_otlp_endpoint: str | None = None
    otel_service_name: str = "stepwise"

    # -- security ------------------------------------------------------------------------------
    jwt_algorithm: JwtAlgorithm = "HS256"
    jwt_secret: SecretStr = SecretStr(DEV_JWT_SECRET)
    # RS*/ES*: the PEM private key (signs; its public half verifies unless one is given).
    jwt_private_key: SecretStr | None = None
    jwt_private_key_file: Path | None = None
    jwt_public_key: str | None = None
    jwt_public_key_file: Path | None = None
    jwt_expire_minutes: int = Field(60, ge=1, le=60 * 24 * 30)
    jwt_issuer: str = "stepwise"
    jwt_audience: str | None = None
    jwt_leeway_seconds: int = Field(10, ge=0, le=300)
    # argon2id cost (pwdlib); stored hashes with other parameters are upgraded at login.
    password_hash_time_cost: int = Field(3, ge=1, le=20)
    password_hash_memory_kib: int = Field(65_536, ge=8_192, le=1_048_576)
    password_hash_parallelism: int = Field(4, ge=1, le=16)
    # The first admin, created at start-up when no account has this email.
    admin_email: str | None = None
    admin_password: SecretStr | None = None
    # Seconds an API process trusts what it read about a token's user (0: read every time).
    auth_cache_seconds: float = Field(5.0, ge=0, le=300)

    cors_origins: Annotated[list[str], NoDecode] = [
        "http://localhost:3000",
        "http://127.0.0.1:3000",
    ]
    cors_methods: Annotated[list[str], NoDecode] = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    cors_headers: Annotated[list[str], NoDecode] = [
        "Authorization",
        "Content-Type",
        "Accept-Language",
        "X-Trace-Id",
    ]
    cors_allow_credentials: bool = False
    cors_max_age: int = Field(600, ge=0, le=86_400)
    max_body_bytes: int = Field(1_048_576, ge=1024)

    # -- rate limiting -------------------------------------------------------------------------
    rate_limit_enabled: bool = True
    # Addresses or networks of reverse proxies whose X-Forwarded-For is believed.
    trusted_proxies: Annotated[list[str], NoDecode] = []
    # Failed logins allowed per account (email) in a window, from any number of addresses;
    # then 429 until the window ends. A successful login clears the account's count.
    login_max_failures: int = Field(10, ge=1, le=10_000)
    login_failure_window_seconds: int = Field(900, ge=1, le=86_400)

    # -- the sample features (steps/messages, steps/orders, steps/content) ----------------------
    # CleanupOldMessages deletes messages older than this, daily.
    message_retention_days: int = Field(7, ge=1, le=3650)
    # How many recent messages ProcessMessage keeps per room in state (`messages_history`).
    message_history_size: int = Field(50, ge=1, le=10_000)
    # The simulated payment gateway: the share of attempts that fail at random (0.0-1.0).
    # The card 4000 0000 0000 0002 is always declined.
    payment_failure_rate: float = Field(0.0, ge=0.0, le=1.0)
    # SendConfirmationEmail writes every email to the `email_outbox` table; with SMTP_HOST set,
    # it also sends it (STARTTLS when SMTP_STARTTLS is true).
    smtp_host: str | None = None
    smtp_port: int = Field(587, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = True
    email_from: str = "orders@stepwise.local"
    # AIContentModerator flags text whose VADER compound score is at or below this.
    moderation_negative_threshold: float = Field(-0.6, ge=-1.0, le=0.0)

    @field_validator(
        "cors_origins", "cors_methods", "cors_headers", "trusted_proxies", mode="before"
    )
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @field_validator("cors_methods")
    @classmethod
    def _methods(cls, value: list[str]) -> list[str]:
        return [v.upper() for v in value]

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or network") from None
        return value

    @field_validator("metrics_token", "otel_exporter_otlp_endpoint", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _production_is_safe(self) -> Settings:
        if self.jwt_algorithm.startswith("HS"):
            secret = self.jwt_secret.get_secret_value()
            if self.env == "production" and (secret == DEV_JWT_SECRET or len(secret) < 32):
                raise ValueError(
                    "JWT_SECRET must be set to a random value of at least 32 characters when "
                    "ENV=production (for example: python -c 'import secrets; "
                    "print(secrets.token_urlsafe(48))')"
                )
        elif self.jwt_private_key is None and self.jwt_private_key_file is None:
            raise ValueError(
                f"JWT_ALGORITHM={self.jwt_algorithm} needs JWT_PRIVATE_KEY or JWT_PRIVATE_KEY_FILE "
                "(a PEM private key)"
            )
        if self.cors_allow_credentials and "*" in self.cors_origins:
            raise ValueError(
                "CORS_ALLOW_CREDENTIALS=true needs explicit CORS_ORIGINS: with '*' any site could "
                "make credentialed requests"
            )
        if (self.admin_email is None) != (self.admin_password is None):
            raise ValueError("ADMIN_EMAIL and ADMIN_PASSWORD are set together, or neither")
        if self.admin_password is not None and len(self.admin_password.get_secret_value()) < 8:
            raise ValueError("ADMIN_PASSWORD must be at least 8 characters long")
        if self.metrics_token is not None and len(self.metrics_token.get_secret_value()) < 16:
            raise ValueError("METRICS_TOKEN must be at least 16 characters")
        if self.lease_renew_seconds >= self.lease_seconds:
            raise ValueError("LEASE_RENEW_SECONDS must be shorter than LEASE_SECONDS")
        return self

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @property
    def resolved_log_format(self) -> str:
        if self.log_format != "auto":
            return self.log_format
        return "json" if self.is_production else "console"


_current: Settings | None = None


def get_settings() -> Settings:
    """The settings of the running app (read from the environment on first use)."""
    global _current
    if _current is None:
        _current = Settings()
    return _current


def use_settings(settings: Settings) -> None:
    """Make `settings` the ones `get_settings()` returns (create_app calls this)."""
    global _current
    _current = settings
