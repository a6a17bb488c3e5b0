"""The one settings object, read from the environment and `.env` (see `.env.example`)."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEV_JWT_SECRET = "dev-only-secret-change-me-0123456789abcdef"  # noqa: S105 - refused in production


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
    sqlite_synchronous: Literal["NORMAL", "FULL"] = "FULL"

    # -- the worker ----------------------------------------------------------------------------
    worker_concurrency: int = Field(32, ge=1, le=10_000)
    lease_seconds: float = Field(15.0, gt=0)
    lease_renew_seconds: float = Field(5.0, gt=0)
    poll_seconds: float = Field(5.0, gt=0)
    sqlite_poll_seconds: float = Field(1.0, gt=0)
    shutdown_grace_seconds: float = Field(10.0, ge=0)
    record_runs: bool = True

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
    jwt_secret: SecretStr = SecretStr(DEV_JWT_SECRET)
    cors_origins: Annotated[list[str], NoDecode] = [
        "http://localhost:3000",
        "http://127.0.0.1:3000",
    ]
    max_body_bytes: int = Field(1_048_576, ge=1024)

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @field_validator("metrics_token", "otel_exporter_otlp_endpoint", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _production_is_safe(self) -> Settings:
        if self.env == "production":
            secret = self.jwt_secret.get_secret_value()
            if secret == DEV_JWT_SECRET or len(secret) < 32:
                raise ValueError(
                    "JWT_SECRET must be set to a random value of at least 32 characters when "
                    "ENV=production (for example: python -c 'import secrets; "
                    "print(secrets.token_urlsafe(48))')"
                )
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
